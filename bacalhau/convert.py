"""Values to plain data and back: msgpack-ready data for the wire and the store, JSON-ready
data for the API (bytes as base64), each way refusing unknown fields with a named error.
"""

from __future__ import annotations

import base64
import enum
import math
import re
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import make_converter as _make_json_converter

from .errors import ValidationError
from .models import ExecutionState, JobState
from .selectors import Selector

__all__ = ["from_data", "from_json_data", "to_data", "to_json_data"]

T = TypeVar("T")

# --- plain data <-> values -------------------------------------------------------------------

_wire = cattrs.Converter(forbid_extra_keys=True)
_json = _make_json_converter(forbid_extra_keys=True)
_json.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))


def _b64(value: Any, _: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValidationError("bytes must be given as a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ValidationError(f"not valid base64: {exc}") from None


_json.register_structure_hook(bytes, _b64)
_wire.register_structure_hook(bytes, _b64)


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_number(kind: type) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"expected a number, got {type(value).__name__}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValidationError(f"expected a whole number, got {value}")
            return int(value)
        if not math.isfinite(value):
            raise ValidationError(f"expected a finite number, got {value}")
        return float(value)

    return hook


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"expected true or false, got {type(value).__name__}")
    return value


for _conv in (_wire, _json):
    _conv.register_structure_hook(str, _strict_str)
    _conv.register_structure_hook(bool, _strict_bool)
    _conv.register_structure_hook(int, _strict_number(int))
    _conv.register_structure_hook(float, _strict_number(float))
    _conv.register_structure_hook_func(
        lambda t: t in (dict[str, Any], dict[str, str]), lambda v, _: _expect_dict(v)
    )


def _enum_hook(cls: type[enum.Enum]) -> Any:
    """Enums are str subclasses: without their own hook the ``str`` hook would let any text in."""

    def hook(value: Any, _: Any) -> Any:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in cls)
            raise ValidationError(f"expected one of {allowed}, got {value!r}") from None

    return hook


for _conv in (_wire, _json):
    for _enum in (JobState, ExecutionState):
        _conv.register_structure_hook(_enum, _enum_hook(_enum))


def _mapping_first(conv: cattrs.Converter) -> None:
    """Give attrs classes a clear error when handed a non-mapping."""

    def factory(cls: type) -> Any:
        inner: Any = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise ValidationError(f"expected a mapping, got {type(value).__name__}")
            return inner(value, cls)

        return hook

    conv.register_structure_hook_factory(attrs.has, factory)


for _conv in (_wire, _json):
    _mapping_first(_conv)


def _selector_hook(value: Any, _: Any) -> Selector:
    """A selector in a spec: its text (``region=eu``) or its fields as a mapping."""
    if isinstance(value, str):
        from .selectors import parse_selectors

        parsed = parse_selectors(value)
        if len(parsed) != 1:
            raise ValidationError(f"expected one selector, got {value!r}")
        return parsed[0]
    if not isinstance(value, dict):
        raise ValidationError(f"a selector is text or a mapping, got {type(value).__name__}")
    extra = set(value) - {"key", "operator", "values"}
    if extra:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(extra))}")
    values = value.get("values", ())
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValidationError("selector values must be a list of strings")
    key, operator = value.get("key"), value.get("operator", "exists")
    if not isinstance(key, str) or not isinstance(operator, str):
        raise ValidationError("a selector needs a text key and operator")
    return Selector(key=key, operator=operator, values=tuple(values))


for _conv in (_wire, _json):
    _conv.register_structure_hook(Selector, _selector_hook)


def _expect_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _format_error(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ValidationError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, ValueError | TypeError):
        name = getattr(type_, "__name__", str(type_))
        return f"invalid value for {name}: {exc}"
    return f"invalid value: {exc}"


def _structure(conv: cattrs.Converter, data: Any, cls: type[T], what: str) -> T:
    if attrs.has(cls) and not isinstance(data, dict):
        raise ValidationError(f"{what} must be a mapping, got {type(data).__name__}")
    try:
        return conv.structure(data, cls)
    except ValidationError:
        raise
    except (cattrs.BaseValidationError, cattrs.ForbiddenExtraKeysError) as exc:
        messages = [
            _path_first(m)
            for m in cattrs.transform_error(exc, path=what, format_exception=_format_error)
        ]
        error = ValidationError("; ".join(messages))
        error.field = _field_of(messages[0]) if messages else None  # the first one at fault
        raise error from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValidationError(f"{what}: {exc}") from None


_FIELD_MSG = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): (.*) @ (\S+)$", re.DOTALL)


def _path_first(message: str) -> str:
    """``concurrency: must be >= 1 @ $.deal`` -> ``$.deal.concurrency: must be >= 1``."""
    m = _FIELD_MSG.match(message)
    if m:
        return f"{m.group(3)}.{m.group(1)}: {m.group(2)}"
    body, _, path = message.rpartition(" @ ")
    return f"{path}: {body}" if body else message


def _field_of(message: str) -> str | None:
    """``$.spec.deal.confidence: must not be negative`` -> ``spec.deal.confidence``."""
    path, sep, _ = message.partition(": ")
    if not sep or not path.startswith("$"):
        return None
    return path.removeprefix("$").removeprefix(".") or None


def to_data(value: Any) -> Any:
    """Plain data (dicts, lists, bytes) for msgpack."""
    return _wire.unstructure(value)


def from_data(data: Any, cls: type[T], *, what: str = "$") -> T:
    """Build ``cls`` from plain data, refusing unknown fields with a named error."""
    return _structure(_wire, data, cls, what)


def to_json_data(value: Any) -> Any:
    """Plain JSON-able data (bytes as base64)."""
    return _json.unstructure(value)


def from_json_data(data: Any, cls: type[T], *, what: str = "$") -> T:
    """Build ``cls`` from JSON data (bytes as base64), refusing unknown fields."""
    return _structure(_json, data, cls, what)
