"""Serve an ASGI app with uvicorn inside the running event loop (tests, the demo, the fake)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

__all__ = ["serve_in_loop", "uvicorn_config"]


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """How the sidecar (and the tests' and the fake's servers) run under uvicorn: our own access log,
    and none of the per-response work nobody reads here (Server and Date headers, X-Forwarded-For
    parsing): sending a callback's answer was a fifth of the sidecar's CPU."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


@contextlib.asynccontextmanager
async def serve_in_loop(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL (port 0 picks a free port)."""
    server = uvicorn.Server(uvicorn_config(app, host, port))
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task
