"""Job history as indexed SQLite queries: one row per requester job, filtered, sorted
and paged by key, so listing costs the page, not the history.

The index (table ``jobs``, with ``job_labels`` and ``job_nodes``) is written in the
same transaction as the job's record (:mod:`bacalhau.node.store`), so the two never
disagree. Finished jobs live only here and in their record: the node keeps live jobs
in memory and reads finished ones on demand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import attrs

from ..errors import ValidationError
from ..models import JobState
from ..protocol.requester import RequesterJob

__all__ = [
    "SORTS",
    "JobPage",
    "JobQuery",
    "JobRow",
    "index_job",
    "query_jobs",
    "unindex_job",
]

ORDERS = ("newest", "oldest")
SORTS = ("created", "updated", "id", "name")
"""What a page can be sorted by (then by job id): creation time, last change, job id,
name (the job's name, or its id when it has none, as Bacalhau shows it)."""


@attrs.frozen(kw_only=True)
class JobRow:
    """One job's line in the history."""

    job_id: str
    state: JobState
    created_at: float
    updated_at: float
    engine: str
    labels: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    """Nodes whose bids were accepted."""
    executions: int = 0
    reason: str = ""
    cid: str | None = None
    name: str = ""

    @classmethod
    def of(cls, job: RequesterJob) -> JobRow:
        accepted = [e for e in job.executions.values() if e.accepted]
        cid = next((e.published.cid for e in accepted if e.published and e.published.cid), None)
        return cls(
            job_id=job.job_id,
            state=job.state,
            created_at=job.created_at,
            updated_at=job.history[-1].time if job.history else job.created_at,
            engine=job.spec.engine.type,
            labels=tuple(job.spec.labels),
            nodes=tuple(e.node_id for e in accepted),
            executions=len(accepted),
            reason=job.shown_reason,
            cid=cid,
            name=job.spec.name or job.job_id,
        )

    def sort_key(self, sort: str) -> tuple[float | str, str]:
        value: float | str
        if sort == "created":
            value = self.created_at
        elif sort == "updated":
            value = self.updated_at
        else:
            value = self.job_id if sort == "id" else self.name
        return value, self.job_id


@attrs.frozen(kw_only=True)
class JobQuery:
    """Which jobs, in what order, which page.

    Args:
        states: only jobs in one of these states (empty: any).
        label / engine / node: only jobs with this label, engine type, or accepted node.
        since / until: only jobs created at or after / before these unix times.
        sort: what to sort by, one of :data:`SORTS` (default ``created``); ties by job id.
        order: ``newest`` first (default) or ``oldest`` first, i.e. descending or
            ascending by ``sort``.
        limit: jobs per page.
        after: the ``next`` cursor of the previous page (keyset pagination).
        offset: jobs to skip instead (costs the skipped rows; prefer ``after``).
    """

    states: frozenset[JobState] = frozenset()
    label: str | None = None
    engine: str | None = None
    node: str | None = None
    since: float | None = None
    until: float | None = None
    sort: str = attrs.field(default="created")
    order: str = attrs.field(default="newest")
    limit: int = 20
    after: str | None = None
    offset: int = 0

    @order.validator
    def _check_order(self, attribute: object, value: str) -> None:
        if value not in ORDERS:
            raise ValidationError(f"must be one of {', '.join(ORDERS)}", field="order")

    @sort.validator
    def _check_sort(self, attribute: object, value: str) -> None:
        if value not in SORTS:
            raise ValidationError(f"must be one of {', '.join(SORTS)}", field="sort")

    def cursor_key(self) -> tuple[float | str, str] | None:
        """The ``after`` cursor as a sort key (None: no cursor)."""
        if self.after is None:
            return None
        return parse_cursor(self.after, numeric=self.sort in ("created", "updated"))

    def matches(self, row: JobRow) -> bool:
        """The filters (not the page) applied to one row, for in-memory histories."""
        return (
            (not self.states or row.state in self.states)
            and (self.label is None or self.label in row.labels)
            and (self.engine is None or row.engine == self.engine)
            and (self.node is None or self.node in row.nodes)
            and (self.since is None or row.created_at >= self.since)
            and (self.until is None or row.created_at < self.until)
        )


@attrs.frozen(kw_only=True)
class JobPage:
    """One page of jobs, the number of jobs matching, and the cursor of the next page."""

    rows: tuple[JobRow, ...]
    total: int
    next: str | None = None


def cursor_of(row: JobRow, sort: str = "created") -> str:
    """The cursor of the page after ``row``: its sort value, ``~``, its job id."""
    value, job_id = row.sort_key(sort)
    return f"{value!r}~{job_id}" if isinstance(value, float) else f"{value}~{job_id}"


def parse_cursor(cursor: str, *, numeric: bool = True) -> tuple[float | str, str]:
    at, sep, job_id = cursor.rpartition("~")  # job ids hold no "~"; names may
    try:
        if not sep or not job_id:
            raise ValueError(cursor)
        return (float(at) if numeric else at), job_id
    except ValueError:
        raise ValidationError(f"not a page cursor: {cursor[:80]!r}", field="after") from None


def page_in_memory(rows: Iterable[JobRow], query: JobQuery) -> JobPage:
    """The same query over rows held in memory (a node without a store)."""
    newest = query.order == "newest"
    matching = sorted(
        (r for r in rows if query.matches(r)),
        key=lambda r: r.sort_key(query.sort),
        reverse=newest,
    )
    start = query.offset
    key = query.cursor_key()
    if key is not None:
        start = next(
            (
                i
                for i, r in enumerate(matching)
                if (r.sort_key(query.sort) < key if newest else r.sort_key(query.sort) > key)
            ),
            len(matching),
        )
    page = tuple(matching[start : start + query.limit])
    more = start + query.limit < len(matching)
    last = cursor_of(page[-1], query.sort) if more else None
    return JobPage(rows=page, total=len(matching), next=last)


# --- SQL ----------------------------------------------------------------------------------

SCHEMA_2 = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, state TEXT NOT NULL, live INTEGER NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, engine TEXT NOT NULL,
        labels TEXT NOT NULL, nodes TEXT NOT NULL, executions INTEGER NOT NULL,
        reason TEXT NOT NULL, cid TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, job_id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at, job_id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_engine ON jobs (engine, created_at, job_id)",
    "CREATE INDEX IF NOT EXISTS jobs_live ON jobs (live) WHERE live = 1",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (updated_at) WHERE live = 0",
    """CREATE TABLE IF NOT EXISTS job_labels (
        label TEXT NOT NULL, created_at REAL NOT NULL, job_id TEXT NOT NULL,
        PRIMARY KEY (label, created_at, job_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS job_nodes (
        node_id TEXT NOT NULL, created_at REAL NOT NULL, job_id TEXT NOT NULL,
        PRIMARY KEY (node_id, created_at, job_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS expired_jobs (
        job_id TEXT PRIMARY KEY, expired_at REAL NOT NULL)""",
)

