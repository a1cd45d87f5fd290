"""The sidecar's ASGI app: Instasent callbacks in, `ReportProviderEvent` calls out.

Stateless: it keeps nothing. It answers 2xx only after the server has applied (and stored) the
event; when the server cannot be reached it answers 503, and Instasent retries with backoff. Every
answer comes within 5 s and is short JSON (`{"outcome": ...}` or `{"error": ...}`, never a
traceback nor an echo of the input), and the callback secret never appears in a log line.

The secret is judged before the body. Only the server knows secrets, and it checks the store and
the secret before any field of an event (`ProviderEvents.apply`), so a callback goes:

1. The path: a store id and a secret of the right shape, else 404 at once. The body's size: over
   MAX_BODY is 413, for everyone, before anything is read (a limit of the transport, the same with
   or without the secret).
2. The body, bounded, is read into a callback, but a body that is not one is not answered yet.
3. The server is asked: with the callback, or, for a body that is not one, with the store and the
   secret alone (an empty status). A wrong store or secret is NOT_FOUND → 404, whatever the body;
   only behind the right secret does a malformed body get its 400. Whoever lacks the secret learns
   nothing of how bodies are read, and any body costs them the same one call.

A body is malformed (400) when it is not UTF-8; not a JSON object nor a form; a JSON object nested
deeper than the parser's recursion limit; a JSON object or a form with a repeated key; or when
`status`, `id`, `clientId`, `code` or `message` is not a string (or an integer) of the expected shape:
`status` a word of at most 32 letters, ids at most 100 printable ASCII characters, no NUL or lone
surrogate anywhere. It needs a status and an id or clientId. An `eventAt` that is not an ISO 8601
time a Timestamp can hold once in UTC (years 1 to 9999) is ignored, not refused: the event still
applies, at the server's time, since a 400 would have Instasent retry a report we can apply.
A status the server does not know is its to judge: it answers `ignored` (a 2xx, see
`ProviderEvents`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import grpc
import orjson
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import derive_provider_events_key
from ..config import Config
from ..crypto import load_or_create_secret_key
from ..names import StoreName
from ..v1 import sms_channel_service_pb2 as pb
from ..v1 import sms_channel_service_pb2_grpc as pb_grpc
from .batcher import Batcher

__all__ = ["MAX_BODY", "create_app", "redact"]

log = logging.getLogger("smschannel.sidecar")

MAX_BODY = 64 * 1024
RPC_TIMEOUT = 4.0  # under Instasent's 5 s, with room to answer
SLOW_REQUEST = 1.0  # seconds: an answered callback this slow is logged at INFO
_STORE = re.compile(r"[a-z][a-z0-9-]{0,62}")
_SECRET = re.compile(r"[!-~]{1,200}")  # printable ASCII: what a URL path segment can carry
_STATUS = re.compile(r"[A-Za-z][A-Za-z_-]{0,31}")
_ID = re.compile(r"[!-~]{1,100}")
_CODE = re.compile(r"[ -~]{1,64}")
_TEXT = re.compile(r"[^\x00\ud800-\udfff]*")  # what protobuf can carry, and no NUL for storage
# Up to `callbacks` (any case, anywhere: a proxy prefix, doubled slashes) and a store id followed by
# a slash. The store part is case-sensitive: a secret is never all lowercase.
_KEPT_BEFORE_SECRET = re.compile(r".*?(?i:callbacks)(?:/[a-z][a-z0-9-]{0,62}(?=/))?", re.DOTALL)
_FIRST_SEGMENT = re.compile(r"/?[^/?]*")


def redact(path: str) -> str:
    """The path with whatever may be a callback secret masked.

    Everything after `callbacks/{store}` is masked (after `callbacks` when no store id follows),
    whatever its shape: empty or extra segments, encoded slashes, dot segments, a query. Other paths
    keep their first segment only: a path that is not quite the route may still carry the secret."""
    kept = _KEPT_BEFORE_SECRET.match(path) or _FIRST_SEGMENT.match(path)
    head = kept.group() if kept else ""
    return path if path[len(head) :] in ("", "/") else head + "/***"


def _grpc_target(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"


class _Malformed(Exception):
    """Why a body is not a callback: a few fixed words for the 400, never the input itself."""


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):  # which one would count is a guess: refuse it
        raise _Malformed("a key appears twice")
    return data


def _fields(body: bytes, content_type: str) -> dict[str, Any]:
    """The body's fields: a JSON object or a form."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("the body is not UTF-8") from None
    if "json" in content_type.lower() or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text, object_pairs_hook=_no_repeats)
        except RecursionError:  # the scanner's own guard against deep nesting: cheap, and no callback is
            raise _Malformed("the JSON is nested too deep") from None
        except ValueError:  # includes integers of more than 4,300 digits
            raise _Malformed("the body is not JSON") from None
        if not isinstance(data, dict):
            raise _Malformed("the body must be a JSON object")
        return data
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _Malformed("the body is neither JSON nor a form") from None
    return _no_repeats(pairs)


