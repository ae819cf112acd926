"""How gossip nodes find each other: mDNS on the LAN, and static ``HOST:PORT`` peers.

mDNS uses python-zeroconf. Each node registers ``<node id>._bacalhau._tcp.local.``
with its gossip port, its addresses and a TXT record holding its node id and
the tag of its network (``public``, or a hash of the network secret), and
browses for the same service type. Records of other networks are ignored.

python-zeroconf does blocking work (binding multicast sockets, probing a name,
resolving a record) and runs its own I/O thread; every call into it here goes
through :func:`anyio.to_thread.run_sync`, so the event loop never blocks. The
browser's callback (on zeroconf's thread) only hands the service name over to
the event loop; resolution runs in worker threads, a few at a time.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import attrs

from ..errors import ValidationError

__all__ = [
    "SERVICE_TYPE",
    "DiscoveredPeer",
    "MdnsDiscovery",
    "interface_addresses",
    "parse_peer_address",
]

log = logging.getLogger("bacalhau.transport.discovery")

SERVICE_TYPE = "_bacalhau._tcp.local."


def parse_peer_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into ``(host, port)``.

    Raises:
        ValidationError: no port, a port out of range, or an empty host.
    """
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValidationError(f"peer address {text!r} must look like [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValidationError(f"peer address {text!r} must look like HOST:PORT")
        if ":" in host:
            raise ValidationError(f"peer address {text!r}: write IPv6 hosts as [HOST]:PORT")
    if not host:
        raise ValidationError(f"peer address {text!r} has no host")
    try:
        port = int(port_text)
    except ValueError:
        raise ValidationError(
            f"peer address {text!r}: port {port_text!r} is not a number"
        ) from None
    if not 0 < port < 65536:
        raise ValidationError(f"peer address {text!r}: port must be 1-65535")
    return host, port


@attrs.frozen(kw_only=True)
class DiscoveredPeer:
    """A node announced on mDNS: its id and where its gossip port listens."""

    node_id: str
    host: str
    port: int


def _is_wildcard(host: str | None) -> bool:
    return host in (None, "", "0.0.0.0", "::")


def interface_addresses(interfaces: Sequence[str] | None) -> list[str]:
    """IP addresses of ``interfaces`` (addresses as given, names looked up), or,
    for None, every non-loopback IPv4 address of this machine (blocking: ifaddr)."""
    import ifaddr

    adapters = ifaddr.get_adapters()
    out: list[str] = []
    for item in interfaces or ():
        try:
            out.append(str(ipaddress.ip_address(item)))
        except ValueError:
            named = [a for a in adapters if item in (a.name, a.nice_name)]
            if not named:
                raise ValidationError(
                    f"mDNS interface {item!r} is neither an IP address nor an interface here"
                ) from None
            out.extend(ip.ip for a in named for ip in a.ips if isinstance(ip.ip, str))
    if interfaces:
        return out
    found = [
        ip.ip
        for adapter in adapters
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
    return found or ["127.0.0.1"]


@attrs.define(eq=False, kw_only=True)
class MdnsDiscovery:
    """Announce this node on mDNS and report the nodes of the same network.

    Args:
        node_id: this node's id (the service instance name; its own record is skipped).
        port: the gossip port to announce.
        host: the gossip listen host; a specific address is announced as is, a
            wildcard (``0.0.0.0``) announces the interface addresses.
        interfaces: addresses or names (``eth0``) of the interfaces mDNS uses;
            None for all. Tests pass ``["127.0.0.1"]`` to stay on loopback.
        network_tag: the network's tag (:func:`bacalhau.transport.gossip_conn.network_tag`).
        resolve_timeout: seconds to wait for one record to resolve.
    """

    node_id: str
    port: int
    host: str | None = None
    interfaces: Sequence[str] | None = None
    network_tag: str = "public"
    resolve_timeout: float = 3.0
    service_type: str = SERVICE_TYPE
    registered: anyio.Event = attrs.Factory(anyio.Event)
    _resolved: set[str] = attrs.Factory(set)

    def _open(self) -> tuple[Any, Any]:
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

        chosen = interface_addresses(self.interfaces) if self.interfaces else None
        v4only = chosen is None or all(":" not in a for a in chosen)
        zc = Zeroconf(
            interfaces=chosen if chosen is not None else InterfaceChoice.All,
            ip_version=IPVersion.V4Only if v4only else IPVersion.All,
        )
        if _is_wildcard(self.host):
            addresses = chosen or interface_addresses(None)
        else:
            addresses = [socket.gethostbyname(str(self.host))]
        info = ServiceInfo(
            self.service_type,
            f"{self.node_id}.{self.service_type}",
            port=self.port,
            parsed_addresses=addresses,
            properties={"id": self.node_id, "net": self.network_tag, "v": "1"},
            server=f"{self.node_id.lower()}.local.",
        )
        return zc, info

    async def run(
        self,
        on_found: Callable[[DiscoveredPeer], None],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Announce and browse until cancelled, calling ``on_found`` for each peer record.

        ``on_found`` runs in the event loop and must not block. A record is
        reported again when it changes (a node that restarted on a new port).
        """
        from zeroconf import ServiceBrowser, ServiceStateChange

        zc, info = await anyio.to_thread.run_sync(self._open)
        send, receive = anyio.create_memory_object_stream[str](1024)
        token = anyio.lowlevel.current_token()
        own = info.name

        def on_change(
            zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:  # called on zeroconf's thread
            if name == own:
                return
            if state_change is ServiceStateChange.Removed:
                self._resolved.discard(name)
                return
            try:
                anyio.from_thread.run_sync(send.send_nowait, name, token=token)
            except Exception:  # loop closing, or a burst past the buffer: the next query repeats it
                return

        browser: Any = None
        limiter = anyio.CapacityLimiter(4)
        try:
            async with send, receive, anyio.create_task_group() as tg:
                browser = await anyio.to_thread.run_sync(
                    lambda: ServiceBrowser(zc, self.service_type, handlers=[on_change])
                )
                tg.start_soon(self._register, zc, info)
                task_status.started()
                async for name in receive:
                    if name not in self._resolved:
                        self._resolved.add(name)
                        tg.start_soon(self._resolve, zc, name, on_found, limiter)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close, zc, info, browser)

    async def _register(self, zc: Any, info: Any) -> None:
        # probing for a unique name takes ~1.5 s of zeroconf's timers: off the loop
        try:
            await anyio.to_thread.run_sync(
                lambda: zc.register_service(info, allow_name_change=False)
            )
        except Exception as exc:
            log.warning("mDNS: could not announce this node (%s); peers can still dial it", exc)
            return
        self.registered.set()
        log.debug("mDNS: announced %s on port %d", self.node_id, self.port)

    async def _resolve(
        self,
        zc: Any,
        name: str,
        on_found: Callable[[DiscoveredPeer], None],
        limiter: anyio.CapacityLimiter,
    ) -> None:
        timeout_ms = int(self.resolve_timeout * 1000)
        try:
            info = await anyio.to_thread.run_sync(
                lambda: zc.get_service_info(self.service_type, name, timeout=timeout_ms),
                limiter=limiter,
            )
        except Exception as exc:
            log.debug("mDNS: could not resolve %s: %s", name, exc)
            info = None
        finally:
            self._resolved.discard(name)
        if info is None:
            return
        peer = self.parse(info)
        if peer is not None and peer.node_id != self.node_id:
            on_found(peer)

    def parse(self, info: Any) -> DiscoveredPeer | None:
        """A peer from a resolved record, or None if it is not one of this network's."""
        props = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else v
            )
            for k, v in (info.properties or {}).items()
        }
        node_id, tag = props.get("id"), props.get("net")
        if not isinstance(node_id, str) or tag != self.network_tag or not info.port:
            return None
        addresses = info.parsed_addresses()
        v4 = [a for a in addresses if ":" not in a]
        chosen = (v4 or addresses or [None])[0]
        if chosen is None:
            return None
        return DiscoveredPeer(node_id=node_id, host=chosen, port=int(info.port))

    @staticmethod
    def _close(zc: Any, info: Any, browser: Any) -> None:
        try:
            if browser is not None:
                browser.cancel()
            zc.unregister_service(info)
        except Exception as exc:  # best effort: a closing node's goodbye may fail
            log.debug("mDNS: goodbye failed: %s", exc)
        finally:
            zc.close()
