"""What a node costs to make is paid once, or only when used (a 1,000-node network)."""

from __future__ import annotations

import os

from multiformats import multibase

from bacalhau.executor.wasm import WasmExecutor
from bacalhau.identity import Identity, node_id_from_public_key, public_key_from_node_id


def test_node_ids_are_the_libp2p_peer_ids_multibase_makes() -> None:
    for key in [bytes(32), b"\xff" * 32, *(os.urandom(32) for _ in range(200))]:
        expected = str(multibase.encode(b"\x00\x24\x08\x01\x12\x20" + key, "base58btc"))[1:]
        node_id = node_id_from_public_key(key)
        assert node_id == expected
        assert public_key_from_node_id(node_id) == key
    assert Identity.generate().node_id.startswith("12D3KooW")


def test_the_wasm_adapter_is_compiled_at_first_use_only() -> None:
    executor = WasmExecutor()
    assert executor._adapter is None  # a node that runs no WASM job never compiles it
    adapter = executor.adapter
    assert adapter is executor.adapter  # once
