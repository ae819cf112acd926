"""How many block requests to keep in flight to one provider.

A pure estimator in the spirit of BBR: it keeps the smallest round trip seen
(the path's latency without queueing) and a smoothed delivery rate (bytes per
second of replies), and allows ``gain`` times their product (the
bandwidth-delay product) in flight, in units of the average reply. While the
window limits throughput, the delivery rate grows with the window, so the
window roughly doubles every round trip; once the pipe is full the round trip
grows instead of the rate and the window stops growing. A failed or timed-out
request halves it. It is bounded by ``low`` and ``high`` so that memory in
flight stays bounded whatever the measurements say.

No clock inside: callers pass the times (tests drive it with made-up numbers).
"""

from __future__ import annotations

import math

import attrs

__all__ = ["FlowWindow"]


@attrs.define
class FlowWindow:
    """Requests in flight to one provider, sized from its measured round trip.

    Args:
        low / high: bounds of the window (requests).
        gain: in-flight bytes allowed, as a multiple of the bandwidth-delay product.
        start: the window before any measurement.
    """

    low: int = attrs.field(default=2, kw_only=True)
    high: int = attrs.field(default=16, kw_only=True)
    gain: float = attrs.field(default=2.0, kw_only=True)
    start: int = attrs.field(default=4, kw_only=True)
    limit: int = attrs.field(init=False)
    min_rtt: float | None = attrs.field(default=None, init=False)
    rate: float = attrs.field(default=0.0, init=False)
    """Smoothed delivery rate, bytes per second."""
    reply_bytes: float = attrs.field(default=0.0, init=False)
    """Smoothed size of one reply."""
    _last: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ValueError("window bounds must satisfy 1 <= low <= high")
        self.limit = min(self.high, max(self.low, self.start))

    def on_reply(self, sent: float, now: float, nbytes: int) -> None:
        """A request sent at ``sent`` was answered at ``now`` with ``nbytes``."""
        rtt = max(now - sent, 1e-6)
        self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)
        self.reply_bytes = (
            float(nbytes) if self.reply_bytes == 0 else 0.8 * self.reply_bytes + 0.2 * nbytes
        )
        # delivery rate: bytes of this reply over the time since the previous one
        # (or over its own round trip for the first), smoothed
        interval = max(now - self._last, 1e-6) if self._last is not None else rtt
        interval = min(interval, rtt)
        sample = nbytes / interval
        self.rate = sample if self.rate == 0 else 0.75 * self.rate + 0.25 * sample
        self._last = now
        if self.reply_bytes > 0:
            bdp = self.rate * self.min_rtt
            want = math.ceil(self.gain * bdp / self.reply_bytes)
            # grow at most by doubling per reply's worth of measurements
            self.limit = min(self.high, max(self.low, min(want, 2 * self.limit)))

    def on_failure(self) -> None:
        """A request failed or timed out: halve the window."""
        self.limit = max(self.low, self.limit // 2)
