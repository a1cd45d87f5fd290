"""ContactsService."""

from __future__ import annotations

from ..storage import Storage
from ..v1 import contacts_service_pb2_grpc as pb_grpc

__all__ = ["ContactsServicer"]


class ContactsServicer(pb_grpc.ContactsServiceServicer):
    """The ContactsService RPCs."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
