"""Bacalhau's resource and time units.

CPU as Kubernetes writes it (``500m`` is half a core, ``2`` two cores, ``0.25``);
memory and disk as Bacalhau's go-humanize reads them (``1GB`` and ``1gb`` are
10**9 bytes, ``1GiB`` and ``1Gi`` are 2**30, a bare number is bytes); durations
as Go writes them (``90s``, ``1h30m``, ``500ms``) or a number of seconds.

>>> parse_cpu("500m"), parse_cpu("2"), parse_bytes("1gb"), parse_bytes("512Mi")
(0.5, 2.0, 1000000000, 536870912)
>>> parse_duration("1h30m"), format_cpu(0.5), format_bytes(536870912)
(5400.0, '500m', '512Mi')
"""

from __future__ import annotations

import math
import re

from ..errors import ValidationError

__all__ = [
    "format_bytes",
    "format_cpu",
    "parse_bytes",
    "parse_cpu",
    "parse_duration",
]

_CPU_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(m?)\s*$")
_BYTES_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgtpe]?)(i?)(b?)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_cpu(text: str | float, *, field: str = "CPU") -> float:
    """Cores from ``500m``, ``0.5`` or ``2``.

    Raises:
        ValidationError: not a CPU quantity, or not positive and finite.
    """
    if isinstance(text, bool):
        raise ValidationError(f"not a CPU amount: {text!r}", field=field)
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = _CPU_RE.match(text) if isinstance(text, str) else None
        if not m:
            raise ValidationError(f"not a CPU amount: {text!r} (write 500m, 0.5 or 2)", field=field)
        value = float(m.group(1)) / (1000 if m.group(2) else 1)
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(f"CPU must be more than 0, got {text!r}", field=field)
    return value


def parse_bytes(text: str | int, *, field: str = "Memory") -> int:
    """Bytes from ``1gb`` / ``1GB`` (decimal), ``1Gi`` / ``1GiB`` (binary) or a count.

    Raises:
        ValidationError: not a size.
    """
    if isinstance(text, bool):
        raise ValidationError(f"not a size: {text!r}", field=field)
    if isinstance(text, int):
        if text < 0:
            raise ValidationError(f"size must not be negative, got {text}", field=field)
        return text
    m = _BYTES_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValidationError(
            f"not a size: {text!r} (write 512Mi, 1GB or a byte count)", field=field
        )
    number, prefix, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = " kmgtpe".index(prefix) if prefix else 0
    value = number * (1024 if binary else 1000) ** power
    if not math.isfinite(value) or value > 2**62:
        raise ValidationError(f"size {text!r} is too large", field=field)
    return int(value)


def parse_duration(text: str | float, *, field: str = "Timeout") -> float:
    """Seconds from ``90s``, ``1h30m``, ``500ms`` or a number of seconds.

    Raises:
        ValidationError: not a duration, or negative.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValidationError(f"not a duration: {text!r}", field=field)
    if isinstance(text, int | float) or re.fullmatch(r"\s*[0-9]+(\.[0-9]*)?\s*", text):
        value = float(text)
    elif text.strip():
        body = text.strip()
        parts = _DURATION_RE.findall(body)
        if not parts or "".join(n + u for n, u in parts) != body:
            raise ValidationError(
                f"not a duration: {text!r} (write 90s, 1h30m or seconds)", field=field
            )
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValidationError(f"not a duration: {text!r}", field=field)
    if not math.isfinite(value) or value < 0:
        raise ValidationError(f"duration must not be negative, got {text!r}", field=field)
    return value


def format_cpu(cores: float) -> str:
    """``500m`` for half a core, ``2`` for two."""
    if float(cores).is_integer():
        return str(int(cores))
    milli = cores * 1000
    return f"{round(milli)}m" if abs(milli - round(milli)) < 1e-9 else f"{cores:g}"


def format_bytes(size: int) -> str:
    """The shortest exact binary form (``512Mi``, ``1Gi``), else the byte count."""
    for power, suffix in ((4, "Ti"), (3, "Gi"), (2, "Mi"), (1, "Ki")):
        if size and size % (1024**power) == 0:
            return f"{size // 1024**power}{suffix}"
    return str(size)
