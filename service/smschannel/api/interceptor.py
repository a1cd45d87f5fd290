"""Around every smschannel.v1 RPC: request id, authentication, error mapping, access log."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..auth import Principal, Role, hash_key
from ..errors import DomainError, InvalidArgument, Unauthenticated
from ..jsonlog import request_id_var
from ..names import new_id
from ..storage import Storage
from .status import internal_status, to_status, with_request_id

__all__ = ["ApiInterceptor", "Authenticator", "current_principal"]

log = logging.getLogger("smschannel.rpc")
SLOW_CALL = 1.0  # seconds: a successful call this slow is logged at INFO

_principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served (set by the interceptor)."""
    return _principal_var.get()


class Authenticator:
    """Turns an `authorization: Bearer <key>` header into a Principal."""

    _CACHE_SIZE = 10_000

    def __init__(self, storage: Storage, admin_key_hash: str, provider_events_key_hash: str) -> None:
        self._storage = storage
        self._fixed = {
            admin_key_hash: Principal(Role.ADMIN),
            provider_events_key_hash: Principal(Role.PROVIDER_EVENTS),
        }
        # Keys are immutable once created (and never revoked), so a bounded cache of the header a
        # caller sends → its principal is safe; it spares a SHA-256 and a lookup on every call.
        self._cache: dict[str, Principal] = {}

    async def authenticate(self, header: str | None) -> Principal:
        """The principal for a header, or Unauthenticated."""
        known = self._cache.get(header) if header else None
        if known is not None:
            return known
        if not header:
            raise Unauthenticated("missing authorization metadata: send 'authorization: Bearer <api key>'")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
        digest = hash_key(key.strip())
        principal = self._fixed.get(digest)
        if principal is None:
            found = await self._storage.stores.find_api_key(digest)
            if found is None:
                raise Unauthenticated("invalid API key")
            principal = Principal(Role.STORE, found.store_id)
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        self._cache[header] = principal
        return principal


Observer = Callable[[str, grpc.StatusCode, float], None]


class ApiInterceptor:
    """Wraps each smschannel.v1 handler once, at registration; health and reflection stay untouched.

    It does what a `grpc.aio.ServerInterceptor` would, without the interceptor pipeline that
    grpc.aio runs on every call (a measurable share of a small RPC such as GetContact): use
    `register(add_XServicer_to_server, servicer, server)` instead of calling the add function."""

    def __init__(self, authenticator: Authenticator, observe: Observer | None = None) -> None:
        self._auth = authenticator
        self._observe = observe

    def register(self, add: Callable[[Any, Any], None], servicer: object, server: grpc.aio.Server) -> None:
        """Register `servicer` on `server` through `add`, with every handler wrapped."""
        add(servicer, _Registrar(self, server))

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler with request id, auth, error mapping and the access log around it."""
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary, stream=False),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(method, handler.stream_unary, stream=True),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{method}: smschannel.v1 has no streaming responses to wrap")

    def _wrap(
        self, method: str, behavior: Callable[[Any, Any], Awaitable[Any]], *, stream: bool
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            authorization = request_id = None
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    authorization = value
                elif key == "x-request-id":
                    request_id = value
            request_id = str(request_id or new_id())  # no system call, unlike secrets
            request_id_var.set(request_id)
            context.set_trailing_metadata((("x-request-id", request_id),))
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                _principal_var.set(await self._auth.authenticate(authorization))
                if stream:
                    request = _well_formed(request)
                elif isinstance(request, _Malformed):
                    raise request.error()
                return await behavior(request, context)
            except DomainError as e:
                status = to_status(e)
                code = status.code
                await context.abort_with_status(with_request_id(status, request_id))
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client went away (or the server is stopping)
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error", extra={"method": method})
                await context.abort_with_status(with_request_id(internal_status(request_id), request_id))
            finally:
                elapsed = time.perf_counter() - start
                if self._observe is not None:
                    self._observe(method, code, elapsed)
                # Errors and slow calls at INFO; every call at DEBUG. A line per successful call cost a
                # GetContact a fifth of its CPU (bench/get_contact), and the metrics count them all.
                level = logging.INFO if code is not grpc.StatusCode.OK or elapsed >= SLOW_CALL else logging.DEBUG
                if log.isEnabledFor(level):
                    log.log(level, "rpc", extra={"method": method, "code": code.name, "ms": round(elapsed * 1000, 3)})

        return wrapped


class _Malformed:
    """What a request that does not parse becomes, so that the call can answer INVALID_ARGUMENT."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def error(self) -> InvalidArgument:
        return InvalidArgument("request", f"the request is not a valid message of this method: {self.reason}")


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """The method's deserializer, answering _Malformed instead of raising: grpc would otherwise end
    the call UNKNOWN with the name of a Python exception (a malformed message, a string not UTF-8)."""
    assert deserialize is not None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # google.protobuf.message.DecodeError, UnicodeDecodeError, ...
            return _Malformed("malformed protobuf" if "Decode" in type(e).__name__ else type(e).__name__)

    return parse


async def _well_formed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that raises INVALID_ARGUMENT at the first message that does not parse."""
    async for request in requests:
        if isinstance(request, _Malformed):
            raise request.error()
        yield request


class _Registrar:
    """Stands in for the server in a generated `add_*Servicer_to_server`, wrapping each handler."""

    def __init__(self, interceptor: ApiInterceptor, server: grpc.aio.Server) -> None:
        self._interceptor = interceptor
        self._server = server

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: the same handlers arrive, wrappable, in add_registered_method_handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """Wrap and register on the real server."""
        wrapped = {name: self._interceptor.wrap_handler(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)
