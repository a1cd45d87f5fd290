"""An attempt whose answer was lost (a timeout after Instasent created the SMS), then the contact's number
changed: the retry's "clientId already used" means the SMS went to the old number, and the message must
say so, so that a later `rejected` for it reaches the old number, not the contact's new one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from smschannel.crypto import TokenCipher
from smschannel.domain.contacts import ContactPatch
from smschannel.domain.enums import ActivitySource, MessageStatus, MobilePhoneStatus, SmsSubscriptionStatus, SmsType
from smschannel.domain.messages import SmsContent
from smschannel.domain.stores import ApiKey, Store
from smschannel.instasent.client import Accepted, Account, ProviderError, SmsItem
from smschannel.operations.channel import ChannelChanges, ChannelOps
from smschannel.operations.contacts import ContactOps
from smschannel.operations.dispatcher import Dispatcher
from smschannel.operations.provider_events import ProviderEvent, ProviderEvents
from smschannel.operations.sending import Sender, SendRequest
from smschannel.storage.sqlite import SqliteStorage

from .conftest import database_at

OLD, NEW = "+34612345678", "+34622222222"


class LosesFirstAnswer:
    """Holds SMS by clientId as Instasent does; the first call times out after the SMS was created."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, str]] = {}  # clientId → (Instasent's id, to)

    async def account(self, token: str) -> Account:
        return Account(10.0)

    async def send(self, token: str, item: SmsItem) -> Accepted:
        if item.client_id in self.held:
            return Accepted(item.client_id, self.held[item.client_id][0], duplicate=True)
        self.held[item.client_id] = (f"p{len(self.held)}", item.to)
        if len(self.held) == 1:
            raise ProviderError(0, "timed out")
        return Accepted(item.client_id, self.held[item.client_id][0])

    async def sent_to(self, token: str, provider_id: str) -> str:
        return next(to for pid, to in self.held.values() if pid == provider_id)


async def test_a_lost_answer_then_a_new_number_records_where_the_sms_went(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(database_at(tmp_path, "lost.db"))
    try:
        now = datetime.now(UTC)
        store = Store("s1", "S", SmsSubscriptionStatus.SUBSCRIBED, now)
        await storage.stores.create(store, ApiKey("s1", "k1", "k", "h" * 64, now))
        instasent = LosesFirstAnswer()
        channel = ChannelOps(storage.channel_configs, TokenCipher("k" * 32), instasent, "http://x")  # type: ignore[arg-type]
        await channel.update(
            "s1", ChannelChanges(api_token="tok-123456789", default_country="ES", default_sender="Acme")
        )
        contacts = ContactOps(storage)
        await contacts.create(store, "c1", ContactPatch(mobile_phone=OLD), ActivitySource.API)
        await storage.sms_contents.create(SmsContent("s1", "t1", "T", "Hola", now, now, 1))
        message = await Sender(storage, channel).send(
            SendRequest("s1", "t1", SmsType.TRANSACTIONAL, {}, contact_id="c1", request_id="r1")
        )
        dispatcher = Dispatcher(storage, channel, instasent, asyncio.Event())  # type: ignore[arg-type]
        await dispatcher._deliver("s1", [message], None)  # created at Instasent for OLD; the answer is lost
        await contacts.update(store, "c1", ContactPatch(mobile_phone=NEW), "", ActivitySource.API)
        waiting = await storage.messages.get("s1", message.id)
        assert waiting is not None
        await dispatcher._deliver("s1", [waiting], None)  # the retry: "clientId already used"
        sent = await storage.messages.get("s1", message.id)
        assert sent is not None
        assert (sent.status, sent.recipient) == (MessageStatus.SENT, OLD)  # where Instasent's SMS went
        secret = (await channel.get("s1")).callback_secret
        events = ProviderEvents(storage, channel, contacts)
        await events.apply(ProviderEvent("s1", secret, "rejected", provider_id=sent.provider_id, client_id=sent.id))
        contact = await storage.contacts.get("s1", "c1")
        assert contact is not None
        assert (contact.mobile_phone, contact.mobile_phone_status) == (NEW, MobilePhoneStatus.ACTIVE)
    finally:
        await storage.close()
