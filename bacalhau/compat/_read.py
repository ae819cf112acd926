"""Reading Bacalhau's documents the way Bacalhau reads them: field names match without
regard to case (Go's ``encoding/json``), every key is accounted for, and every error
names the path of the offending key (``Tasks[0].Engine.Params.Image``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from ..errors import ValidationError

__all__ = ["Doc", "fail", "message_of"]


def fail(path: str, message: str) -> ValidationError:
    """A 4xx-worthy error naming ``path`` (the message reads ``path: message``)."""
    return ValidationError(message, field=path or None)


def message_of(exc: ValidationError) -> str:
    """The message of ``exc`` without its own ``field:`` prefix."""
    text = str(exc)
    prefix = f"{exc.field}: " if exc.field else ""
    return text.removeprefix(prefix)


@attrs.define(eq=False, kw_only=True)
class Doc:
    """A mapping read case-insensitively; :meth:`done` refuses keys nobody read.

    Args:
        data: the mapping.
        path: where it sits in the document (``Tasks[0]``), for error messages.
    """

    data: dict[str, Any]
    path: str
    used: set[str] = attrs.Factory(set)

    @classmethod
    def of(cls, value: Any, path: str) -> Doc:
        if value is None:
            return cls(data={}, path=path)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise fail(path, f"expected a mapping, got {type(value).__name__}")
        lowered: dict[str, str] = {}
        for key in value:
            if key.lower() in lowered:
                raise fail(_join(path, key), f"given twice (also as {lowered[key.lower()]!r})")
            lowered[key.lower()] = key
        return cls(data=dict(value), path=path)

    def _key(self, name: str) -> str | None:
        low = name.lower()
        for key in self.data:
            if key.lower() == low:
                return key
        return None

    def has(self, name: str) -> bool:
        key = self._key(name)
        return key is not None and self.data[key] is not None

    def at(self, name: str) -> str:
        """The path of field ``name`` inside this document."""
        return _join(self.path, self._key(name) or name)

    def raw(self, name: str, default: Any = None) -> Any:
        key = self._key(name)
        if key is None:
            return default
        self.used.add(key)
        value = self.data[key]
        return default if value is None else value

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise fail(self.at(name), f"expected text, got {type(value).__name__}")
        return value

    def integer(self, name: str, default: int = 0) -> int:
        value = self.raw(name, default)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(self.at(name), f"expected a whole number, got {value!r}")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise fail(self.at(name), f"expected true or false, got {value!r}")
        return value

    def texts(self, name: str) -> list[str]:
        value = self.raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(self.at(name), "expected a list of text")
        return list(value)

    def text_map(self, name: str) -> dict[str, str]:
        value = self.raw(name, {})
        if not isinstance(value, dict):
            raise fail(self.at(name), f"expected a mapping, got {type(value).__name__}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str | int | float | bool):
                raise fail(_join(self.at(name), str(k)), "expected text")
            out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        return out

    def doc(self, name: str) -> Doc:
        return Doc.of(self.raw(name), self.at(name))

    def docs(self, name: str) -> Iterator[Doc]:
        value = self.raw(name, [])
        if not isinstance(value, list):
            raise fail(self.at(name), f"expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            yield Doc.of(item, f"{self.at(name)}[{i}]")

    def skip(self, *names: str) -> None:
        """Mark fields as read (server-set fields that a submission may carry back)."""
        for name in names:
            self.raw(name)

    def done(self) -> None:
        """Refuse any key that was not read."""
        extra = [k for k in self.data if k not in self.used]
        if extra:
            raise fail(
                _join(self.path, extra[0]),
                "unknown field" + (f" (and {', '.join(extra[1:])})" if extra[1:] else ""),
            )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
