"""The consent model: SPEC §3, §5 and §6 as a small reference model, and a hypothesis state machine
that drives the real server, sidecar and fake Instasent with random interleavings of contact changes,
imports, contact-info upserts, workflow Update-contact nodes, callbacks, sends, broadcasts, Instasent
outages (503/429, so that consent changes land between queueing and sending) and restarts.

After each send settles, the model's send/skip must equal the message's status and what Instasent
received (to which number); after every step, every contact's phone and statuses must equal the
model's, and Instasent must have received exactly the SMS the model sent. Each example is a new store.

On SQLite the store lives on one server. On PostgreSQL (SMSCHANNEL_TEST_BACKEND=postgres) two replicas
of the server share one database, each with its sidecar: every step calls the replica it draws (`via`),
so consent changes reach one replica while the other holds the messages they concern, callbacks come
through either sidecar, and a restart restarts one replica while the other keeps running.

Some examples give the store the default quiet hours (21:00–09:00) and a frequency cap (1 newsletter
in 30 hours), and the test moves the server's clock between midday and 23:00 in Madrid (`time_passes`):
a newsletter made or due at night waits, and goes at midday only if the contact may still receive it
and the cap allows it then. The model is written from the SPEC, not from the code: where they disagree, it fails.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
import httpx
from google.protobuf import duration_pb2, field_mask_pb2
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from smschannel.asgi import serve_in_loop
from smschannel.config import Config
from smschannel.instasent.fake import FakeInstasent
from smschannel.server import App, Outbox
from smschannel.sidecar.app import create_app
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc
from smschannel.v1 import workflow_service_pb2 as wpb
from smschannel.v1 import workflow_service_pb2_grpc as wpb_grpc

from .conftest import on_postgres

T = TypeVar("T")

# Few phones and emails, so that contacts share them (a stop reaches every contact with the phone).
PHONES = ("+34600000001", "+34600000002", "+34600000003")
EMAILS = ("ana@x.co", "bea@x.co", "cris@x.co")
CONTACTS = 3  # contact ids a run may name: c0, c1, c2 (few, so that steps meet on one contact)

ACTIVE, PAUSED, REJECTED = "ACTIVE", "PAUSED", "REJECTED"
SUBSCRIBED, UNSUBSCRIBED, NONE = "SUBSCRIBED", "UNSUBSCRIBED", "NONE"
TRANSACTIONAL, NEWSLETTER = "TRANSACTIONAL", "NEWSLETTER"
KEEP = "keep"  # a field the request leaves alone
WAIT = 20.0  # seconds any one thing may take to settle
REPLICAS = 2 if on_postgres() else 1  # servers on the one database
REPLICA_LEASE = 2.0  # seconds (SMSCHANNEL_LEASE_SECONDS) of the replicas' outbox claims and engine lease
# The model's clock: hours since the epoch of the test, in Madrid time. Midday and 23:00 only, so that
# a 30-hour cap never sits near a boundary (phases are 11, 13, 24, 35... hours apart), and 23:00 is
# quiet in Madrid and in the Canaries (22:00 there), midday in neither.
MADRID = ZoneInfo("Europe/Madrid")
FIRST_DAY = datetime(2031, 1, 6, tzinfo=MADRID)  # a Monday; each example starts on a later day
CAP, CAP_HOURS = 1, 30  # one a day and a bit: a few steps reach it

_stores = itertools.count(1)
_days = itertools.count(0, 4)  # each example starts at midday of a later day than any before it
seen: Counter[str] = Counter()  # held by quiet hours, skipped by the cap: the run's report says how often
steps_run = itertools.count()  # steps taken by every example of this process (for the long run's report)


# -- the reference model (SPEC §3, §5, §6) ---------------------------------------------------------


class Refused(Exception):
    """The model says the request is refused with this gRPC code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Person:
    """A contact as the SPEC describes it: a phone, two facts about it, a subscription."""

    id: str
    email: str = ""
    phone: str = ""
    rejected: bool = False  # the provider refused the current number
    paused: bool = False  # the store paused the phone (kept whatever happens to the number)
    subscription: str = NONE

    @property
    def status(self) -> str:
        """`_mobilePhoneStatus`: REJECTED, else PAUSED, else ACTIVE; nothing without a phone."""
        if not self.phone:
            return "UNSPECIFIED"
        return REJECTED if self.rejected else PAUSED if self.paused else ACTIVE

    def changed(self, phone: str = KEEP, status: str = KEEP, subscription: str = KEEP) -> Person:
        """The contact after a change (SPEC §3), or Refused."""
        new_phone = self.phone if phone == KEEP else phone
        new = replace(self, phone=new_phone, rejected=self.rejected and new_phone == self.phone)
        if status != KEEP:
            if not new_phone:
                raise Refused("INVALID_ARGUMENT")
            if status == REJECTED:
                new.rejected = True
            elif new.rejected:
                raise Refused("FAILED_PRECONDITION")  # only a different number lifts a rejection
            else:
                new.paused = status == PAUSED
        if subscription != KEEP:
            new.subscription = subscription
        return new

    def may_receive(self, kind: str) -> bool:
        """The eligibility matrix of SPEC §5 (CONTACT mode)."""
        return self.status == ACTIVE and (kind == TRANSACTIONAL or self.subscription == SUBSCRIBED)


