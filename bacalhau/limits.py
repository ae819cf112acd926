"""Limits: what a compute node allows one job, and what a hostile DAG may cost to read.

One :class:`JobLimits` value (``ComputeConfig.limits``; ``serve`` flags) configures the
URL destination policy, the DAG expansion limits, the WASM module limits, Docker's user
and pids limit, and the disk a job may fill when it asks for none. Every field has a
sane default; see ``docs/security.md`` for what each defends against.

A DAG may link one node many times, so a 2 KB CAR can describe 2^14 folders
(each folder links its child twice) or a file of 2^60 bytes. Wherever a DAG is
expanded into entries (inputs, ``get``, ``data get``, ``ls``, a path inside a
CID) the walk counts what it has expanded against one :class:`DagLimits` and
stops with a :class:`~bacalhau.errors.StorageError` naming the limit, long
before the host's disk, memory or time runs out.

This module imports only :mod:`bacalhau.errors`, so executors, storage and the compute
side can all read it without importing one another.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs

from .errors import StorageError, ValidationError

__all__ = [
    "DEFAULT_DAG_LIMITS",
    "DEFAULT_JOB_LIMITS",
    "DagBudget",
    "DagLimits",
    "JobLimits",
    "parse_network",
]


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


@attrs.define(kw_only=True)
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


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str, *, field: str = "url_allow_networks") -> IpNetwork:
    """``10.0.0.0/8``, ``::1/128`` or a bare address, as a network.

    Raises:
        ValidationError: not an address or CIDR block.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValidationError(f"{text!r} is not an IP network (CIDR)", field=field) from None


def _networks(value: object) -> tuple[IpNetwork, ...]:
    items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return tuple(
        v if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network) else parse_network(str(v))
        for v in items
    )


def _domains(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    out = []
    for item in items:
        name = str(item).strip().lower().rstrip(".")
        if not name or "/" in name or " " in name:
            raise ValidationError(f"{item!r} is not a domain name", field="url_allow_domains")
        out.append(name)
    return tuple(out)


def _at_least(least: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValidationError(
                f"must be an integer >= {least}, got {value!r}", field=attribute.name
            )

    return check


@attrs.frozen(kw_only=True)
class JobLimits:
    """The host-side limits on every job this node runs.

    Args:
        url_allow_networks: destinations a ``url`` input may reach although they are
            loopback, link-local, private, multicast or unspecified (CIDR blocks,
            ``serve --allow-url-network``). Public addresses are always allowed.
        url_allow_domains: host names (and their subdomains) exempt from that
            address check (``serve --allow-url-domain``).
        url_max_size: the largest ``url`` input body (bytes).
        dag: entries, depth, total size and HAMT fan-out one DAG may expand to.
        wasm_max_module_bytes: the largest WASM module accepted (bytes).
        docker_user: ``UID[:GID]`` containers run as; None: this node's own user, or
            ``65534:65534`` (nobody) when the node runs as root.
        docker_pids_limit: most processes one container may hold.
        default_disk: the disk (inputs and results, bytes) a job may fill when it asks
            for no ``resources.disk``.
        max_result_entries: files and folders a job's results may hold.
        guards: internal, for benchmarks only: False turns the per-job guards off to
            measure what they cost. Never turn it off on a node.
    """

    url_allow_networks: tuple[IpNetwork, ...] = attrs.field(default=(), converter=_networks)
    url_allow_domains: tuple[str, ...] = attrs.field(default=(), converter=_domains)
    url_max_size: int = attrs.field(default=1024**3, validator=_at_least(1))
    dag: DagLimits = DEFAULT_DAG_LIMITS
    wasm_max_module_bytes: int = attrs.field(
        default=64 * 1024 * 1024,
        validator=_at_least(8),
    )
    docker_user: str | None = None
    docker_pids_limit: int = attrs.field(default=1024, validator=_at_least(1))
    default_disk: int = attrs.field(default=4 * 1024**3, validator=_at_least(1))
    max_result_entries: int = attrs.field(default=10_000, validator=_at_least(1))
    guards: bool = True


DEFAULT_JOB_LIMITS = JobLimits()
