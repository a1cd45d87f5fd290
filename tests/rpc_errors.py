"""Helpers to read google.rpc details off an AioRpcError."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


def status_of(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The rich status carried in the trailers."""
    call = _Call(err)
    status = rpc_status.from_call(call)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status on {err.code()}: {err.details()}"
    return status


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """field → description of the BadRequest detail."""
    for detail in status_of(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            return {v.field: v.description for v in br.field_violations}
    raise AssertionError("no BadRequest detail")


def reason(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason."""
    for detail in status_of(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


class _Call:
    """Adapts AioRpcError to what rpc_status.from_call reads."""

    def __init__(self, err: grpc.aio.AioRpcError) -> None:
        self._err = err

    def code(self) -> grpc.StatusCode:
        return self._err.code()

    def details(self) -> str | None:
        return self._err.details()

    def trailing_metadata(self) -> object:
        return self._err.trailing_metadata()