def _field(data: dict[str, Any], key: str, shape: re.Pattern[str]) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Malformed(f"{key} must be a string")
    value = value.strip()
    if value and not shape.fullmatch(value):
        raise _Malformed(f"{key} is malformed")
    return value


def _event_time(value: object) -> timestamp_pb2.Timestamp | None:
    """`eventAt` as a Timestamp, or None (the server's time stands in) when it is no time we can hold."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        # In UTC here, where years 1 and 9999 overflow with an offset, not in FromDatetime.
        t = (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def _report(body: bytes, content_type: str) -> pb.ReportProviderEventRequest:
    """The callback in `body`, without its store and secret; _Malformed when it is not one."""
    data = _fields(body, content_type)
    report = pb.ReportProviderEventRequest(
        status=_field(data, "status", _STATUS),
        provider_id=_field(data, "id", _ID),
        client_id=_field(data, "clientId", _ID),
        code=_field(data, "code", _CODE),
        event_time=_event_time(data.get("eventAt")),
        inbound_text=_field(data, "message", _TEXT),
    )
    if not report.status or not (report.provider_id or report.client_id):
        raise _Malformed("a callback needs a status and an id or clientId")
    return report


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason[:200]}, status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no route, wrong method), as short JSON like every other answer."""
    if isinstance(exc, HTTPException):
        return _error(exc.status_code, exc.detail.lower(), exc.headers)
    return _error(500, "internal error")


