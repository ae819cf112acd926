"""Node labels and job selectors (the Kubernetes-style syntax Bacalhau users know).

A node carries labels, ``key=value`` pairs given to ``serve --labels``. A job
carries selectors; it may run only on nodes whose labels satisfy every one::

    region=eu            the label equals the value (``==`` works too)
    region!=us           the label is missing or differs
    zone in (a,b)        the label is one of the values
    zone notin (a,b)     the label is missing or none of the values
    gpu                  the label exists
    !gpu                 the label does not exist
    mem>16  mem<64       the label is a number above / below the value

Several selectors are separated by commas (commas inside ``( )`` belong to the
set). Pure values; parsing refuses anything else with a
:class:`~bacalhau.errors.ValidationError` naming the selector.

>>> s = parse_selectors("region=eu, zone in (a,b), !spot")
>>> [str(x) for x in s]
['region=eu', 'zone in (a,b)', '!spot']
>>> matches(s, {"region": "eu", "zone": "b"})
True
>>> matches(s, {"region": "eu", "zone": "b", "spot": "yes"})
False
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import attrs

from .errors import ValidationError

__all__ = [
    "OPERATORS",
    "Selector",
    "check_labels",
    "matches",
    "parse_labels",
    "parse_selectors",
]

OPERATORS = ("=", "!=", "in", "notin", "exists", "!exists", "<", ">")
"""Every selector operator."""

_KEY = r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.\-:]{0,63}$")
MAX_LABELS = 64
MAX_SELECTORS = 32
MAX_VALUES = 32


def _check_key(key: object, field: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValidationError(
            f"label key {key!r} must be 1-63 letters, digits, '_', '-', '.' or '/'", field=field
        )
    return key


def _check_value(value: object, field: str) -> str:
    if not isinstance(value, str) or not _VALUE_RE.match(value):
        raise ValidationError(
            f"label value {value!r} must be at most 63 letters, digits, '_', '-', '.' or ':'",
            field=field,
        )
    return value


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@attrs.frozen(kw_only=True)
class Selector:
    """One requirement on a node's labels.

    Args:
        key: the label's name.
        operator: one of :data:`OPERATORS`.
        values: one value for ``=``, ``!=``, ``<``, ``>`` (a number for the last two),
            one or more for ``in`` / ``notin``, none for ``exists`` / ``!exists``.
    """

    key: str
    operator: str = "exists"
    values: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        _check_key(self.key, "selectors")
        if self.operator not in OPERATORS:
            raise ValidationError(
                f"selector operator {self.operator!r} is not one of {', '.join(OPERATORS)}",
                field="selectors",
            )
        for value in self.values:
            _check_value(value, "selectors")
        n = len(self.values)
        if self.operator in ("exists", "!exists") and n:
            raise ValidationError(f"selector {self} takes no values", field="selectors")
        if self.operator in ("=", "!=", "<", ">") and n != 1:
            raise ValidationError(f"selector {self} needs exactly one value", field="selectors")
        if self.operator in ("in", "notin") and not 1 <= n <= MAX_VALUES:
            raise ValidationError(
                f"selector {self} needs 1 to {MAX_VALUES} values", field="selectors"
            )
        if self.operator in ("<", ">") and _number(self.values[0]) is None:
            raise ValidationError(
                f"selector {self} compares numbers; {self.values[0]!r} is not one",
                field="selectors",
            )

    def __str__(self) -> str:
        op, key, vals = self.operator, self.key, self.values
        if op == "exists":
            return key
        if op == "!exists":
            return f"!{key}"
        if op in ("in", "notin"):
            return f"{key} {op} ({','.join(vals)})"
        return f"{key}{op}{vals[0] if vals else ''}"

    def match(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with ``labels`` satisfies this selector."""
        op, have = self.operator, labels.get(self.key)
        if op == "exists":
            return have is not None
        if op == "!exists":
            return have is None
        if op == "=":
            return have == self.values[0]
        if op == "!=":
            return have != self.values[0]
        if op == "in":
            return have in self.values
        if op == "notin":
            return have not in self.values
        number = _number(have) if have is not None else None
        if number is None:
            return False
        limit = float(self.values[0])
        return number < limit if op == "<" else number > limit


def matches(selectors: Iterable[Selector], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every selector (no selectors: always)."""
    return all(s.match(labels) for s in selectors)


_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_CMP_RE = re.compile(rf"^({_KEY})\s*(==|!=|=|<|>)\s*(\S*)$")


def _split(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_selectors(text: str | Iterable[str]) -> tuple[Selector, ...]:
    """Parse ``"a=b, c in (x,y), !d"`` (or several such strings) into selectors.

    Raises:
        ValidationError: a selector that does not parse, named in the message.
    """
    texts = [text] if isinstance(text, str) else list(text)
    out: list[Selector] = []
    for chunk in texts:
        if not isinstance(chunk, str):
            raise ValidationError(f"a selector must be text, got {chunk!r}", field="selectors")
        for part in _split(chunk):
            out.append(_parse_one(part))
    if len(out) > MAX_SELECTORS:
        raise ValidationError(f"at most {MAX_SELECTORS} selectors", field="selectors")
    return tuple(out)


def _parse_one(part: str) -> Selector:
    m = _SET_RE.match(part)
    if m:
        values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
        return Selector(key=m.group(1), operator=m.group(2), values=values)
    m = _CMP_RE.match(part)
    if m:
        op = "=" if m.group(2) == "==" else m.group(2)
        return Selector(key=m.group(1), operator=op, values=(m.group(3),))
    if part.startswith("!") and _KEY_RE.match(part[1:].strip()):
        return Selector(key=part[1:].strip(), operator="!exists")
    if _KEY_RE.match(part):
        return Selector(key=part, operator="exists")
    raise ValidationError(
        f"selector {part!r} is not one of key=value, key!=value, 'key in (a,b)', "
        "'key notin (a,b)', key, !key, key<number, key>number",
        field="selectors",
    )


def parse_labels(text: str | Iterable[str]) -> dict[str, str]:
    """Parse ``"region=eu,gpu=a100"`` (or several such strings) into labels.

    Raises:
        ValidationError: an entry is not ``key=value`` or a key repeats.
    """
    texts = [text] if isinstance(text, str) else list(text)
    labels: dict[str, str] = {}
    for chunk in texts:
        for part in (p.strip() for p in chunk.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise ValidationError(f"label {part!r} must look like key=value", field="labels")
            key, value = _check_key(key.strip(), "labels"), _check_value(value.strip(), "labels")
            if key in labels:
                raise ValidationError(f"label {key!r} is given twice", field="labels")
            labels[key] = value
    return check_labels(labels)


def check_labels(labels: object, field: str = "labels") -> dict[str, str]:
    """Refuse anything but a small mapping of valid keys to valid values."""
    if not isinstance(labels, dict):
        raise ValidationError("labels must be a mapping of names to values", field=field)
    if len(labels) > MAX_LABELS:
        raise ValidationError(f"at most {MAX_LABELS} labels", field=field)
    for key, value in labels.items():
        _check_key(key, field)
        _check_value(value, field)
    return dict(labels)
