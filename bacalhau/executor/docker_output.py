"""A Docker container's live output: its stdout and stderr, from the engine's log stream,
handed to the execution's output sink as the container writes them.

Two worker threads per container (one per stream, each on ``logs(follow=True)``, which
the SDK reads without a socket timeout). They are a view only: the results are collected
from the engine once the container stopped, and a failure here just ends the view.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .base import OutputSink

__all__ = ["STOP_FOLLOW", "Following", "follow_output"]

log = logging.getLogger("bacalhau.executor.docker")

STREAMS: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")
STOP_FOLLOW = 5.0
"""Seconds the threads get, once the container stopped, to pass on the rest."""


def _close(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


def follow_stream(
    client: Any, container: str, *, stdout: bool, sink: Callable[[bytes], None], opened: list[Any]
) -> None:
    """(worker thread) Hand ``sink`` one of the container's streams from its start until
    the container stops. The stream goes in ``opened`` so it can be closed from outside
    to end this call early."""
    try:
        stream = client.api.logs(
            container, stdout=stdout, stderr=not stdout, stream=True, follow=True
        )
    except Exception as exc:
        log.debug("no live output of %s: %s", container[:12], exc)
        return
    opened.append(stream)
    try:
        for chunk in stream:
            sink(chunk)
    except Exception as exc:  # closed under us, or the engine went away
        log.debug("live output of %s ended: %s", container[:12], exc)
    finally:
        _close(stream)


@attrs.define(eq=False, kw_only=True)
class Following:
    """The live-output threads of one container, in a task group of the caller's."""

    tg: anyio.abc.TaskGroup
    opened: list[Any] = attrs.Factory(list)
    running: int = 0
    done: anyio.Event = attrs.Factory(anyio.Event)

    async def run(
        self, client: Any, container: str, name: Literal["stdout", "stderr"], sink: OutputSink
    ) -> None:
        self.running += 1
        try:
            follow = functools.partial(
                follow_stream,
                client,
                container,
                stdout=name == "stdout",
                sink=functools.partial(sink, name),
                opened=self.opened,
            )
            await anyio.to_thread.run_sync(follow, abandon_on_cancel=True)
        finally:
            self.running -= 1
            if not self.running:
                self.done.set()

    async def stop(self) -> None:
        """Let the threads pass on what the engine still holds (bounded), then end them."""
        with anyio.CancelScope(shield=True):
            if self.running:
                with anyio.move_on_after(STOP_FOLLOW):
                    await self.done.wait()
            for stream in self.opened:
                _close(stream)
            self.tg.cancel_scope.cancel()


def follow_output(
    tg: anyio.abc.TaskGroup, client: Any, container: str, sink: OutputSink | None
) -> Following:
    """Start streaming the container's stdout and stderr into ``sink`` (nothing when
    ``sink`` is None); call :meth:`Following.stop` once the container has stopped."""
    following = Following(tg=tg)
    if sink is not None:
        for name in STREAMS:
            tg.start_soon(following.run, client, container, name, sink)
    return following