def create_app(config: Config) -> ASGIApp:
    """The sidecar for the server at `config.grpc_addr`."""
    key = derive_provider_events_key(load_or_create_secret_key(config.secret_key, config.secret_key_file))
    metadata = (("authorization", f"Bearer {key}"),)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with grpc.aio.insecure_channel(_grpc_target(config.grpc_addr)) as channel:
            stub = pb_grpc.SmsChannelServiceStub(channel)

            async def send(
                batch: pb.BatchReportProviderEventsRequest, seconds: float
            ) -> pb.BatchReportProviderEventsResponse:
                answer: pb.BatchReportProviderEventsResponse = await stub.BatchReportProviderEvents(
                    batch, metadata=metadata, timeout=min(seconds, RPC_TIMEOUT)
                )
                return answer

            state["batcher"] = Batcher(send)
            yield

    async def callback(store: str, secret: str, body: bytes, content_type: str) -> _Answer:
        """A callback's answer: once the server has stored it, with the other callbacks in flight."""
        if not _STORE.fullmatch(store) or not _SECRET.fullmatch(secret):
            return _Answer(404, {"error": "not found"})
        try:
            report, malformed = _report(body, content_type), ""
        except _Malformed as e:
            # Not answered yet: the server judges the secret first (see the module's docstring).
            report, malformed = pb.ReportProviderEventRequest(), str(e)
        report.parent, report.callback_secret = str(StoreName(store)), secret
        try:
            result = await state["batcher"].report(report)
        except Exception as e:  # the batch's call failed or is late: the server is away or overloaded
            code = e.code().name if isinstance(e, grpc.aio.AioRpcError) else type(e).__name__
            log.warning("server unavailable: asking Instasent to retry", extra={"code": code})
            return _RETRY
        if result.code == code_pb2.NOT_FOUND:
            return _Answer(404, {"error": "not found"})
        if result.code == code_pb2.INVALID_ARGUMENT:
            return _Answer(400, {"error": (malformed or result.error_message or "invalid callback")[:200]})
        if result.code != code_pb2.OK:
            log.warning("callback not applied: asking Instasent to retry", extra={"code": result.code})
            return _RETRY
        if malformed:  # the server takes no empty status; were it ever to, this is still no callback
            return _Answer(400, {"error": malformed})
        return _Answer(200, {"outcome": _OUTCOME_WORDS[result.response.outcome]})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def wrong_method(request: Request) -> Response:
        raise HTTPException(405)  # POST is answered by _Callbacks before Starlette sees it

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/instasent/callbacks/{store}/{secret}", wrong_method, methods=["GET", "PUT", "PATCH", "DELETE"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
        lifespan=lifespan,
    )
    app.add_middleware(_AccessLog)
    return _Callbacks(app, callback)


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer: its status and its JSON body."""

    status: int
    body: dict[str, str]
    headers: tuple[tuple[bytes, bytes], ...] = ()


_RETRY = _Answer(503, {"error": "try again later"}, ((b"retry-after", b"5"),))
_OUTCOME_WORDS = {
    value.number: value.name.removeprefix("PROVIDER_EVENT_OUTCOME_").lower()
    for value in pb.ProviderEventOutcome.DESCRIPTOR.values
}
_CALLBACKS = "/instasent/callbacks/"


class _Callbacks:
    """The callback route, in front of Starlette: every SMS sent comes back as callbacks, and Starlette's
    request, response, routing and middleware objects cost more than the rest of a callback together
    (measured: the sidecar's CPU a callback halved). Everything else goes to Starlette."""

    def __init__(self, app: ASGIApp, callback: Callable[[str, str, bytes, str], Awaitable[_Answer]]) -> None:
        self.app = app
        self.callback = callback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(_CALLBACKS):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answer = await self._answer(path, scope, receive)
        body = orjson.dumps(answer.body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": [*headers, *answer.headers]})
        await send({"type": "http.response.body", "body": body})
        _log_request("POST", path, answer.status, start)

    async def _answer(self, path: str, scope: Scope, receive: Receive) -> _Answer:
        parts = path[len(_CALLBACKS) :].split("/")
        if len(parts) != 2:
            return _Answer(404, {"error": "not found"})
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and (len(declared) > 9 or int(declared) > MAX_BODY):
            return _Answer(413, {"error": f"body over {MAX_BODY} bytes"})
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _Answer(400, {"error": "the body was cut short"})  # nobody is left to read it
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                return _Answer(413, {"error": f"body over {MAX_BODY} bytes"})
            if not message.get("more_body"):
                break
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        return await self.callback(parts[0], parts[1], bytes(body), content_type)


def _log_request(method: str, path: str, status: int, start: float) -> None:
    """The access line: at INFO for a refused request or a slow one, at DEBUG for the others (a line a
    callback cost a seventh of the sidecar's CPU, and the server logs and counts what they did)."""
    elapsed = time.perf_counter() - start
    level = logging.INFO if status >= 400 or elapsed >= SLOW_REQUEST else logging.DEBUG
    if log.isEnabledFor(level):
        extra = {"method": method, "path": redact(path), "status": status, "ms": round(elapsed * 1000, 2)}
        log.log(level, "http", extra=extra)


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
            _log_request(scope["method"], scope["path"], status, start)
