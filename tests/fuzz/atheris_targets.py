"""Coverage-guided fuzzing (atheris) of every decoder of untrusted bytes.

    python tests/fuzz/atheris_targets.py TARGET -runs=50000

TARGET is one of: wire, spec, dagpb, car. Any exception other than our named
errors is a crash, which atheris reports with the input that caused it.
"""

from __future__ import annotations

import io
import json
import sys

import atheris

with atheris.instrument_imports():
    from bacalhau.convert import from_json_data
    from bacalhau.errors import BacalhauError
    from bacalhau.live.codec import decode_reply
    from bacalhau.live.frames import LogFrame
    from bacalhau.live.node import LogChunkLive
    from bacalhau.models import JobSpec
    from bacalhau.protocol.messages import decode_message
    from bacalhau.storage.ipfs.car import iter_car
    from bacalhau.storage.ipfs.car_stream import CarParser
    from bacalhau.storage.ipfs.dagpb import decode_node
    from bacalhau.storage.ipfs.exchange_wire import parse_want_reply
    from bacalhau.storage.ipfs.unixfs import decode_unixfs
    from bacalhau.transport.gossip_frames import decode_parts
    from bacalhau.wire import decode_envelope


def wire(data: bytes) -> None:
    try:
        env = decode_envelope(data)
        decode_message(env.kind, env.body)
    except BacalhauError:
        pass
    # the hand-written readers of peer bytes ride along (no extra process start-up)
    half = len(data) // 2
    parse_want_reply(data, max_items=256)  # None or a parse; never raises
    for check in (
        lambda: decode_parts([memoryview(data[:half]), memoryview(data[half:])]),
        lambda: decode_reply(data),
        lambda: LogChunkLive.parse(data),
        lambda: LogFrame.parse(data),
    ):
        try:
            check()
        except BacalhauError:
            pass


def spec(data: bytes) -> None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    try:
        from_json_data(value, JobSpec)
    except BacalhauError:
        pass


def dagpb(data: bytes) -> None:
    try:
        node = decode_node(data)
        decode_unixfs(node.data or b"")
    except BacalhauError:
        pass


def car(data: bytes) -> None:
    try:
        _, blocks = iter_car(io.BytesIO(data))
        for _ in blocks:
            pass
    except BacalhauError:
        pass
    try:  # the push parser behind Client.download, fed in two pieces
        parser = CarParser()
        parser.feed(data[: len(data) // 2])
        parser.feed(data[len(data) // 2 :])
        parser.close()
    except BacalhauError:
        pass


TARGETS = {"wire": wire, "spec": spec, "dagpb": dagpb, "car": car}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
