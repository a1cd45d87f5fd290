"""The gRPC server factory and its lifecycle: start, serve, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from .api.contacts import ContactsServicer
from .api.interceptor import ApiInterceptor, Authenticator
from .api.pagination import PageTokens
from .api.sms_channel import SmsChannelServicer
from .api.workflows import WorkflowServicer
from .auth import derive_provider_events_key, hash_key
from .config import Config
from .crypto import TokenCipher, load_or_create_secret_key
from .gctuning import tune_gc
from .instasent.client import InstasentClient
from .metrics import Metrics
from .operations.channel import ChannelOps
from .operations.contacts import ContactOps
from .operations.dispatcher import Dispatcher
from .operations.messages import MessageLog
from .operations.preview import Previews
from .operations.provider_events import ProviderEvents
from .operations.sending import Sender
from .operations.sms_contents import SmsContentOps
from .operations.stores import StoreOps
from .operations.worker_pool import WorkerPool
from .operations.workflow_engine import WorkflowEngine
from .operations.workflows import WorkflowOps
from .storage import Storage
from .storage.sqlite import SqliteStorage
from .storage.sqlite.db import WriteStats
from .v1 import (
    contacts_service_pb2,
    contacts_service_pb2_grpc,
    sms_channel_service_pb2,
    sms_channel_service_pb2_grpc,
    workflow_service_pb2,
    workflow_service_pb2_grpc,
)

__all__ = ["App", "Outbox", "serve", "serve_outbox"]

log = logging.getLogger("smschannel.server")

# With SMSCHANNEL_OUTBOX=process, nothing in the server sends: when the oldest due message stays the
# same this long, no outbox process is at work. (A backlog moves it on as its oldest are sent; a
# request in flight lasts 10 s at most, a dead replica's claim its lease.) Looked at this often.
OUTBOX_STALLED = timedelta(seconds=90)
OUTBOX_WATCH_EVERY = 30.0

SERVICE_NAMES = (
    sms_channel_service_pb2.DESCRIPTOR.services_by_name["SmsChannelService"].full_name,
    contacts_service_pb2.DESCRIPTOR.services_by_name["ContactsService"].full_name,
    workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
)


async def resolve_admin_key_hash(config: Config, storage: Storage) -> str:
    """The admin key's hash: from the environment, else generated once and printed at first start."""
    if config.admin_key:
        return hash_key(config.admin_key)
    stored = await storage.meta.get("admin_key_hash")
    if stored is not None:
        return stored
    clear = "adm_" + secrets.token_urlsafe(32)
    stored = await storage.meta.put_if_absent("admin_key_hash", hash_key(clear))
    if stored == hash_key(clear):
        # Shown once, on the terminal only (never in the JSON log stream, which may be shipped).
        print(f"SMSCHANNEL_ADMIN_KEY generated (shown once, keep it): {clear}", file=sys.stderr, flush=True)
    return stored


def outbox_replica(config: Config) -> str:
    """Whose name an outbox process's claims bear: its own, never its server's. Were they one, a server
    left inline beside it would take the outbox process's claims as its own (and it the server's), and
    both would send the same messages."""
    return f"{config.replica}/outbox"


async def open_storage(config: Config, outbox_process: bool = False) -> Storage:
    """The database of `config`, for this replica's server, or its outbox process. With an outbox
    process (SMSCHANNEL_OUTBOX=process), the messages the server stores are left unclaimed for it (it
    holds the claims, under `outbox_replica`), and it writes its status changes on its event loop's
    thread."""
    lease = timedelta(seconds=config.lease_seconds)
    return await SqliteStorage.open(
        config.db,
        outbox_replica(config) if outbox_process else config.replica,
        lease,
        hold_stored=config.outbox == "inline",
        updates_inline=outbox_process,
    )


async def _watch_outbox(storage: Storage) -> None:
    """In a server whose outbox runs apart: a warning while the oldest due message has stayed the same
    past OUTBOX_STALLED, which means no `smschannel outbox` is at work beside it (not started, or
    stopped); an info line once it moves."""
    oldest: datetime | None = None  # the oldest due message's time, as last seen
    seen = datetime.now(UTC)  # since when it has been that
    stalled = False
    while True:
        await asyncio.sleep(OUTBOX_WATCH_EVERY)
        try:
            due = await storage.messages.next_due()
        except Exception:
            log.warning("outbox watch: cannot read the outbox", exc_info=True)
            continue
        now = datetime.now(UTC)
        if due != oldest:  # moved on (or first seen)
            oldest, seen = due, now
        if due is not None and due < now and now - seen >= OUTBOX_STALLED:
            log.warning(
                "messages wait, yet no outbox process sends them: start `smschannel outbox` beside this server,"
                " with the same SMSCHANNEL_OUTBOX=process, database and SMSCHANNEL_REPLICA",
                extra={"waiting_s": round((now - due).total_seconds())},
            )
            stalled = True
        elif stalled:
            log.info("outbox: messages are sent again")
            stalled = False