SCHEMA_3 = (
    "ALTER TABLE jobs ADD COLUMN name TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS jobs_by_updated ON jobs (updated_at, job_id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs (name, job_id)",
)
"""Sorting history by last change and by name, as Bacalhau's v1 listing does."""

_SORT_COLUMNS = {"created": "created_at", "updated": "updated_at", "id": "job_id", "name": "name"}

_SEP = "\n"


_COLUMNS = (
    "job_id, state, created_at, updated_at, engine, labels, nodes, executions, reason, cid, name"
)


def index_job(db: sqlite3.Connection, row: JobRow) -> None:
    """Write (or replace) one job's index rows."""
    db.execute(
        f"INSERT OR REPLACE INTO jobs ({_COLUMNS}, live) VALUES ({', '.join('?' * 12)})",
        (
            row.job_id,
            row.state.value,
            row.created_at,
            row.updated_at,
            row.engine,
            _SEP.join(row.labels),
            _SEP.join(row.nodes),
            row.executions,
            row.reason,
            row.cid,
            row.name,
            0 if row.state.terminal else 1,
        ),
    )
    db.execute("DELETE FROM job_labels WHERE job_id = ?", (row.job_id,))
    db.execute("DELETE FROM job_nodes WHERE job_id = ?", (row.job_id,))
    db.executemany(
        "INSERT OR IGNORE INTO job_labels VALUES (?, ?, ?)",
        [(label, row.created_at, row.job_id) for label in row.labels],
    )
    db.executemany(
        "INSERT OR IGNORE INTO job_nodes VALUES (?, ?, ?)",
        [(node, row.created_at, row.job_id) for node in row.nodes],
    )


def unindex_job(db: sqlite3.Connection, job_id: str) -> None:
    for table in ("jobs", "job_labels", "job_nodes", "requester_jobs"):
        db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))


def _row(values: tuple[object, ...]) -> JobRow:
    job_id, state, created, updated, engine, labels, nodes, executions, reason, cid, name = values
    return JobRow(
        job_id=str(job_id),
        state=JobState(str(state)),
        created_at=float(created),  # type: ignore[arg-type]
        updated_at=float(updated),  # type: ignore[arg-type]
        engine=str(engine),
        labels=tuple(str(labels).split(_SEP)) if labels else (),
        nodes=tuple(str(nodes).split(_SEP)) if nodes else (),
        executions=int(executions),  # type: ignore[call-overload]
        reason=str(reason),
        cid=None if cid is None else str(cid),
        name=str(name),
    )


def query_jobs(db: sqlite3.Connection, query: JobQuery) -> JobPage:
    """Run ``query`` (blocking: call it on a worker thread)."""
    where: list[str] = []
    args: list[object] = []
    if query.states:
        where.append(f"state IN ({', '.join('?' for _ in query.states)})")
        args += sorted(s.value for s in query.states)
    if query.engine is not None:
        where.append("engine = ?")
        args.append(query.engine)
    if query.label is not None:
        where.append("job_id IN (SELECT job_id FROM job_labels WHERE label = ?)")
        args.append(query.label)
    if query.node is not None:
        where.append("job_id IN (SELECT job_id FROM job_nodes WHERE node_id = ?)")
        args.append(query.node)
    if query.since is not None:
        where.append("created_at >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("created_at < ?")
        args.append(query.until)
    filters = " AND ".join(where) or "1"
    (total,) = db.execute(f"SELECT count(*) FROM jobs WHERE {filters}", args).fetchone()
    newest = query.order == "newest"
    column = _SORT_COLUMNS[query.sort]
    page_where, page_args = filters, list(args)
    key = query.cursor_key()
    if key is not None:
        page_where += f" AND ({column}, job_id) {'<' if newest else '>'} (?, ?)"
        page_args += list(key)
    direction = "DESC" if newest else "ASC"
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE {page_where} "
        f"ORDER BY {column} {direction}, job_id {direction} LIMIT ? OFFSET ?",
        [*page_args, query.limit + 1, query.offset if key is None else 0],
    ).fetchall()
    page = tuple(_row(r) for r in rows[: query.limit])
    more = len(rows) > query.limit
    last = cursor_of(page[-1], query.sort) if more else None
    return JobPage(rows=page, total=int(total), next=last)
