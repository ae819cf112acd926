"""The node's JSON-over-HTTP API (:mod:`.server`) and the Python client (:mod:`.client`).

Import the parts you need: ``from bacalhau.api.client import Client`` pulls in
httpx only; ``from bacalhau.api.server import serve_api`` pulls in Starlette and
uvicorn.
"""