def write_stats(storage: Storage) -> WriteStats | None:
    """How this process uses SQLite's write lock; None on PostgreSQL (or a storage without one)."""
    stats = getattr(getattr(storage, "db", None), "write_stats", None)
    return stats if isinstance(stats, WriteStats) else None


@dataclass(frozen=True)
class Provider:
    """What talks to Instasent: the HTTP client, the Instasent client, and the channel configs' ops."""

    http: httpx.AsyncClient
    instasent: InstasentClient
    channel: ChannelOps

    @classmethod
    def open(cls, config: Config, storage: Storage, secret_key: str) -> Provider:
        """A client pool of its own (closed by `aclose`)."""
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0), limits=httpx.Limits(max_connections=50))
        instasent = InstasentClient(http, config.instasent_base_url)
        channel = ChannelOps(storage.channel_configs, TokenCipher(secret_key), instasent, config.public_url)
        return cls(http, instasent, channel)

    def dispatcher(self, config: Config, storage: Storage, metrics: Metrics, wakeup: asyncio.Event) -> Dispatcher:
        """The outbox dispatcher, with the retry settings of `config`; in the server (handed messages
        over in memory) or alone in an outbox process."""
        return Dispatcher(
            storage,
            self.channel,
            self.instasent,
            wakeup,
            retry_base=config.retry_base,
            retry_max=config.retry_max,
            max_attempts=config.retry_attempts,
            observe=metrics.observe_provider,
            handed_over=config.outbox == "inline",
        )


