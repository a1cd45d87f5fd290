"""The sidecar's ASGI app."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..config import Config

__all__ = ["create_app"]

log = logging.getLogger("smschannel.sidecar")


def create_app(config: Config) -> Starlette:
    """The sidecar for one server."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"])])
