"""The sidecar's ASGI app: Instasent callbacks in, `ReportProviderEvent` calls out.

Stateless: it keeps nothing. It answers 2xx only after the server has applied (and stored) the
event; when the server cannot be reached it answers 503, and Instasent retries with backoff. Every
answer comes within 5 s, and the callback secret never appears in a log line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.protobuf import timestamp_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import derive_provider_events_key
from ..config import Config
from ..crypto import load_or_create_secret_key
from ..v1 import sms_channel_service_pb2 as pb
from ..v1 import sms_channel_service_pb2_grpc as pb_grpc

__all__ = ["MAX_BODY", "create_app", "redact"]

log = logging.getLogger("smschannel.sidecar")

MAX_BODY = 64 * 1024
RPC_TIMEOUT = 4.0  # under Instasent's 5 s, with room to answer
_STORE = re.compile(r"[a-z][a-z0-9-]{0,62}")
_SECRET_IN_PATH = re.compile(r"(/instasent/callbacks/[^/]+/)[^/?]+")


def redact(path: str) -> str:
    """The path with the callback secret masked."""
    return _SECRET_IN_PATH.sub(r"\1***", path)


def _grpc_target(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    """JSON or form-encoded; ValueError when it is neither an object nor a form."""
    text = body.decode("utf-8")
    if "json" in content_type or text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data
    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    return dict(pairs)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value).strip()
    raise ValueError(f"{key} must be a string")


def _event_time(value: str) -> timestamp_pb2.Timestamp | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # an odd timestamp is not worth refusing the event for
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t if t.tzinfo else t.replace(tzinfo=UTC))
    return ts


def create_app(config: Config) -> Starlette:
    """The sidecar for the server at `config.grpc_addr`."""
    key = derive_provider_events_key(load_or_create_secret_key(config.secret_key, config.secret_key_file))
    metadata = (("authorization", f"Bearer {key}"),)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with grpc.aio.insecure_channel(_grpc_target(config.grpc_addr)) as channel:
            state["stub"] = pb_grpc.SmsChannelServiceStub(channel)
            yield

    async def callback(request: Request) -> Response:
        store, secret = request.path_params["store"], request.path_params["secret"]
        if not _STORE.fullmatch(store) or len(secret) > 200:
            return JSONResponse({"error": "not found"}, 404)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
        try:
            data = _parse(body, request.headers.get("content-type", ""))
            status = _text(data, "status")
            provider_id, client_id = _text(data, "id"), _text(data, "clientId")
        except (ValueError, UnicodeDecodeError) as e:
            return JSONResponse({"error": f"malformed callback: {e}"}, 400)
        if not status or not (provider_id or client_id):
            return JSONResponse({"error": "a callback needs a status and an id or clientId"}, 400)
        report = pb.ReportProviderEventRequest(
            parent=f"stores/{store}",
            callback_secret=secret,
            provider_id=provider_id,
            client_id=client_id,
            status=status,
            code=_text(data, "code"),
            event_time=_event_time(_text(data, "eventAt")),
            inbound_text=_text(data, "message"),
        )
        try:
            answer = await state["stub"].ReportProviderEvent(report, metadata=metadata, timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.NOT_FOUND:
                return JSONResponse({"error": "not found"}, 404)
            if e.code() is grpc.StatusCode.INVALID_ARGUMENT:
                return JSONResponse({"error": e.details()}, 400)
            log.warning("server unavailable: asking Instasent to retry", extra={"code": e.code().name})
            return JSONResponse({"error": "try again later"}, 503, headers={"Retry-After": "5"})
        outcome = pb.ProviderEventOutcome.Name(answer.outcome).removeprefix("PROVIDER_EVENT_OUTCOME_").lower()
        return JSONResponse({"outcome": outcome})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/instasent/callbacks/{store}/{secret}", callback, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_AccessLog)
    return app


class _AccessLog:
    """One JSON log line per request, with the callback secret redacted."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            log.info(
                "http",
                extra={
                    "method": scope["method"],
                    "path": redact(scope["path"]),
                    "status": status,
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                },
            )
