"""``GET /api/v1/jobs/{job_id}/receipt``: a completed job's signed receipt.

The receipt (:class:`bacalhau.node.receipt.Receipt`) is what ``bacalhau verify``
checks offline by re-running the job. Behind the API token like every job route.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ApiError, BacalhauError, JobNotFound
from ._http import dumps, endpoint
from .schemas import API_PREFIX

__all__ = ["receipt_routes"]


def receipt_routes(api: Any) -> list[Route]:
    """The route, around the server's ``_Api`` (its node)."""
    routes = _Routes(api)
    return [Route(f"{API_PREFIX}/jobs/{{job_id}}/receipt", routes.receipt, methods=["GET"])]


class _Routes:
    def __init__(self, api: Any) -> None:
        self.api = api

    @property
    def node(self) -> Any:
        return self.api.node

    @endpoint
    async def receipt(self, request: Request) -> Response:
        from ..node.receipt import receipt_of

        job_id = self.api._job(request)
        try:
            receipt = receipt_of(self.api.node, job_id)
        except JobNotFound:
            raise
        except BacalhauError as exc:
            raise ApiError(str(exc), status=409, code="no_receipt") from None
        return Response(dumps(receipt), media_type="application/json")
