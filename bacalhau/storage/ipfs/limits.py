"""Limits on expanding a DAG: what a small, hostile DAG may cost to read.

A DAG may link one node many times, so a 2 KB CAR can describe 2^14 folders
(each folder links its child twice) or a file of 2^60 bytes. Wherever a DAG is
expanded into entries (inputs, ``get``, ``data get``, ``ls``, a path inside a
CID) the walk counts what it has expanded against one :class:`DagLimits` and
stops with a :class:`~bacalhau.errors.StorageError` naming the limit, long
before the host's disk, memory or time runs out.
"""

from __future__ import annotations

import attrs

from ...errors import StorageError, ValidationError

__all__ = ["DEFAULT_DAG_LIMITS", "DagBudget", "DagLimits"]


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"must be a positive integer, got {value!r}", field=attribute.name)


@attrs.frozen(kw_only=True)
class DagLimits:
    """How much one expansion of a DAG may produce.

    Args:
        max_entries: files, folders and links written or listed, counting every
            time a shared node is reached again (default 100,000).
        max_depth: folders nested inside one another, and levels of one file's
            DAG (default 128; Kubo's balanced files are under 10 levels deep).
        max_size: bytes of file data in total (default 64 GiB).
        max_fanout: the largest HAMT shard fan-out accepted (Kubo uses 256;
            default 1024). The fan-out must also be a power of two.
    """

    max_entries: int = attrs.field(default=100_000, validator=_positive)
    max_depth: int = attrs.field(default=128, validator=_positive)
    max_size: int = attrs.field(default=64 * 1024**3, validator=_positive)
    max_fanout: int = attrs.field(default=1024, validator=_positive)


DEFAULT_DAG_LIMITS = DagLimits()


@attrs.define
class DagBudget:
    """What one expansion has left; :meth:`entry` and :meth:`data` raise when it runs out."""

    limits: DagLimits = DEFAULT_DAG_LIMITS
    entries: int = 0
    size: int = 0

    def entry(self, where: str, count: int = 1) -> None:
        self.entries += count
        if self.entries > self.limits.max_entries:
            raise StorageError(
                f"{where}: the DAG expands to more than {self.limits.max_entries} entries "
                "(the node's limit on DAG entries)"
            )

    def depth(self, depth: int, where: str) -> None:
        if depth > self.limits.max_depth:
            raise StorageError(
                f"{where}: the DAG nests deeper than {self.limits.max_depth} levels "
                "(the node's limit on DAG depth)"
            )

    def data(self, size: int, where: str) -> None:
        self.size += size
        if self.size > self.limits.max_size:
            raise StorageError(
                f"{where}: the DAG expands to more than {self.limits.max_size} bytes "
                "(the node's limit on DAG size)"
            )

    def fanout(self, fanout: int | None, where: str) -> int:
        value = 256 if fanout is None else fanout
        if value < 2 or value & (value - 1) or value > self.limits.max_fanout:
            raise StorageError(
                f"{where}: HAMT fan-out {value} is not a power of two up to "
                f"{self.limits.max_fanout} (the node's limit on HAMT fan-out)"
            )
        return value
