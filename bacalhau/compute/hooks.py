"""External bid hooks that node operators write: an HTTP endpoint or a program.

Both receive the job as JSON (``{"job_id", "requester_id", "node_id", "spec"}``)
and answer ``{"shouldBid": bool, "reason": str}``. For a program (run through
the shell), exit code 0 means yes unless its stdout's JSON says otherwise. A
hook that times out, fails, or answers something else means *no bid*, with the
reason, so a broken hook can never make a node take work it was told to refuse.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import anyio
import attrs
import httpx

from ..convert import to_json_data
from .bidding import BidRequest, BidResponse, BidStrategy
from .capacity import ComputeConfig

__all__ = ["ExecHook", "HttpHook", "hook_strategies", "parse_hook_reply"]

MAX_REPLY = 64 * 1024


def _payload(request: BidRequest) -> dict[str, Any]:
    return {
        "job_id": request.job_id,
        "requester_id": request.requester_id,
        "node_id": request.node_id,
        "spec": to_json_data(request.spec),
    }


def parse_hook_reply(raw: bytes, *, default: bool | None = None) -> BidResponse:
    """Read a hook's ``{"shouldBid": bool, "reason": str}``; garbage means no."""
    if len(raw) > MAX_REPLY:
        return BidResponse(bid=False, reason=f"hook reply too large ({len(raw)} bytes)")
    text = raw.decode("utf-8", "replace").strip()
    if not text and default is not None:
        return BidResponse(bid=default, reason="")
    try:
        data = json.loads(text)
    except ValueError:
        return BidResponse(bid=False, reason=f"hook answered garbage: {text[:80]!r}")
    if not isinstance(data, dict) or not isinstance(data.get("shouldBid"), bool):
        return BidResponse(bid=False, reason=f"hook reply lacks a boolean shouldBid: {text[:80]!r}")
    reason = data.get("reason", "")
    return BidResponse(bid=data["shouldBid"], reason=str(reason)[:500] if reason else "")


@attrs.frozen(kw_only=True)
class HttpHook:
    """POST the job to ``url``; the JSON reply decides."""

    url: str
    timeout: float = 5.0
    label: str = "probe"

    async def decide(self, request: BidRequest) -> BidResponse:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=_payload(request))
        except httpx.HTTPError as exc:
            return BidResponse(
                bid=False, reason=f"{self.label} {self.url} failed: {type(exc).__name__}"
            )
        if response.status_code != 200:
            return BidResponse(
                bid=False, reason=f"{self.label} {self.url} answered HTTP {response.status_code}"
            )
        answer = parse_hook_reply(response.content)
        return attrs.evolve(
            answer, reason=answer.reason or f"{self.label} said {'yes' if answer.bid else 'no'}"
        )


@attrs.frozen(kw_only=True)
class ExecHook:
    """Run ``command`` (through the shell) with the job as JSON on stdin."""

    command: str
    timeout: float = 5.0
    label: str = "probe"

    async def decide(self, request: BidRequest) -> BidResponse:
        data = json.dumps(_payload(request)).encode()
        try:
            with anyio.fail_after(self.timeout):
                code, stdout = await _run_hook(self.command, data)
        except TimeoutError:
            return BidResponse(
                bid=False, reason=f"{self.label} {self.command!r} timed out after {self.timeout:g}s"
            )
        except OSError as exc:
            return BidResponse(
                bid=False, reason=f"{self.label} {self.command!r} could not run: {exc}"
            )
        if code != 0:
            exited = f"{self.label} exited with {code}"
            if not stdout.strip():
                return BidResponse(bid=False, reason=exited)
            answer = parse_hook_reply(stdout, default=False)
            return BidResponse(
                bid=False,
                reason=answer.reason
                if answer.reason and not answer.bid and "garbage" not in answer.reason
                else exited,
            )
        return parse_hook_reply(stdout, default=True)


async def _run_hook(command: str, data: bytes) -> tuple[int, bytes]:
    """Run ``command`` through the shell with ``data`` on stdin; (exit code, stdout).
    A program that exits without reading its input is fine; stdout is capped."""
    async with await anyio.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            await proc.stdin.send(data)
            await proc.stdin.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        out = bytearray()
        async for chunk in proc.stdout:
            if len(out) <= MAX_REPLY:
                out += chunk
        return await proc.wait(), bytes(out)


def hook_strategies(config: ComputeConfig) -> list[BidStrategy]:
    out: list[BidStrategy] = []
    if config.probe_http:
        out.append(HttpHook(url=config.probe_http, timeout=config.probe_timeout))
    if config.probe_exec:
        out.append(ExecHook(command=config.probe_exec, timeout=config.probe_timeout))
    return out
