"""WorkflowService (its capability comes with the workflow issue: every RPC answers UNIMPLEMENTED)."""

from __future__ import annotations

from ..v1 import workflow_service_pb2_grpc as pb_grpc

__all__ = ["WorkflowServicer"]


class WorkflowServicer(pb_grpc.WorkflowServiceServicer):
    """The generated base answers UNIMPLEMENTED for every RPC; auth still applies first."""
