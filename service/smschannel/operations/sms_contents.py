"""SMS content use cases: the texts that SendSms and the workflows' Send SMS nodes send."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..domain.messages import SmsContent
from ..domain.stores import Store
from ..domain.templates import validate_text
from ..domain.workflows import WorkflowState
from ..errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Violation, echo
from ..names import SmsContentName, WorkflowName
from ..storage import Positioned, Storage

__all__ = ["CONTENT_FIELDS", "SmsContentOps"]

CONTENT_FIELDS = ("display_name", "text")  # what a client writes; the rest is the service's
_PREFIX = "sms_content."  # where both Create and Update requests carry the content


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _fields(paths: Collection[str], display_name: str, text: str, current: SmsContent | None = None) -> tuple[str, str]:
    """Validated (display_name, text) for the paths given; the others stay as in `current`. Every bad
    field is reported at once, in the order of the paths, an unknown path among them."""
    violations: list[FieldViolation] = []
    new_display_name = current.display_name if current else ""
    new_text = current.text if current else ""
    for path in sorted(paths):
        if path == "display_name":
            new_display_name = display_name.strip()
            if not new_display_name or len(new_display_name) > 200:
                violations.append(FieldViolation(_PREFIX + path, "required, at most 200 characters"))
        elif path == "text":
            try:
                new_text = validate_text(_PREFIX + path, text)
            except InvalidArgument as e:
                violations.extend(e.violations)
        else:
            violations.append(FieldViolation("update_mask", f"{echo(path)} is not a writable field of SmsContent"))
    if violations:
        raise InvalidArgument.of(violations)
    return new_display_name, new_text


@dataclass
class SmsContentOps:
    """Creates, edits and deletes a store's SMS contents; a content a live workflow uses stays."""

    storage: Storage
    clock: Callable[[], datetime] = field(default=_utcnow)

    async def get(self, store: Store, content_id: str) -> SmsContent:
        """The content, or NotFound."""
        content = await self.storage.sms_contents.get(store.id, content_id)
        if content is None:
            raise NotFound(str(SmsContentName(store.id, content_id)))
        return content

    async def page(self, store: Store, after: int, limit: int) -> list[Positioned[SmsContent]]:
        """Up to `limit` contents after position `after`, oldest first (the caller makes the token)."""
        return await self.storage.sms_contents.page(store.id, after, limit)

    async def create(self, store: Store, content_id: str, display_name: str, text: str) -> SmsContent:
        """A new content; InvalidArgument naming every bad field, AlreadyExists when the id is taken."""
        now = self.clock()
        display_name, text = _fields(CONTENT_FIELDS, display_name, text)
        content = SmsContent(store.id, content_id, display_name, text, now, now)
        await self.storage.sms_contents.create(content)
        return content

    async def update(
        self, store: Store, content_id: str, etag: str, paths: Collection[str], display_name: str, text: str
    ) -> SmsContent:
        """Write the fields of `paths`; Aborted when `etag` is set and stale. A change that changes
        nothing is not written, so the etag a client holds stays good."""
        current = await self.get(store, content_id)
        if etag and etag != current.etag:
            raise Aborted(f"{SmsContentName(store.id, content_id)} changed since etag {echo(etag)}; get it again")
        display_name, text = _fields(paths, display_name, text, current)
        if (display_name, text) == (current.display_name, current.text):
            return current
        new = replace(
            current, display_name=display_name, text=text, update_time=self.clock(), version=current.version + 1
        )
        await self.storage.sms_contents.update(new, current.version)
        return new

    async def delete(self, store: Store, content_id: str, etag: str) -> None:
        """Delete a content; logged messages keep their text. Refused while an ACTIVE or PAUSED
        workflow sends or counts it (its runs would fail): pause it no more, edit or delete it first."""
        name = SmsContentName(store.id, content_id)
        users = await self._workflows_using(store.id, content_id)
        if users:
            why = f"{name} is used by {len(users)} workflow(s) that can still run: {', '.join(users[:3])}"
            violations = [Violation("CONTENT_IN_USE", user, f"sends or counts {name}") for user in users]
            raise FailedPrecondition(why, violations, reason="CONTENT_IN_USE")
        await self.storage.sms_contents.delete(store.id, content_id, etag)

    async def _workflows_using(self, store_id: str, content_id: str) -> list[str]:
        """The ACTIVE and PAUSED workflows of a store whose nodes name this content (a DRAFT's
        activation checks its contents anyway)."""
        users = []
        for state in (WorkflowState.ACTIVE, WorkflowState.PAUSED):
            after = 0
            while page := await self.storage.workflows.page(store_id, state, after, 100):
                users += [str(WorkflowName(store_id, p.item.id)) for p in page if content_id in p.item.sms_contents()]
                after = page[-1].position
        return users