@dataclass
class Sms:
    """A message the test made: for a contact (CONTACT mode) or an alert phone."""

    name: str
    kind: str
    contact: str = ""
    alert: str = ""
    status: str = "QUEUED"
    recipient: str = ""  # where it went, once sent
    sent_hour: int = -1  # the model's hour it went at (the frequency cap counts those in its period)
    # While Instasent is down the outbox keeps trying, and judges the contact at each try: once the model
    # has seen the contact ineligible while the message waited, a try may have skipped it for good.
    wavered: bool = False


@dataclass
class Model:
    """The store as the SPEC says it must be."""

    people: dict[str, Person] = field(default_factory=dict)  # live contacts by id
    events: set[tuple[str, str]] = field(default_factory=set)  # (message, callback status) applied
    quiet: bool = False  # the store keeps its default quiet hours, 21:00-09:00 (TRANSACTIONAL exempt)
    capped: bool = False  # the store caps newsletters: CAP in any CAP_HOURS
    hour: int = 12  # the clock, in hours from FIRST_DAY's midnight: always hh:00 with hh 12 or 23
    sent: list[Sms] = field(default_factory=list)  # accepted by Instasent, in order

    @property
    def night(self) -> bool:
        return self.hour % 24 == 23

    def held(self, sms: Sms) -> bool:
        """Quiet hours hold it now (TRANSACTIONAL SMS are exempt by default)."""
        return self.quiet and self.night and sms.kind == NEWSLETTER

    def over_cap(self, sms: Sms) -> bool:
        """The contact got CAP newsletters (still SENT or DELIVERED) in the last CAP_HOURS."""
        if not (self.capped and sms.contact and sms.kind == NEWSLETTER):
            return False
        recent = [
            s
            for s in self.sent
            if s.contact == sms.contact
            and s.kind == NEWSLETTER
            and s.status in ("SENT", "DELIVERED")
            and self.hour - s.sent_hour < CAP_HOURS
        ]
        return len(recent) >= CAP

    def by_email(self, email: str) -> Person | None:
        return next((p for p in self.people.values() if p.email == email), None)

    def with_phone(self, phone: str) -> list[Person]:
        return [p for p in self.people.values() if p.phone == phone]

    def judge(self, sms: Sms) -> tuple[str, str]:
        """What must become of a message handed over now: (status, recipient)."""
        if sms.alert:
            return "SENT", sms.alert
        person = self.people.get(sms.contact)
        if person is None or not person.may_receive(sms.kind) or self.over_cap(sms):
            return "SKIPPED", ""
        return "SENT", person.phone


# -- the system under test, shared by every example ------------------------------------------------


@dataclass
class Replica:
    """One server and the sidecar that calls it."""

    config: Config
    app: App | None = None
    outbox: Outbox | None = None  # its outbox process's part, with SMSCHANNEL_OUTBOX=process
    sidecar_url: str = ""
    sidecar: AsyncExitStack | None = None
    channel: grpc.Channel | None = None  # the machine's, from its thread


class Stack:
    """The servers (one, or REPLICAS on one database), a sidecar calling each, and the fake Instasent,
    served in the test session's event loop; the state machine runs in a worker thread and reaches them
    over real gRPC and HTTP."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fake: FakeInstasent, configs: list[Config]) -> None:
        self.loop = loop
        self.fake = fake
        self.replicas = [Replica(config) for config in configs]
        self.restarts = 0
        self.offset = timedelta(0)  # the servers' clock: real time + offset (see set_time)
        # A drain's grace. A replica that does not hold the workflow engine's lease sleeps between its
        # tries (a quarter of the lease) and its drain waits the sleep out: a tenth of a second is
        # enough for everything else here (Instasent answers at once, the machine waits for its calls).
        self.grace = 1.0 if len(self.replicas) == 1 else 0.1

    @property
    def config(self) -> Config:
        """The first server's configuration (every replica has the same keys)."""
        return self.replicas[0].config

    async def start(self) -> None:
        """Start every server and its sidecar."""
        for replica in self.replicas:
            await self._start_server(replica)
            await self._start_sidecar(replica)

    async def stop(self) -> None:
        """Stop them all."""
        for replica in self.replicas:
            await self._stop_sidecar(replica)
            await self._stop_server(replica)

    async def _start_server(self, replica: Replica) -> None:
        """Start a server (on the port it had, after the first time), on the test's clock."""
        replica.app = await App.start(replica.config)
        replica.config = replace(replica.config, grpc_addr=f"127.0.0.1:{replica.app.port}")
        if replica.config.outbox == "process":
            replica.outbox = await Outbox.start(replica.config)
        self._apply_clock(replica)

    async def _stop_server(self, replica: Replica) -> None:
        """Stop a server: it drains as on SIGTERM."""
        if replica.outbox is not None:
            await replica.outbox.stop(grace=self.grace)
            replica.outbox = None
        if replica.app is not None:
            await replica.app.stop(grace=self.grace)
            replica.app = None

    @staticmethod
    async def _start_sidecar(replica: Replica) -> None:
        replica.sidecar = AsyncExitStack()
        replica.sidecar_url = await replica.sidecar.enter_async_context(serve_in_loop(create_app(replica.config)))

    @staticmethod
    async def _stop_sidecar(replica: Replica) -> None:
        if replica.sidecar is not None:
            await replica.sidecar.aclose()
            replica.sidecar = None

    def _apply_clock(self, replica: Replica) -> None:
        offset = self.offset

        def clock() -> datetime:
            return datetime.now(UTC) + offset

        assert replica.app is not None
        dispatcher = replica.app.dispatcher or (replica.outbox and replica.outbox.dispatcher)
        assert dispatcher is not None
        replica.app.sender.clock = dispatcher.clock = clock
        dispatcher.wakeup.set()  # what was held until now is due

    def set_time(self, when: datetime) -> None:
        """From now on every server's sending and outbox clocks read `when` (and run on from there)."""

        async def apply() -> None:
            self.offset = when - datetime.now(UTC)
            for replica in self.replicas:
                if replica.app is not None:
                    self._apply_clock(replica)

        self.run(lambda: apply())

    def run(self, make: Callable[[], Any]) -> Any:
        """Run a coroutine made by `make` in the server's loop, from the machine's thread."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(WAIT * 2)

    def restart(self, via: int = 0) -> None:
        """Stop and start one server on the same database (what a deploy does). A lone server restarts
        with its sidecar, as `make run` does; a replica restarts alone, one at a time, the others
        running on, and its sidecar (a service of its own in compose.yaml) calls it again once it is
        back."""
        replica = self._replica(via)
        alone = len(self.replicas) == 1

        async def restart() -> None:
            if alone:
                await self._stop_sidecar(replica)
            await self._stop_server(replica)
            await self._start_server(replica)
            if alone:
                await self._start_sidecar(replica)

        self.run(restart)
        self.restarts += 1
        self._close(replica)

    def _replica(self, via: int) -> Replica:
        return self.replicas[via % len(self.replicas)]

    def stubs(
        self, via: int = 0
    ) -> tuple[pb_grpc.SmsChannelServiceStub, cpb_grpc.ContactsServiceStub, wpb_grpc.WorkflowServiceStub]:
        """Stubs on a channel to the server `via` (the first one by default)."""
        replica = self._replica(via)
        if replica.channel is None:
            replica.channel = grpc.insecure_channel(replica.config.grpc_addr)
        ch = replica.channel
        return pb_grpc.SmsChannelServiceStub(ch), cpb_grpc.ContactsServiceStub(ch), wpb_grpc.WorkflowServiceStub(ch)

    def sidecar_url(self, via: int = 0) -> str:
        """The base URL of the sidecar that calls the server `via`."""
        return self._replica(via).sidecar_url

    def close_channel(self) -> None:
        for replica in self.replicas:
            self._close(replica)

    @staticmethod
    def _close(replica: Replica) -> None:
        if replica.channel is not None:
            replica.channel.close()
            replica.channel = None

    def received(self, token: str) -> list[tuple[str, str]]:
        """(clientId, to) of every SMS Instasent accepted for this token, read in the server's loop."""

        async def read() -> list[tuple[str, str]]:
            return [(r.client_id, r.to) for r in self.fake.received(token)]

        result: list[tuple[str, str]] = self.run(read)
        return result