@dataclass
class App:
    """A running server with everything it owns (its outbox dispatcher unless it runs apart)."""

    config: Config
    storage: Storage
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    http: httpx.AsyncClient
    channel: ChannelOps
    workers: WorkerPool
    sender: Sender
    dispatcher: Dispatcher | None  # None: an outbox process sends (SMSCHANNEL_OUTBOX=process)
    engine: WorkflowEngine
    watch: asyncio.Task[None] | None = None  # with an outbox process: warns when nothing sends

    @classmethod
    async def start(cls, config: Config, storage: Storage | None = None) -> App:
        """Open storage, build and start the server on `config.grpc_addr` (port 0 picks a free one)."""
        storage = storage or await open_storage(config)
        secret_key = load_or_create_secret_key(config.secret_key, config.secret_key_file)
        authenticator = Authenticator(
            storage,
            admin_key_hash=await resolve_admin_key_hash(config, storage),
            provider_events_key_hash=hash_key(derive_provider_events_key(secret_key)),
        )
        tokens = PageTokens(secret_key)
        provider = Provider.open(config, storage, secret_key)
        channel = provider.channel
        server = grpc.aio.server()
        metrics = Metrics()
        metrics.watch_messages(storage.messages.count_by_status, asyncio.get_running_loop())
        metrics.watch_write_lock(write_stats(storage))
        api = ApiInterceptor(authenticator, observe=metrics.observe_rpc)
        sender = Sender(storage, channel)
        dispatcher: Dispatcher | None = None
        if config.outbox == "inline":
            dispatcher = provider.dispatcher(config, storage, metrics, sender.wakeup)
            sender.on_queued = dispatcher.offer
            channel.on_rules_changed = dispatcher.rules_changed
        else:  # the outbox process finds what is due by itself, within OUTBOX_POLL
            channel.on_rules_changed = sender.rules_changed
        contact_ops = ContactOps(storage)
        events = ProviderEvents(storage, channel, contact_ops, observe=metrics.observe_callback)
        stores = StoreOps(storage)
        sms_channel = SmsChannelServicer(
            stores, SmsContentOps(storage), MessageLog(storage), channel, sender, events, tokens
        )
        workers = WorkerPool(config.import_workers)
        contacts = ContactsServicer(contact_ops, tokens, workers)
        engine = WorkflowEngine(storage, sender, contact_ops, lease=timedelta(seconds=config.lease_seconds))
        contact_ops.on_created = engine.contacts_created
        workflows = WorkflowServicer(WorkflowOps(storage, engine), stores, tokens, Previews(storage, sender))
        api.register(sms_channel_service_pb2_grpc.add_SmsChannelServiceServicer_to_server, sms_channel, server)
        api.register(contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server, contacts, server)
        api.register(workflow_service_pb2_grpc.add_WorkflowServiceServicer_to_server, workflows, server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        port = server.add_insecure_port(config.grpc_addr)
        if port == 0:
            raise OSError(f"cannot listen on {config.grpc_addr}")
        await server.start()
        watch = None
        if dispatcher is not None:
            dispatcher.start()
        else:
            watch = asyncio.create_task(_watch_outbox(storage), name="outbox-watch")
        engine.start()
        if config.metrics_addr:
            metrics.serve(config.metrics_addr)
        for name in ("", *SERVICE_NAMES):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"grpc_addr": config.grpc_addr, "port": port})
        return cls(
            config, storage, server, health, port, provider.http, channel, workers, sender, dispatcher, engine, watch
        )

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, let in-flight calls finish within the grace, close storage."""
        await self.health.enter_graceful_shutdown()
        grace = self.config.shutdown_grace if grace is None else grace
        await self.server.stop(grace)
        await self.engine.stop(grace)
        if self.watch is not None:
            self.watch.cancel()
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        self.workers.close()
        await self.http.aclose()
        await self.storage.close()
        log.info("stopped")


async def serve(config: Config, early: Sequence[int] = ()) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    app = await App.start(config)
    tune_gc()
    await _until_signalled(early)
    await app.stop()


@dataclass
class Outbox:
    """`smschannel outbox`: the outbox dispatcher alone, beside a server run with SMSCHANNEL_OUTBOX=process
    (on the same database, with the same SMSCHANNEL_REPLICA and secret key). It reads what is due from the
    outbox instead of being handed it, so the server's event loop and its own each keep a core busy."""

    config: Config
    storage: Storage
    provider: Provider
    dispatcher: Dispatcher
    task: asyncio.Task[None]  # the dispatcher's loop

    @classmethod
    async def start(cls, config: Config, storage: Storage | None = None) -> Outbox:
        """Open storage and start sending what is due."""
        storage = storage or await open_storage(config, outbox_process=True)
        provider = Provider.open(config, storage, load_or_create_secret_key(config.secret_key, config.secret_key_file))
        metrics = Metrics()
        metrics.watch_messages(storage.messages.count_by_status, asyncio.get_running_loop())
        metrics.watch_write_lock(write_stats(storage))
        dispatcher = provider.dispatcher(config, storage, metrics, asyncio.Event())
        task = dispatcher.start()
        if config.outbox_metrics_addr:
            metrics.serve(config.outbox_metrics_addr)
        log.info("outbox sending", extra={"replica": outbox_replica(config)})
        return cls(config, storage, provider, dispatcher, task)

    async def stop(self, grace: float | None = None) -> None:
        """Let the requests in flight finish within the grace; what is unsent stays QUEUED."""
        await self.dispatcher.stop(self.config.shutdown_grace if grace is None else grace)
        await self.provider.http.aclose()
        await self.storage.close()
        log.info("stopped")


async def _until_signalled(early: Sequence[int]) -> None:
    """Until SIGTERM or SIGINT; `early`: the signals that came while the process was starting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if early:
        stop.set()
    await stop.wait()
    log.info("draining")


async def serve_outbox(config: Config, early: Sequence[int] = ()) -> int:
    """The outbox process: run until SIGTERM or SIGINT, then drain; its exit status. Should its loop ever
    end by itself, it stops with status 1, for its supervisor to start it again (it sends nothing else)."""
    outbox = await Outbox.start(config)
    tune_gc()
    signalled = asyncio.ensure_future(_until_signalled(early))
    await asyncio.wait({signalled, outbox.task}, return_when=asyncio.FIRST_COMPLETED)
    crashed = not signalled.done()
    if crashed:
        log.error("outbox: the dispatcher stopped by itself; exiting for a restart", exc_info=_failure(outbox.task))
        signalled.cancel()
    await outbox.stop()
    return 1 if crashed else 0


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    return None if task.cancelled() else task.exception()
