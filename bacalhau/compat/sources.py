"""Bacalhau's storage sources (``InputSource``) to our :class:`~bacalhau.models.StorageSpec`
and back: ``ipfs`` (``CID``), ``urlDownload`` (``URL``), ``inline`` (a ``data:`` URL)."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import Any

from ..errors import ValidationError
from ..models import InputSpec, StorageSpec
from ._read import Doc, fail, message_of

__all__ = [
    "data_url",
    "input_from_v1",
    "input_to_v1",
    "parse_data_url",
    "source_from_v1",
    "source_to_v1",
]

SOURCE_TYPES = {"ipfs": "ipfs", "urldownload": "url", "url": "url", "inline": "inline"}
"""Bacalhau source type (any case) -> ours."""
NO_COUNTERPART = ("s3", "s3presigned", "localdirectory", "local", "noop")


def parse_data_url(url: str, *, field: str) -> bytes:
    """The bytes of a ``data:[type][;base64],DATA`` URL (RFC 2397)."""
    if not url.startswith("data:") or "," not in url:
        raise ValidationError(
            f"an inline source is a data: URL (data:;base64,...), got {url[:40]!r}", field=field
        )
    meta, _, payload = url[5:].partition(",")
    if meta.endswith(";base64"):
        try:
            return base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationError(f"not valid base64: {exc}", field=field) from None
    return urllib.parse.unquote_to_bytes(payload)


def data_url(data: bytes) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode("ascii")


def source_from_v1(doc: Doc) -> StorageSpec:
    """A ``SpecConfig`` of a source (``Type`` and ``Params``) as our StorageSpec."""
    kind = doc.text("Type")
    params = doc.doc("Params")
    doc.done()
    ours = SOURCE_TYPES.get(kind.lower())
    if ours is None:
        why = (
            "has no counterpart here (sources: ipfs, urlDownload, inline)"
            if kind.lower() in NO_COUNTERPART
            else "is not a source type (ipfs, urlDownload, inline)"
        )
        raise fail(doc.at("Type"), f"{kind!r} {why}")
    try:
        if ours == "ipfs":
            cid = params.text("CID")
            path = params.text("Path") or None
            params.done()
            if not cid:
                raise fail(params.at("CID"), "an ipfs source needs a CID")
            return StorageSpec.ipfs(cid, path=path.strip("/") if path else None)
        if ours == "url":
            url = params.text("URL")
            checksum = params.text("Checksum") or None
            params.done()
            return StorageSpec.from_url(url, checksum=checksum)
        url = params.text("URL")
        params.done()
        return StorageSpec.inline(parse_data_url(url, field=params.at("URL")))
    except ValidationError as exc:
        if exc.field and exc.field.startswith(doc.path):
            raise
        name = {"cid": "CID", "url": "URL", "data": "URL", "checksum": "Checksum"}.get(
            exc.field or "", exc.field or ""
        )
        raise fail(f"{params.path}.{name}".rstrip("."), message_of(exc)) from None


def source_to_v1(source: StorageSpec) -> dict[str, Any]:
    if source.type == "ipfs":
        params: dict[str, Any] = {"CID": source.cid}
        if source.path:
            params["Path"] = source.path
        return {"Type": "ipfs", "Params": params}
    if source.type == "url":
        params = {"URL": source.url}
        if source.checksum:
            params["Checksum"] = source.checksum
        return {"Type": "urlDownload", "Params": params}
    if source.type == "inline":
        return {"Type": "inline", "Params": {"URL": data_url(source.data or b"")}}
    return {"Type": source.type, "Params": {}}


def input_from_v1(doc: Doc, warnings: list[str]) -> InputSpec:
    """An ``InputSource`` (``Source``, ``Target``, ``Alias``) as our InputSpec."""
    alias = doc.text("Alias")
    target = doc.text("Target")
    source = source_from_v1(doc.doc("Source"))
    doc.done()
    if alias:
        warnings.append(f"{doc.at('Alias')}: input aliases are not kept ({alias!r})")
    if not target:
        raise fail(doc.at("Target"), "an input needs a Target path")
    try:
        return InputSpec(source, target)
    except ValidationError as exc:
        raise fail(doc.at("Target"), message_of(exc)) from None


def input_to_v1(spec: InputSpec) -> dict[str, Any]:
    return {"Source": source_to_v1(spec.source), "Target": spec.target, "Alias": ""}
