"""What a compute node allows one job: the host-side limits that keep jobs in their box.

One :class:`JobLimits` value (``ComputeConfig.limits``; ``serve`` flags) configures the
URL destination policy, the DAG expansion limits, the WASM module limits, Docker's user
and pids limit, and the disk a job may fill when it asks for none. Every field has a
sane default; see ``docs/security.md`` for what each defends against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs

from ..errors import ValidationError
from ..storage.ipfs.limits import DEFAULT_DAG_LIMITS, DagLimits

__all__ = ["DEFAULT_JOB_LIMITS", "JobLimits", "parse_network"]

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