STACK: Stack | None = None  # set by the test that runs the machine


def _code(e: grpc.RpcError) -> str:
    return e.code().name  # type: ignore[no-any-return, attr-defined]


def _enum(kind: Any, prefix: str, value: str) -> Any:
    return kind.Value(prefix + value)


def _name(kind: Any, prefix: str, value: int) -> str:
    return str(kind.Name(value)).removeprefix(prefix)


PHONE = st.sampled_from(PHONES)
MAYBE_PHONE = st.sampled_from((KEEP, "", *PHONES))
STATUS = st.sampled_from((KEEP, ACTIVE, PAUSED, REJECTED))
SUBSCRIPTION = st.sampled_from((KEEP, SUBSCRIBED, UNSUBSCRIBED, NONE))
WHO = st.integers(0, CONTACTS - 1)
KIND = st.sampled_from((TRANSACTIONAL, NEWSLETTER))
VIA = st.integers(0, REPLICAS - 1)  # the replica a step calls (and whose sidecar a callback reaches)
UPDATES = {  # the store's Update-contact workflows: event name → the change
    "pause": {"status": PAUSED},
    "activate": {"status": ACTIVE},
    "subscribe": {"subscription": SUBSCRIBED},
    "unsubscribe": {"subscription": UNSUBSCRIBED},
    "renumber": {"phone": PHONES[2]},
}


