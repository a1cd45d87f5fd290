"""Client of the SMS channel service.

    async with Client("127.0.0.1:50051", api_key) as client:
        store = await client.sms.GetStore(sms.GetStoreRequest(name="stores/acme"))

Every call carries the API key and a deadline; UNAVAILABLE (and only it) is retried with backoff by
gRPC's own retry policy, so a call that reached the server is never repeated by the client.
The generated modules are `smschannel_client.v1.*_pb2` (messages) and `*_pb2_grpc` (stubs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

import grpc

from .v1 import contacts_service_pb2_grpc, sms_channel_service_pb2_grpc, workflow_service_pb2_grpc

__all__ = ["Client", "retry_policy"]

_SERVICES = ("smschannel.v1.SmsChannelService", "smschannel.v1.ContactsService", "smschannel.v1.WorkflowService")


def retry_policy(max_attempts: int = 4) -> str:
    """A gRPC service config retrying UNAVAILABLE only, with exponential backoff."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": s} for s in _SERVICES],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class _CallDefaults:
    """Adds `authorization: Bearer <key>` and a default deadline to every call."""

    def __init__(self, api_key: str, timeout: float) -> None:
        self._auth = ("authorization", f"Bearer {api_key}")
        self._timeout = timeout

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or [])
        if not any(k == "authorization" for k, _ in metadata):
            metadata.append(self._auth)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout if details.timeout is not None else self._timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files each interceptor under one kind only, so each kind gets its own small class.
class _UnaryDefaults(_CallDefaults, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamDefaults(_CallDefaults, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class Client:
    """The three service stubs on one channel, with auth, deadlines and retry on UNAVAILABLE."""

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = [("grpc.enable_retries", 1), ("grpc.service_config", retry_policy())]
        interceptors = [_UnaryDefaults(api_key, timeout), _StreamDefaults(api_key, timeout)]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        self.sms = sms_channel_service_pb2_grpc.SmsChannelServiceStub(self.channel)
        self.contacts = contacts_service_pb2_grpc.ContactsServiceStub(self.channel)
        self.workflows = workflow_service_pb2_grpc.WorkflowServiceStub(self.channel)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
