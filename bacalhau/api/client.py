"""The Python client of a node's HTTP API: :class:`Client` (async) and :class:`SyncClient`.

::

    async with bacalhau.Client("127.0.0.1:1234") as client:
        job_id = await client.submit(bacalhau.JobSpec.noop(stdout="hi"))
        result = await client.wait(job_id, timeout=60)
        print(result.state, result.cid)

    with bacalhau.api.client.SyncClient() as client:      # for scripts
        print(client.node_info().node_id)

The address comes from the argument, else ``BACALHAU_API``, else
``127.0.0.1:1234``; the token from the argument, else ``BACALHAU_API_TOKEN``.
Errors are :mod:`bacalhau.errors` exceptions: :class:`~bacalhau.errors.NodeUnreachable`
when no node answers, :class:`~bacalhau.errors.JobNotFound`,
:class:`~bacalhau.errors.ValidationError` (with ``field``),
:class:`~bacalhau.errors.BlockNotFound`, and :class:`~bacalhau.errors.ApiError`
(``status``, ``code``) for the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx

from ..convert import from_json_data, to_json_data
from ..errors import (
    ApiError,
    BacalhauError,
    BlockNotFound,
    DecodeError,
    JobNotFound,
    NodeNotFound,
    NodeUnreachable,
    ValidationError,
)
from ..live.events import NodeEvent
from ..live.frames import MAX_FRAME_BYTES, LogFrame
from ..live.node import LogRecord
from ..models import JobResult, JobSpec, JobState, NodeInfo
from .schemas import (
    API_PREFIX,
    CancelRequest,
    CarImported,
    DataAdded,
    DataEntry,
    ErrorBody,
    EventLine,
    GcResult,
    Health,
    JobList,
    LogChunk,
    NodeList,
    PinList,
    ResultsList,
    SubmitRequest,
    SubmitResponse,
)

if TYPE_CHECKING:
    from ..node.receipt import Receipt

__all__ = ["DEFAULT_API", "Client", "SyncClient", "api_url"]

DEFAULT_API = "127.0.0.1:1234"
STREAM_READ_TIMEOUT = 60.0
"""Seconds a stream may stay silent (the server sends a keep-alive every 15 s)."""
UPLOAD_CHUNK = 1024 * 1024

T = TypeVar("T")


def api_url(address: str | None = None) -> str:
    """``HOST:PORT``, ``:PORT``, ``HOST`` or an ``http(s)://`` URL -> a base URL.

    ``None`` means ``BACALHAU_API``, else ``127.0.0.1:1234``.

    Raises:
        ValidationError: not an address.
    """
    text = (address or os.environ.get("BACALHAU_API") or DEFAULT_API).strip()
    if "://" in text:
        url = httpx.URL(text)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValidationError(f"not an API address: {text!r} (try 127.0.0.1:1234)", field="api")
        return text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or (host.startswith("[") != host.endswith("]")):
        host, port = text, "1234"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"not an API address: {text!r} (try 127.0.0.1:1234)", field="api")
    host = host or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(port)}"


def _raise_for(response: httpx.Response, body: bytes) -> None:
    """Raise the error an error response stands for."""
    try:
        detail = from_json_data(json.loads(body), ErrorBody).error
        message, code, field = detail.message, detail.code, detail.field
    except (ValueError, BacalhauError):
        text = body[:300].decode("utf-8", "replace").strip()
        message, code, field = f"HTTP {response.status_code}: {text}", "http_error", None
    if code == "job_not_found":
        raise JobNotFound(message)
    if code == "block_not_found":
        raise BlockNotFound(message)
    if code == "node_not_found":
        raise NodeNotFound(message)
    if code == "validation_error":
        error = ValidationError(message)
        error.field = field
        raise error
    raise ApiError(message, status=response.status_code, code=code)


class Client:
    """Async client of one node's API. Use ``async with Client(...) as client:``.

    Args:
        api: the node's address (``HOST:PORT`` or URL); default ``BACALHAU_API``
            or ``127.0.0.1:1234``.
        token: bearer token; default ``BACALHAU_API_TOKEN``.
        timeout: seconds for one request (streams may idle for longer).
        transport: an httpx transport (e.g. ``httpx.ASGITransport`` in tests).
        trust_env: honour ``HTTP(S)_PROXY``, ``SSL_CERT_FILE`` and ``~/.netrc`` (off by
            default: a node's API is usually on this machine, and reading ``~/.netrc``
            on every request triples the cost of a small one).
    """

    def __init__(
        self,
        api: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = False,
    ) -> None:
        self.url = api_url(api)
        token = token if token is not None else os.environ.get("BACALHAU_API_TOKEN")
        headers = {"user-agent": "bacalhau-py"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.url + API_PREFIX,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            trust_env=trust_env,
        )

    def __repr__(self) -> str:
        return f"Client({self.url})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing -------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> NodeUnreachable:
        if isinstance(exc, httpx.TimeoutException):
            why = f"did not answer in time ({type(exc).__name__})"
        else:
            why = f"could not be reached ({exc or type(exc).__name__})"
        return NodeUnreachable(
            f"the node at {self.url} {why}; start one with 'bacalhau serve' or "
            "'bacalhau devstack', or pick another with --api HOST:PORT or BACALHAU_API"
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            _raise_for(response, response.content)
        return response

    async def _get(self, path: str, cls: type[T], **kwargs: Any) -> T:
        response = await self._request("GET", path, **kwargs)
        return from_json_data(response.json(), cls, what="response")

    async def _post(self, path: str, cls: type[T], body: Any = None, **kwargs: Any) -> T:
        if body is not None:
            kwargs["content"] = json.dumps(to_json_data(body)).encode()
            kwargs.setdefault("headers", {})["content-type"] = "application/json"
        response = await self._request("POST", path, **kwargs)
        return from_json_data(response.json(), cls, what="response")

    @contextlib.asynccontextmanager
    async def _stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))
        try:
            async with self._http.stream(method, path, timeout=timeout, **kwargs) as response:
                if response.status_code >= 400:
                    _raise_for(response, await response.aread())
                yield response
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def _lines(self, path: str, cls: type[T], params: dict[str, Any]) -> AsyncIterator[T]:
        async with self._stream("GET", path, params=params) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    yield from_json_data(json.loads(line), cls, what="stream line")

    # --- node -----------------------------------------------------------------------------

    async def health(self) -> Health:
        """The node is up (raises NodeUnreachable if not)."""
        return await self._get("/health", Health)

    async def node_info(self) -> NodeInfo:
        """The node's id, peers, capacity, executors, verifiers, publishers and storage."""
        return await self._get("/node", NodeInfo)

    # --- jobs -----------------------------------------------------------------------------

    async def list_nodes(self) -> NodeList:
        """The nodes the API's node knows from their signed announcements."""
        return await self._get("/nodes", NodeList)

    async def describe_node(self, node_id: str) -> NodeInfo:
        """One known node's announcement, by id or unique prefix."""
        return await self._get(f"/nodes/{_quote(node_id)}", NodeInfo)

    async def submit(self, spec: JobSpec) -> str:
        """Submit ``spec`` (the node becomes its requester); return the job id at once."""
        return (await self._post("/jobs", SubmitResponse, SubmitRequest(spec))).job_id

    async def list_jobs(
        self,
        *,
        state: str | JobState | Iterable[str | JobState] | None = None,
        label: str | None = None,
        engine: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str = "created",
        order: str = "newest",
        after: str | None = None,
    ) -> JobList:
        """A page of the node's jobs, filtered by state, label and engine, sorted by
        ``sort`` (``created``, ``updated``, ``id``, ``name``) ``newest`` (descending) or
        ``oldest`` first. Pass the page's ``next`` as ``after`` for the following page."""
        params: dict[str, Any] = {"limit": limit, "offset": offset, "sort": sort, "order": order}
        if after is not None:
            params["after"] = after
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            params["state"] = ",".join(str(JobState(s).value) for s in states)
        if label is not None:
            params["label"] = label
        if engine is not None:
            params["engine"] = engine
        return await self._get("/jobs", JobList, params=params)

    async def describe(self, job_id: str) -> JobResult:
        """The job (by id or unique prefix): spec, state, executions, events."""
        return await self._get(f"/jobs/{_quote(job_id)}", JobResult)

    async def results(self, job_id: str) -> ResultsList:
        """Where the job's accepted results were published."""
        return await self._get(f"/jobs/{_quote(job_id)}/results", ResultsList)

    async def receipt(self, job_id: str) -> Receipt:
        """The completed job's receipt, signed by the node (``bacalhau verify`` checks it)."""
        from ..node.receipt import Receipt

        return await self._get(f"/jobs/{_quote(job_id)}/receipt", Receipt)

    async def cancel(self, job_id: str, reason: str = "cancelled by the user") -> JobState:
        """Cancel a live job; return its state after. ApiError ``job_finished`` if it ended."""
        path = f"/jobs/{_quote(job_id)}/cancel"
        return (await self._post(path, SubmitResponse, CancelRequest(reason))).state

    async def events(self, job_id: str, *, follow: bool = True) -> AsyncIterator[EventLine]:
        """The job's events from the start; with ``follow``, new ones until the job ends."""
        params = {"follow": "true" if follow else "false"}
        async for line in self._lines(f"/jobs/{_quote(job_id)}/events", EventLine, params):
            yield line

    async def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        node: str | None = None,
        stream: str | None = None,
    ) -> AsyncIterator[LogChunk]:
        """Each finished execution's stdout and stderr; with ``follow``, until the job ends."""
        params: dict[str, Any] = {"follow": "true" if follow else "false"}
        if node:
            params["node"] = node
        if stream:
            params["stream"] = stream
        async for chunk in self._lines(f"/jobs/{_quote(job_id)}/logs", LogChunk, params):
            yield chunk

    async def log_stream(
        self,
        job_id: str,
        *,
        follow: bool = True,
        tail: int | None = None,
        execution: str | None = None,
    ) -> AsyncIterator[LogRecord]:
        """The live output of the job's executions, line by line as it is written: what
        each execution's node still keeps (the last ``tail`` lines when given), then with
        ``follow`` new lines until the job ends. ``execution`` keeps only executions on
        nodes whose id starts with it. Notes come as records with ``skipped`` (lines
        this reader missed) or ``end`` (an execution's output is complete).

        A record a line: :meth:`log_frames` gives the same output a read at a time."""
        async for frame in self.log_frames(job_id, follow=follow, tail=tail, execution=execution):
            for record in frame.records():
                yield record

    async def log_frames(
        self,
        job_id: str,
        *,
        follow: bool = True,
        tail: int | None = None,
        execution: str | None = None,
    ) -> AsyncIterator[LogFrame]:
        """Like :meth:`log_stream`, one :class:`~bacalhau.live.frames.LogFrame` per read
        of one execution's output (``format=batch``: the lines in columns, checked
        without a Python step a line; :meth:`LogFrame.pieces
        <bacalhau.live.frames.LogFrame.pieces>` gives what to print).

        Raises:
            DecodeError: a frame is malformed or longer than ``MAX_FRAME_BYTES``.
        """
        params: dict[str, Any] = {"follow": "true" if follow else "false", "format": "batch"}
        if tail is not None:
            params["tail"] = tail
        if execution:
            params["execution"] = execution
        path = f"/jobs/{_quote(job_id)}/logs/stream"
        async with self._stream("GET", path, params=params) as response:
            async for raw in _split_lines(response.aiter_bytes(), MAX_FRAME_BYTES):
                if raw.strip():
                    yield LogFrame.parse(raw)

    async def node_events(
        self,
        *,
        follow: bool = True,
        tail: int | None = None,
        after: int | None = None,
        on_skipped: Callable[[int], None] | None = None,
    ) -> AsyncIterator[NodeEvent]:
        """The node's event stream (every job's events, nodes joining and leaving): the
        events it keeps (the last ``tail``, or those after sequence number ``after``),
        then with ``follow`` new ones as they happen. ``on_skipped(n)`` hears of ``n``
        events this reader asked for that the node no longer keeps (it keeps the last
        10,000)."""
        params: dict[str, Any] = {"follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = tail
        if after is not None:
            params["after"] = after
        async with self._stream("GET", "/events", params=params) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    data = json.loads(line)
                    if "seq" in data:
                        yield from_json_data(data, NodeEvent, what="event")
                    elif on_skipped is not None and isinstance(data.get("skipped"), int):
                        on_skipped(data["skipped"])

    async def network(self) -> list[NodeInfo]:
        """This node's info and that of each peer that answered."""
        data = (await self._request("GET", "/network")).json()
        if not isinstance(data, list):
            raise DecodeError("the network view must be a list")
        return [from_json_data(d, NodeInfo, what="network") for d in data]

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[EventLine], Awaitable[None] | None] | None = None,
    ) -> JobResult:
        """Follow the job's events until it ends; return the final :class:`JobResult`.

        ``on_event`` sees each event once, in order (history first).

        Raises:
            TimeoutError: not ended within ``timeout`` seconds (the job goes on).
        """
        seen = 0
        try:
            with anyio.fail_after(timeout):
                while True:
                    index = 0
                    async for line in self.events(job_id, follow=True):
                        index += 1
                        if index > seen:
                            seen = index
                            if on_event is not None:
                                maybe = on_event(line)
                                if maybe is not None:
                                    await maybe
                    result = await self.describe(job_id)
                    if result.state.terminal:
                        return result
                    await anyio.sleep(0.5)  # the stream ended early (node stopping?): retry
        except TimeoutError:
            raise TimeoutError(f"job {job_id} did not end within {timeout:g}s") from None

    async def run(self, spec: JobSpec, *, timeout: float | None = None) -> JobResult:
        """Submit and wait: the one-line way to run a job through a node."""
        return await self.wait(await self.submit(spec), timeout=timeout)

    # --- data -----------------------------------------------------------------------------

    async def add_bytes(
        self,
        data: bytes | AsyncIterable[bytes],
        *,
        name: str | None = None,
        cid_version: int = 0,
    ) -> DataAdded:
        """Store bytes as one file on the node (pinned). The CID is what ``ipfs add`` gives."""
        params: dict[str, Any] = {"cid_version": cid_version}
        if name is not None:
            params["name"] = name
        response = await self._request(
            "POST",
            "/data",
            params=params,
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        return from_json_data(response.json(), DataAdded, what="response")

    async def add_file(
        self,
        path: str | os.PathLike[str],
        *,
        cid_version: int = 0,
        progress: Progress | None = None,
    ) -> DataAdded:
        """Stream a local file to the node (pinned); its CID is what ``ipfs add FILE`` prints.
        ``progress(sent, total)`` is called as the bytes go."""
        return await self.add_bytes(_read_file(Path(path), progress), cid_version=cid_version)

    async def add_path(
        self,
        path: str | os.PathLike[str],
        *,
        cid_version: int = 0,
        raw_leaves: bool | None = None,
        hidden: bool = False,
        wrap_with_directory: bool = False,
        chunk_size: int = 262144,
        on_entry: Callable[[str, str], None] | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Add a file or a whole directory tree; return the root CID (``ipfs add -r``'s).

        The DAG is built here and sent as one CAR archive the node verifies block by
        block. Options are :func:`bacalhau.storage.ipfs.add_path`'s; ``on_entry`` sees
        (path, CID) of each entry once the node has stored them all.
        """
        from ..storage.ipfs.blockstore import BlockStore
        from ..storage.ipfs.car import export_car
        from ..storage.ipfs.importer import add_path

        with tempfile.TemporaryDirectory(prefix="bacalhau-add-") as tmp:
            store = BlockStore(Path(tmp) / "blocks")
            entries: list[tuple[str, str]] = []
            cid = await add_path(
                store,
                path,
                cid_version=cid_version,
                raw_leaves=raw_leaves,
                hidden=hidden,
                wrap_with_directory=wrap_with_directory,
                chunk_size=chunk_size,
                on_entry=lambda rel, c: entries.append((rel, c)),
            )
            car = Path(tmp) / "upload.car"
            await export_car(store, cid, car)
            roots = await self.import_car(car, progress=progress)
        if cid not in roots:
            raise ApiError(f"the node imported {roots}, not {cid}", code="unexpected_answer")
        if on_entry is not None:
            for rel, entry_cid in entries:
                on_entry(rel, entry_cid)
        return cid

    async def import_car(
        self, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> tuple[str, ...]:
        """Upload a CARv1 file; the node checks every block and pins the roots."""
        response = await self._request(
            "POST",
            "/data/car",
            content=_read_file(Path(path), progress),
            headers={"content-type": "application/vnd.ipld.car"},
        )
        return from_json_data(response.json(), CarImported, what="response").roots

    async def cat(self, cid: str, *, path: str | None = None) -> AsyncIterator[bytes]:
        """Stream a file's bytes through the node (which fetches missing blocks from peers).

        ``cid`` may carry a path (``CID/stdout``, ``/ipfs/CID/a/b``), as ``path`` does.
        """
        cid, path = split_cid_path(cid, path)
        params = {"path": path} if path else None
        async with self._stream("GET", f"/data/{_quote(cid)}/cat", params=params) as response:
            async for piece in response.aiter_bytes():
                yield piece

    async def ls(self, cid: str, *, path: str | None = None) -> list[DataEntry]:
        """A directory's entries (a file lists itself with name ``""``); ``cid`` may carry
        a path (``CID/outputs``)."""
        cid, path = split_cid_path(cid, path)
        params = {"path": path} if path else None
        response = await self._request("GET", f"/data/{_quote(cid)}/ls", params=params)
        return [from_json_data(e, DataEntry, what="entry") for e in response.json()]

    async def export_car(
        self, cid: str, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Save the whole DAG under ``cid`` as a CARv1 file at ``dest`` (``progress(received,
        total)`` is called as the bytes arrive)."""
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.part")
        try:
            async with (
                self._stream("GET", f"/data/{_quote(cid)}/car") as response,
                await anyio.open_file(part, "wb") as fh,
            ):
                length = response.headers.get("content-length", "")
                total = int(length) if length.isdigit() else None
                done = 0
                async for piece in response.aiter_bytes():
                    await fh.write(piece)
                    done += len(piece)
                    if progress is not None:
                        progress(done, total)
            await anyio.Path(part).replace(dest)
        finally:
            await anyio.Path(part).unlink(missing_ok=True)
        return dest

    async def download(
        self, cid: str, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Fetch the DAG under ``cid`` and write its files to ``dest``, verified.

        Every block is hash-checked against its CID and the tree is walked from
        ``cid`` itself, so what lands on disk is exactly what ``cid`` names. Files
        are written while the archive arrives (no copy of it on disk, and memory
        holds at most a few MiB of it whatever its size).
        ``dest`` must not exist, or be an empty directory. ``cid`` may carry a path
        (``CID/outputs/file.txt``): that file or folder is fetched.

        Raises:
            StorageError / CorruptBlock / BlockNotFound: the data is damaged or incomplete.
        """
        root, path = split_cid_path(cid, None)
        if path:
            cid = await self._resolve(root, path)
        from ..storage.ipfs.blockstore import BlockStore
        from ..storage.ipfs.car_stream import export_car_stream

        with tempfile.TemporaryDirectory(prefix="bacalhau-get-") as tmp:
            async with self._stream("GET", f"/data/{_quote(cid)}/car") as response:
                length = response.headers.get("content-length", "")
                total = int(length) if length.isdigit() else None

                async def chunks() -> AsyncIterator[bytes]:
                    done = 0
                    async for piece in response.aiter_bytes():
                        done += len(piece)
                        if progress is not None:
                            progress(done, total)
                        yield piece

                scratch = BlockStore(Path(tmp) / "blocks")
                return await export_car_stream(chunks(), cid, Path(dest), scratch=scratch)

    async def _resolve(self, cid: str, path: str) -> str:
        """The CID of the file or folder at ``path`` under ``cid``."""
        from ..errors import BlockNotFound

        parent, _, name = path.rpartition("/")
        for entry in await self.ls(cid, path=parent or None):
            if entry.name == name:
                return entry.cid
        raise BlockNotFound(f"{cid}/{path}: no such file or folder")

    async def get_results(
        self, job_id: str, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> tuple[str, Path]:
        """Download and verify the job's published results to ``dest``; return (CID, dest).

        Raises:
            JobFailed: the job has no published results (it failed, or ended without).
        """
        from ..errors import JobFailed

        result = await self.describe(job_id)
        cid = result.cid
        if cid is None:
            if not result.state.terminal:
                raise JobFailed(
                    f"job {result.job_id} is still {result.state.value}; "
                    "wait for it ('bacalhau describe' shows its progress)"
                )
            raise JobFailed(
                f"job {result.job_id} {result.state.value} with no results "
                f"published to a CID: {result.reason or 'see bacalhau describe'}"
            )
        return cid, await self.download(cid, dest, progress=progress)

    async def pins(self) -> dict[str, str]:
        return (await self._get("/data/pins", PinList)).pins

    async def pin(self, cid: str) -> dict[str, str]:
        """Fetch the DAG under ``cid`` onto the node and pin it; return the pins."""
        return (await self._post(f"/data/{_quote(cid)}/pin", PinList)).pins

    async def unpin(self, cid: str) -> dict[str, str]:
        response = await self._request("DELETE", f"/data/{_quote(cid)}/pin")
        return from_json_data(response.json(), PinList, what="response").pins

    async def gc(self) -> int:
        """Remove unpinned blocks from the node; return how many."""
        return (await self._post("/data/gc", GcResult)).removed


def split_cid_path(ref: str, path: str | None) -> tuple[str, str | None]:
    """``CID/a/b`` (or ``/ipfs/CID/a/b``) -> ``(CID, "a/b")``; ``path`` is appended."""
    cid, _, rest = ref.removeprefix("/ipfs/").partition("/")
    parts = [p for p in (rest.strip("/"), (path or "").strip("/")) if p]
    return cid, "/".join(parts) or None


def _quote(segment: str) -> str:
    from urllib.parse import quote

    if not segment:
        raise ValidationError("must not be empty", field="id")
    return quote(segment, safe="")


Progress = Callable[[int, int | None], None]
"""Told ``(bytes so far, total bytes or None)`` as a transfer goes (a CLI progress bar)."""


async def _read_file(path: Path, progress: Progress | None = None) -> AsyncIterator[bytes]:
    try:
        async with await anyio.open_file(path, "rb") as fh:
            total = (await anyio.Path(path).stat()).st_size if progress else None
            done = 0
            while chunk := await fh.read(UPLOAD_CHUNK):
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
                yield chunk
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}", field="path") from None


from .sync_client import SyncClient  # noqa: E402  (the facade lives in its own module)


async def _split_lines(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The lines of a byte stream (without their newlines), each at most ``limit`` bytes.

    Raises:
        DecodeError: a line is longer than ``limit``.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if b"\n" not in chunk:
            parts.append(chunk)
            if size > limit:
                raise DecodeError(f"log stream: a line is longer than {limit} bytes")
            continue
        *lines, rest = b"".join([*parts, chunk]).split(b"\n")
        for line in lines:
            if len(line) > limit:
                raise DecodeError(f"log stream: a line is longer than {limit} bytes")
            yield line
        parts, size = [rest], len(rest)
        if size > limit:
            raise DecodeError(f"log stream: a line is longer than {limit} bytes")
    if size:
        yield b"".join(parts)
