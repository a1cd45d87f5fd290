"""Workflows and their durable runs: the repository protocol and its records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..domain.messages import Message
from ..domain.workflows import Run, RunState, RunStep, Workflow, WorkflowState
from ..records import record
from .pages import Positioned

__all__ = ["BroadcastDue", "BroadcastPage", "PageSends", "RunUpdate", "RunWithSteps", "WorkflowRepository"]


@dataclass(frozen=True, slots=True)
class BroadcastDue:
    """A broadcast still turning contacts into runs: its workflow's key and version, and its cursor."""

    store_id: str
    workflow_id: str
    version: int
    after: int


@record
class BroadcastPage:
    """A broadcast's page to record with its runs: the cursor after it, and whether it was the last.
    It is recorded only while the workflow is still ACTIVE at `version`."""

    store_id: str
    workflow_id: str
    version: int
    after: int
    last: bool


@record
class PageSends:
    """A broadcast page whose runs all start with one Send SMS step, written set-wise: for each contact
    a message, a new run and its step, stamped from templates, without an object per contact.

    What the sender decides for a contact (eligibility, hold, cost as delivered...) is the same for
    every contact of a group, so each group has one template message (`templates[group]`); a
    member's own fields are stamped in: the message's id, contact, recipient (the phone judged), run
    and request id (`request_prefix` + contact id + `request_suffix`); the run's id (`run_prefix` +
    contact id) and contact. As in the object path: a request id already used stores no message (the
    step names that first one, with its outcome), and a run id already taken stores no run nor step."""

    page: BroadcastPage
    node: str  # the Send SMS node: the step's
    run: Run  # the template run once it took its step (state, node, times)
    templates: tuple[Message, ...]
    members: tuple[tuple[str, str, int, str], ...]  # (contact id, message id, group, phone judged)
    run_prefix: str
    request_prefix: str
    request_suffix: str


@record
class RunWithSteps:
    """A run with the steps it took, oldest first."""

    run: Run
    steps: list[RunStep]


@record
class RunUpdate:
    """A run's new position after a round, with the steps it took."""

    run: Run
    steps: tuple[RunStep, ...] = ()


class WorkflowRepository(Protocol):
    """Workflows and their durable runs."""

    async def create(self, wf: Workflow) -> None:
        """Store a new workflow; AlreadyExists if the id is taken."""
        ...

    async def get(self, store_id: str, workflow_id: str) -> Workflow | None:
        """The workflow, or None."""
        ...

    async def page(
        self, store_id: str, state: WorkflowState | None, after: int, limit: int
    ) -> list[Positioned[Workflow]]:
        """Workflows after position `after`, oldest first."""
        ...

    async def update(self, wf: Workflow, expected_version: int, now: datetime) -> None:
        """Replace a workflow still at `expected_version` (else Aborted); its runs follow its state."""
        ...

    async def delete(self, store_id: str, workflow_id: str, etag: str) -> None:
        """Delete a workflow and its runs."""
        ...

    async def active_for(self, store_id: str, trigger_kind: str, event_name: str = "") -> list[Workflow]:
        """ACTIVE workflows with this trigger."""
        ...

    async def broadcasts_due(self) -> list[BroadcastDue]:
        """ACTIVE broadcasts not yet through their contacts, with their cursor."""
        ...

    async def set_error(self, store_id: str, workflow_id: str, version: int, error: str, time: datetime) -> None:
        """Record why the engine could not move a workflow still at `version` (its etag stays)."""
        ...

    async def add_runs(self, runs: Sequence[RunUpdate]) -> list[Run]:
        """Store new runs with the steps they already took (ids and request ids already used are
        skipped, with their steps); returns the runs stored. A broadcast's page and a round, which
        store their messages with their runs, write through Storage.atomically (RunChanges)."""
        ...

    async def find_run_by_request(self, store_id: str, workflow_id: str, request_id: str) -> Run | None:
        """The run started by this request id."""
        ...

    async def get_run(self, store_id: str, workflow_id: str, run_id: str) -> RunWithSteps | None:
        """A run with its steps."""
        ...

    async def page_runs(
        self, store_id: str, workflow_id: str, state: RunState | None, contact_id: str | None, after: int, limit: int
    ) -> list[Positioned[Run]]:
        """Runs of a workflow, oldest first."""
        ...

    async def due_runs(self, now: datetime, limit: int) -> list[Run]:
        """Runs ready to take a step."""
        ...

    async def next_wake(self) -> datetime | None:
        """The earliest timer."""
        ...