class ConsentMachine(RuleBasedStateMachine):
    """One example: a fresh store, random steps, the model checked after each."""

    def __init__(self) -> None:
        super().__init__()
        assert STACK is not None, "run through test_consent_model"
        self.stack = STACK
        self.model = Model()
        self.day = next(_days)  # the model's hour 0 is this day's midnight, after FIRST_DAY
        self.stack.set_time(self._local(self.model.hour))
        self.store = f"consent-{next(_stores)}-{uuid.uuid4().hex[:6]}"
        self.token = f"tok-{self.store}"
        self.down = False
        self.pending: list[Sms] = []  # QUEUED while Instasent is down
        self.sent = self.model.sent  # accepted by Instasent: callbacks are about these
        self.capped_now: list[Sms] = []  # skipped by the cap in the release under way
        self.next_id = 0
        self.reads = itertools.count()  # the invariants read from each replica in turn
        sms, _, workflows = self.stack.stubs()
        self.stack.run(self._add_token)
        admin = (("authorization", f"Bearer {self.stack.config.admin_key}"),)
        key = sms.CreateStore(
            pb.CreateStoreRequest(store_id=self.store, store=pb.Store(display_name="Consent")), metadata=admin
        ).api_key
        self.md = (("authorization", f"Bearer {key}"),)
        sms.UpdateSmsChannelConfig(
            pb.UpdateSmsChannelConfigRequest(
                sms_channel_config=pb.SmsChannelConfig(
                    name=f"stores/{self.store}/smsChannelConfig",
                    api_token=self.token,
                    default_country="ES",
                    default_sender="Consent",
                    quiet_hours=pb.QuietHours(),  # the model's own clock turns them on (see quiet_hours)
                )
            ),
            metadata=self.md,
        )
        self.content = sms.CreateSmsContent(
            pb.CreateSmsContentRequest(
                parent=self.parent, sms_content=pb.SmsContent(display_name="Offer", text="Oferta {{unsubscribe}}")
            ),
            metadata=self.md,
        ).name
        for event, change in UPDATES.items():
            self._workflow(
                workflows, event, wpb.Trigger(event=wpb.EventTrigger(event_name=event)), _update_node(change)
            )

    async def _add_token(self) -> None:
        self.stack.fake.add_token(self.token)

    @property
    def parent(self) -> str:
        return f"stores/{self.store}"

    def contact_name(self, contact_id: str) -> str:
        return f"{self.parent}/contacts/{contact_id}"

    def _workflow(self, stub: wpb_grpc.WorkflowServiceStub, wf_id: str, trigger: wpb.Trigger, node: wpb.Node) -> str:
        stub.CreateWorkflow(
            wpb.CreateWorkflowRequest(
                parent=self.parent,
                workflow_id=wf_id,
                workflow=wpb.Workflow(display_name=wf_id, trigger=trigger, start_node=node.id, nodes=[node]),
            ),
            metadata=self.md,
        )
        name = f"{self.parent}/workflows/{wf_id}"
        stub.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=name), metadata=self.md)
        return name

    def call(self, method: Callable[..., T], request: Any) -> T:
        """An RPC with the store's key (a fresh channel after a restart)."""
        return method(request, metadata=self.md, timeout=WAIT)

    def expect(self, refusal: str | set[str] | None, method: Callable[..., T], request: Any) -> T | None:
        """Call; the answer must be the code the model predicts (None or an empty set: OK)."""
        refusals = {refusal} if isinstance(refusal, str) else refusal or set()
        answer, got = None, "OK"
        try:
            answer = self.call(method, request)
        except grpc.RpcError as e:
            got = _code(e)
        assert got in (refusals or {"OK"}), f"{method}: the model expects {refusals or 'OK'}, got {got}"
        return answer

    # -- the start ------------------------------------------------------------------------------------

    def _local(self, hour: int) -> datetime:
        """The model's hour as an instant (Madrid wall clock, whatever its offset that day)."""
        day = FIRST_DAY + timedelta(days=self.day + hour // 24)
        return day.replace(hour=hour % 24).astimezone(UTC)

    @initialize(
        people=st.lists(st.tuples(PHONE, st.sampled_from((SUBSCRIBED, NONE))), min_size=1, max_size=3),
        down=st.booleans(),
        quiet=st.booleans(),
        capped=st.booleans(),
        night=st.booleans(),
    )
    def start(self, people: list[tuple[str, str]], down: bool, quiet: bool, capped: bool, night: bool) -> None:
        """A few contacts who may receive SMS (so that sends queue), Instasent up or down, maybe
        quiet hours and a frequency cap, at midday or at night."""
        self._rules(quiet, capped)
        if night:
            self.time_passes(0)
        for who, (phone, subscription) in enumerate(people):
            self.create_contact(who, phone, KEEP, KEEP, subscription)
        if down:
            self.outage_starts()

    def _rules(self, quiet: bool, capped: bool) -> None:
        config = pb.SmsChannelConfig(name=f"{self.parent}/smsChannelConfig")
        paths = ["quiet_hours", "frequency_cap"]
        if quiet:  # the defaults: 21:00-09:00, TRANSACTIONAL exempt
            config.quiet_hours.start.hours, config.quiet_hours.end.hours = 21, 9
        else:
            config.quiet_hours.SetInParent()  # start == end: none
        if capped:
            config.frequency_cap.max_sms = CAP
            config.frequency_cap.period.CopyFrom(duration_pb2.Duration(seconds=CAP_HOURS * 3600))
        sms, _, _ = self.stack.stubs()
        mask = field_mask_pb2.FieldMask(paths=paths)
        self.call(
            sms.UpdateSmsChannelConfig, pb.UpdateSmsChannelConfigRequest(sms_channel_config=config, update_mask=mask)
        )
        self.model.quiet, self.model.capped = quiet, capped

    @rule(days=st.integers(0, 2))
    def time_passes(self, days: int) -> None:
        """The clock moves on to the next 23:00 or midday (and maybe some days more): at midday what
        quiet hours held goes, judged on the contact and the cap as they are then."""
        hour = self.model.hour + (11 if not self.model.night else 13) + 24 * days
        self.model.hour = hour
        self.stack.set_time(self._local(hour))
        self._release()

    # -- contacts ------------------------------------------------------------------------------------

    def _contact_id(self, who: int) -> str:
        return f"c{who}"

    @rule(who=WHO, phone=MAYBE_PHONE, email=st.sampled_from((KEEP, *EMAILS)), status=STATUS, sub=SUBSCRIPTION, via=VIA)
    def create_contact(self, who: int, phone: str, email: str, status: str, sub: str, via: int = 0) -> None:
        contact_id = self._contact_id(who)
        email = "" if email == KEEP else email
        phone = "" if phone == KEEP else phone
        refusals = set()  # the SPEC orders no refusal before another: any that applies will do
        if contact_id in self.model.people or (email and self.model.by_email(email)):
            refusals.add("ALREADY_EXISTS")
        person = None
        try:
            person = Person(contact_id, email).changed(phone, status, sub)
        except Refused as r:
            refusals.add(r.code)
        request = cpb.CreateContactRequest(
            parent=self.parent,
            contact_id=contact_id,
            contact=_contact(phone=phone, email=email, status=status, sub=sub),
        )
        _, contacts, _ = self.stack.stubs(via)
        self.expect(refusals, contacts.CreateContact, request)
        if person is not None and not refusals:
            self.model.people[contact_id] = person

    @rule(who=WHO, phone=MAYBE_PHONE, status=STATUS, sub=SUBSCRIPTION, via=VIA)
    def update_contact(self, who: int, phone: str, status: str, sub: str, via: int) -> None:
        contact_id = self._contact_id(who)
        paths = [
            p
            for p, v in (("mobile_phone", phone), ("mobile_phone_status", status), ("sms_subscription_status", sub))
            if v != KEEP
        ]
        if not paths:
            return
        person, refusal = self._change(contact_id, phone, status, sub)
        request = cpb.UpdateContactRequest(
            contact=_contact(name=self.contact_name(contact_id), phone=phone, status=status, sub=sub),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        _, contacts, _ = self.stack.stubs(via)
        self.expect(refusal, contacts.UpdateContact, request)
        if person is not None:
            self.model.people[contact_id] = person

    def _change(self, contact_id: str, phone: str, status: str, sub: str) -> tuple[Person | None, str | None]:
        current = self.model.people.get(contact_id)
        if current is None:
            return None, "NOT_FOUND"
        try:
            return current.changed(phone, status, sub), None
        except Refused as r:
            return None, r.code

    @rule(who=WHO, via=VIA)
    def delete_contact(self, who: int, via: int) -> None:
        contact_id = self._contact_id(who)
        _, contacts, _ = self.stack.stubs(via)
        refusal = None if contact_id in self.model.people else "NOT_FOUND"
        self.expect(refusal, contacts.DeleteContact, cpb.DeleteContactRequest(name=self.contact_name(contact_id)))
        self.model.people.pop(contact_id, None)

    @rule(who=WHO, via=VIA)
    def unsubscribe_contact(self, who: int, via: int) -> None:
        contact_id = self._contact_id(who)
        person, refusal = self._change(contact_id, KEEP, KEEP, UNSUBSCRIBED)
        _, contacts, _ = self.stack.stubs(via)
        request = cpb.UnsubscribeSmsRequest(parent=self.parent, contact=self.contact_name(contact_id))
        self.expect(refusal, contacts.UnsubscribeSms, request)
        if person is not None:
            self.model.people[contact_id] = person

    @rule(phone=PHONE, via=VIA)
    def unsubscribe_phone(self, phone: str, via: int) -> None:
        _, contacts, _ = self.stack.stubs(via)
        answer = self.call(contacts.UnsubscribeSms, cpb.UnsubscribeSmsRequest(parent=self.parent, phone=phone))
        holders = self.model.with_phone(phone)
        assert sorted(answer.contacts) == sorted(self.contact_name(p.id) for p in holders)
        for p in holders:
            p.subscription = UNSUBSCRIBED

    @rule(
        rows=st.lists(
            st.tuples(
                st.one_of(WHO.map(lambda w: ("name", w)), st.sampled_from(EMAILS).map(lambda e: ("email", e))),
                MAYBE_PHONE,
                STATUS,
                SUBSCRIPTION,
            ),
            min_size=1,
            max_size=3,
        ),
        via=VIA,
    )
    def import_rows(self, rows: list[tuple[tuple[str, Any], str, str, str]], via: int) -> None:
        """An import: rows by name must name a live contact; rows by email create when missing."""
        messages = []
        errors: list[int] = []
        for number, ((key, value), phone, status, sub) in enumerate(rows, 1):
            phone = KEEP if phone == "" else phone  # a row sets the fields present: no empty phone
            if key == "name":
                contact_id = self._contact_id(value)
                messages.append(_contact(name=self.contact_name(contact_id), phone=phone, status=status, sub=sub))
                person, _ = self._change(contact_id, phone, status, sub)
            else:
                messages.append(_contact(email=value, phone=phone, status=status, sub=sub))
                person, _ = self._by_email(value, phone, status, sub)
            if person is None:
                errors.append(number)
            else:
                self.model.people[person.id] = person
        _, contacts, _ = self.stack.stubs(via)
        answer = contacts.ImportContacts(
            iter([cpb.ImportContactsRequest(parent=self.parent, contacts=messages)]), metadata=self.md, timeout=WAIT
        )
        assert [e.row_number for e in answer.errors] == errors, answer
        self._learn_new_ids(via)

    def _by_email(self, email: str, phone: str, status: str, sub: str) -> tuple[Person | None, str | None]:
        """The change an upsert keyed by email makes (created when no contact has it)."""
        current = self.model.by_email(email)
        if current is None:
            current = Person(f"new:{email}", email)  # the server names it: learnt after the call
        try:
            return current.changed(phone if phone != KEEP else KEEP, status, sub), None
        except Refused as r:
            return None, r.code

    def _learn_new_ids(self, via: int) -> None:
        """Contacts the server created by email get the id it gave them."""
        fresh = [p for p in self.model.people.values() if p.id.startswith("new:")]
        if not fresh:
            return
        _, contacts, _ = self.stack.stubs(via)
        for person in fresh:
            listed = self.call(
                contacts.ListContacts, cpb.ListContactsRequest(parent=self.parent, filter=f'email = "{person.email}"')
            )
            assert len(listed.contacts) == 1, f"no contact with {person.email}"
            del self.model.people[person.id]
            person.id = listed.contacts[0].name.rsplit("/", 1)[1]
            self.model.people[person.id] = person

    @rule(
        key=st.one_of(WHO.map(lambda w: ("name", w)), st.sampled_from(EMAILS).map(lambda e: ("email", e))),
        phone=MAYBE_PHONE,
        status=STATUS,
        sub=SUBSCRIPTION,
        via=VIA,
    )
    def upsert_contact_info(self, key: tuple[str, Any], phone: str, status: str, sub: str, via: int) -> None:
        """The contact-info tag: by name (must exist) or by email (created when missing)."""
        kind, value = key
        phone = KEEP if phone == "" else phone  # the tag merges the fields present: no empty phone
        if kind == "name":
            contact_id = self._contact_id(value)
            info = _contact(name=self.contact_name(contact_id), phone=phone, status=status, sub=sub)
            person, refusal = self._change(contact_id, phone, status, sub)
        else:
            info = _contact(email=value, phone=phone, status=status, sub=sub)
            person, refusal = self._by_email(value, phone, status, sub)
        _, contacts, _ = self.stack.stubs(via)
        answer = self.expect(
            refusal, contacts.UpsertContactInfo, cpb.UpsertContactInfoRequest(parent=self.parent, contact_info=info)
        )
        if person is not None and answer is not None:
            self.model.people.pop(person.id, None)
            person.id = answer.contact.name.rsplit("/", 1)[1]
            self.model.people[person.id] = person

    @rule(who=WHO, event=st.sampled_from(sorted(UPDATES)), via=VIA)
    def workflow_update(self, who: int, event: str, via: int) -> None:
        """An event runs the store's Update-contact workflow for the contact: the run fails when the
        model refuses the change."""
        contact_id = self._contact_id(who)
        _, _, workflows = self.stack.stubs(via)
        request = wpb.TriggerEventRequest(parent=self.parent, event_name=event, contact=self.contact_name(contact_id))
        if contact_id not in self.model.people:
            self.expect("NOT_FOUND", workflows.TriggerEvent, request)
            return
        (run,) = self.call(workflows.TriggerEvent, request).workflow_runs
        change = UPDATES[event]
        person, refusal = self._change(
            contact_id, change.get("phone", KEEP), change.get("status", KEEP), change.get("subscription", KEEP)
        )
        final = self._until(
            lambda: self.call(workflows.GetWorkflowRun, wpb.GetWorkflowRunRequest(name=run)),
            lambda r: r.state in (wpb.WORKFLOW_RUN_STATE_COMPLETED, wpb.WORKFLOW_RUN_STATE_FAILED),
            f"run {run} to end",
        )
        want = wpb.WORKFLOW_RUN_STATE_FAILED if refusal else wpb.WORKFLOW_RUN_STATE_COMPLETED
        assert final.state == want, f"{event}: the model expects {refusal or 'COMPLETED'}: {final}"
        if person is not None:
            self.model.people[contact_id] = person

    # -- sending ---------------------------------------------------------------------------------------

    def _send_sms(self, kind: str, **target: str) -> pb.SendSmsRequest:
        """A SendSms of the store's content, to a contact or an alert phone."""
        return pb.SendSmsRequest(
            parent=self.parent,
            request_id=uuid.uuid4().hex,
            sms_content=self.content,
            type=_enum(common.SmsType, "SMS_TYPE_", kind),
            **target,
        )

    @rule(who=WHO, kind=KIND, via=VIA)
    def send_to_contact(self, who: int, kind: str, via: int) -> None:
        contact_id = self._contact_id(who)
        sms, _, _ = self.stack.stubs(via)
        request = self._send_sms(kind, contact=self.contact_name(contact_id))
        if contact_id not in self.model.people:
            self.expect("NOT_FOUND", sms.SendSms, request)
            return
        message = self.call(sms.SendSms, request)
        self._made(message, Sms(message.name, kind, contact=contact_id), via)

    @precondition(lambda self: (self.model.quiet or self.model.capped) and self._subscribers())
    @rule(which=st.integers(0, 1000), via=VIA)
    def newsletter_to_a_subscriber(self, which: int, via: int) -> None:
        """A store with quiet hours or a cap sends its subscribers newsletters more often, so that
        holds and the cap meet consent changes."""
        subscribers = self._subscribers()
        self.send_to_contact(int(subscribers[which % len(subscribers)].removeprefix("c")), NEWSLETTER, via)

    def _subscribers(self) -> list[str]:
        return sorted(p.id for p in self.model.people.values() if p.may_receive(NEWSLETTER) and p.id[1:].isdigit())

    @rule(phone=PHONE, kind=KIND, via=VIA)
    def send_alert(self, phone: str, kind: str, via: int) -> None:
        sms, _, _ = self.stack.stubs(via)
        message = self.call(sms.SendSms, self._send_sms(kind, alert_phone=phone))
        self._made(message, Sms(message.name, kind, alert=phone), via)

    # A broadcast reaches the contacts there are when the engine pages it: on two replicas up to a second
    # after its activation (when the other one holds the engine). The machine waits for its messages to
    # know it has been paged; with no contact there is nothing to wait for, and a contact created next
    # could still be in it. So a broadcast goes to one contact at least.
    @precondition(lambda self: bool(self.model.people))
    @rule(kind=KIND, via=VIA)
    def broadcast(self, kind: str, via: int) -> None:
        """A broadcast workflow over every contact of the store (the newsletter case)."""
        self.next_id += 1
        send = wpb.Node(
            id="send",
            send_sms=wpb.SendSmsNode(
                sms_content=self.content,
                recipient_mode=common.RECIPIENT_MODE_CONTACT,
                type=_enum(common.SmsType, "SMS_TYPE_", kind),
            ),
        )
        _, _, workflows = self.stack.stubs(via)
        trigger = wpb.Trigger(broadcast=wpb.BroadcastTrigger())
        wf = self._workflow(workflows, f"broadcast-{self.next_id}", trigger, send)
        expected = len(self.model.people)
        sms, _, _ = self.stack.stubs(via)
        listed = self._until(
            lambda: self.call(
                sms.ListMessages, pb.ListMessagesRequest(parent=self.parent, filter=f'workflow = "{wf}"', page_size=100)
            ),
            lambda answer: len(answer.messages) == expected,
            f"{expected} messages of {wf}",
        )
        for message in listed.messages:
            self._made(message, Sms(message.name, kind, contact=message.contact.rsplit("/", 1)[1]), via)

    def _made(self, message: pb.Message, made: Sms, via: int) -> None:
        """A new message: SKIPPED at once when the model says so, else QUEUED until it is handed over."""
        person = self.model.people.get(made.contact)
        eligible = bool(made.alert) or (person is not None and person.may_receive(made.kind))
        eligible = eligible and not self.model.over_cap(made)
        status = _name(common.MessageStatus, "MESSAGE_STATUS_", message.status)
        if not eligible:
            seen["capped"] += self.model.over_cap(made)
            assert status == "SKIPPED", f"the model skips {made}: {message}"
            assert message.status_reason, "a skip is never silent"
            self._check_received(made, [])
            return
        assert status in ("QUEUED", "SENT"), f"the model queues {made}: {message}"
        held = self.model.held(made)
        assert message.HasField("hold_until") == held, f"quiet hours hold {made}: {held}; the server: {message}"
        seen["held"] += held
        if self.down or held:
            self.pending.append(made)
        else:
            self._settle(made, via)

    def _settle(self, sms: Sms, via: int, any_order: bool = False) -> None:
        """Wait for the message to leave the outbox; it must end as the model judges it now.

        `any_order`: released with others it waited with, whose order at the hand-over the outbox
        chooses (retries back off by attempts), so which of a contact's newsletters the cap lets go is
        not the model's to say: `_check_cap` then checks how many went."""
        stub, _, _ = self.stack.stubs(via)
        final = self._until(
            lambda: self.call(stub.GetMessage, pb.GetMessageRequest(name=sms.name)),
            lambda m: m.status != common.MESSAGE_STATUS_QUEUED,
            f"{sms.name} to leave the outbox",
        )
        status, recipient = self.model.judge(sms)
        got = _name(common.MessageStatus, "MESSAGE_STATUS_", final.status)
        if got == "SKIPPED" and status == "SENT" and sms.wavered:
            status, recipient = "SKIPPED", ""  # skipped at a try while the contact could not receive it
        person = self.model.people.get(sms.contact)
        if any_order and self.model.capped and sms.kind == NEWSLETTER and person and person.may_receive(NEWSLETTER):
            if got == "SKIPPED" and final.status_reason.startswith("frequency_cap"):
                status, recipient = "SKIPPED", ""
                self.capped_now.append(sms)
                seen["capped"] += 1
            elif got == "SENT":
                status, recipient = "SENT", person.phone
        assert got == status, f"the model says {status} for {sms}, the server {got}: {final.status_reason}"
        self._check_received(sms, [recipient] if recipient else [])
        if recipient:
            assert final.recipient == recipient
            sms.status, sms.recipient, sms.sent_hour = "SENT", recipient, self.model.hour
            self.sent.append(sms)

    def _check_received(self, sms: Sms, numbers: list[str]) -> None:
        client_id = sms.name.rsplit("/", 1)[1]
        got = [to for cid, to in self.stack.received(self.token) if cid == client_id]
        assert got == numbers, f"Instasent received {sms} for {got}; the model says {numbers}"

    @precondition(lambda self: not self.down)
    @rule()
    def outage_starts(self) -> None:
        """Instasent answers every request of this account with 503 or 429."""
        self.stack.run(self._set_down(True))
        self.down = True

    @precondition(lambda self: self.down)
    @rule(via=VIA)
    def outage_ends(self, via: int = 0) -> None:
        """Instasent is back: every message that waited is handed over, judged on the contacts now."""
        self.stack.run(self._set_down(False))
        self.down = False
        self._release(via)

    def _release(self, via: int = 0) -> None:
        """Settle, in the order they were made, the waiting messages that may go now."""
        if self.down:
            return
        pending, self.pending = self.pending, []
        for sms in pending:
            if self.model.held(sms):
                self.pending.append(sms)
            else:
                self._settle(sms, via, any_order=True)
        self._check_cap()

    def _check_cap(self) -> None:
        """The cap, however the outbox ordered a release: no contact has more than CAP newsletters in
        any CAP_HOURS, and a newsletter skipped by the cap was skipped only because CAP had gone."""
        capped_now, self.capped_now = self.capped_now, []
        for sms in capped_now:
            assert self.model.over_cap(sms), f"{sms} skipped by the cap with fewer than {CAP} sent"
        if not self.model.capped:
            return
        for contact in {s.contact for s in self.sent if s.contact and s.kind == NEWSLETTER}:
            hours = sorted(
                s.sent_hour
                for s in self.sent
                if s.contact == contact and s.kind == NEWSLETTER and s.status in ("SENT", "DELIVERED")
            )
            for i, start in enumerate(hours):
                assert len([h for h in hours[i:] if h - start < CAP_HOURS]) <= CAP, f"{contact} over the cap: {hours}"

    def _set_down(self, down: bool) -> Callable[[], Any]:
        async def switch() -> None:
            (self.stack.fake.down.add if down else self.stack.fake.down.discard)(self.token)

        return switch

    @rule(via=VIA)
    def restart(self, via: int) -> None:
        self.stack.restart(via)

    # -- callbacks -------------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.sent))
    @rule(which=st.integers(0, 1000), status=st.sampled_from(("stop", "rejected", "delivered")), via=VIA)
    def callback(self, which: int, status: str, via: int) -> None:
        """Instasent calls the store's callback URL about an SMS it accepted."""
        sms = self.sent[which % len(self.sent)]
        first = (sms.name, status) not in self.model.events
        self.model.events.add((sms.name, status))
        applied = False
        if first and status == "stop":
            for p in self.model.with_phone(sms.recipient):
                applied |= p.subscription != UNSUBSCRIBED
                p.subscription = UNSUBSCRIBED
        elif first:
            new = {"delivered": "DELIVERED", "rejected": "REJECTED"}[status]
            if sms.status == "SENT":
                sms.status, applied = new, True
            if status == "rejected":
                for p in self.model.with_phone(sms.recipient):
                    applied |= not p.rejected
                    p.rejected = True
        answer = self._post_callback({"clientId": sms.name.rsplit("/", 1)[1], "status": status}, via)
        assert answer == {"outcome": "applied" if applied else "duplicate"}, (sms, status, answer)
        stub, _, _ = self.stack.stubs(via)
        got = self.call(stub.GetMessage, pb.GetMessageRequest(name=sms.name))
        assert _name(common.MessageStatus, "MESSAGE_STATUS_", got.status) == sms.status

    def _post_callback(self, body: dict[str, str], via: int) -> Any:
        stub, _, _ = self.stack.stubs(via)
        config = self.call(
            stub.GetSmsChannelConfig, pb.GetSmsChannelConfigRequest(name=f"{self.parent}/smsChannelConfig")
        )
        path = "/instasent/callbacks/" + config.callback_url.split("/instasent/callbacks/", 1)[1]
        deadline = time.monotonic() + WAIT
        while True:
            answer = httpx.post(self.stack.sidecar_url(via) + path, json=body, timeout=WAIT)
            if answer.status_code != 503 or time.monotonic() > deadline:  # 503: Instasent would retry
                break
            time.sleep(0.05)
        assert answer.status_code == 200, answer.text
        return answer.json()

    # -- after every step ------------------------------------------------------------------------------

    @invariant()
    def contacts_are_as_the_model_says(self) -> None:
        next(steps_run)
        _, contacts, _ = self.stack.stubs(next(self.reads))
        listed = self.call(contacts.ListContacts, cpb.ListContactsRequest(parent=self.parent, page_size=100))
        seen = {
            c.name.rsplit("/", 1)[1]: (
                c.mobile_phone,
                _name(common.MobilePhoneStatus, "MOBILE_PHONE_STATUS_", c.mobile_phone_status),
                _name(common.SmsSubscriptionStatus, "SMS_SUBSCRIPTION_STATUS_", c.sms_subscription_status),
            )
            for c in listed.contacts
        }
        want = {p.id: (p.phone, p.status, p.subscription) for p in self.model.people.values()}
        assert seen == want

    @invariant()
    def waiting_messages_note_an_ineligible_contact(self) -> None:
        for sms in self.pending:  # tried while Instasent is down; a held one is not tried
            if not self.model.held(sms) and self.model.judge(sms)[0] == "SKIPPED":
                sms.wavered = True

    @invariant()
    def instasent_got_exactly_what_the_model_sent(self) -> None:
        got = sorted(self.stack.received(self.token))
        want = sorted((s.name.rsplit("/", 1)[1], s.recipient) for s in self.sent)
        assert got == want

    def teardown(self) -> None:
        """The end of an example: Instasent comes back, and what waited must go as the model says."""
        if self.down:
            self.outage_ends()
        if self.pending:  # held by quiet hours: midday comes
            self.time_passes(0)

    # -- helpers ---------------------------------------------------------------------------------------

    def _until(self, get: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
        deadline = time.monotonic() + WAIT
        while True:
            value = get()
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {value}")
            time.sleep(0.01)


def _contact(name: str = "", email: str = "", phone: str = KEEP, status: str = KEEP, sub: str = KEEP) -> cpb.Contact:
    """A Contact message with the fields that are not KEEP."""
    msg = cpb.Contact(name=name, email=email)
    if phone != KEEP:
        msg.mobile_phone = phone
    if status != KEEP:
        msg.mobile_phone_status = _enum(common.MobilePhoneStatus, "MOBILE_PHONE_STATUS_", status)
    if sub != KEEP:
        msg.sms_subscription_status = _enum(common.SmsSubscriptionStatus, "SMS_SUBSCRIPTION_STATUS_", sub)
    return msg


def _update_node(change: dict[str, str]) -> wpb.Node:
    """An Update-contact node making `change`, with its mask."""
    contact = _contact(
        phone=change.get("phone", KEEP), status=change.get("status", KEEP), sub=change.get("subscription", KEEP)
    )
    paths = [
        p
        for p, k in (
            ("mobile_phone", "phone"),
            ("mobile_phone_status", "status"),
            ("sms_subscription_status", "subscription"),
        )
        if k in change
    ]
    return wpb.Node(
        id="update",
        update_contact=wpb.UpdateContactNode(contact=contact, update_mask=field_mask_pb2.FieldMask(paths=paths)),
    )
