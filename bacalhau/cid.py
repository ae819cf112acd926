"""CID parsing shared by models and storage (thin layer over ``multiformats``)."""

from __future__ import annotations

from multiformats import CID

from .errors import ValidationError

__all__ = ["parse_cid", "validate_cid"]


def parse_cid(text: str, *, field: str = "cid") -> CID:
    """Decode a CIDv0 (``Qm...``) or CIDv1 string, or raise a ValidationError naming ``field``."""
    if not isinstance(text, str) or not 2 <= len(text) <= 512:
        raise ValidationError(f"not a CID: {text!r}", field=field)
    try:
        return CID.decode(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"not a CID: {text!r} ({exc})", field=field) from None


def validate_cid(text: str, *, field: str = "cid") -> None:
    parse_cid(text, field=field)
