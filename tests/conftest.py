"""Shared fixtures: one in-process server on port 0 per test session, reached over a real channel."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
import pytest
import uvloop

from smschannel.asgi import serve_in_loop
from smschannel.config import Config
from smschannel.instasent.fake import FakeInstasent
from smschannel.jsonlog import configure
from smschannel.server import App
from smschannel.sidecar.app import create_app
from smschannel.storage.postgres.db import migrate
from smschannel.v1 import (
    contacts_service_pb2_grpc,
    sms_channel_service_pb2,
    sms_channel_service_pb2_grpc,
    workflow_service_pb2_grpc,
)

from .postgres import INSTALL_HINT, ThrowawayPostgres, create_database, find_bindir

ADMIN_KEY = "test-admin-key"
INSTASENT_TOKEN = "instasent-test-token-1a2b"
SECRET_KEY = "test-secret-key"
_store_ids = itertools.count(1)


def auth(key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a key."""
    return (("authorization", f"Bearer {key}"),)


ADMIN = auth(ADMIN_KEY)


@dataclass
class Stubs:
    """The three service stubs on one channel."""

    sms: sms_channel_service_pb2_grpc.SmsChannelServiceStub
    contacts: contacts_service_pb2_grpc.ContactsServiceStub
    workflows: workflow_service_pb2_grpc.WorkflowServiceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stubs:
        """The three stubs on `channel`."""
        return cls(
            sms_channel_service_pb2_grpc.SmsChannelServiceStub(channel),
            contacts_service_pb2_grpc.ContactsServiceStub(channel),
            workflow_service_pb2_grpc.WorkflowServiceStub(channel),
        )


@dataclass
class StoreCtx:
    """A fresh store and its key's metadata."""

    id: str
    name: str
    md: tuple[tuple[str, str], ...]
    key: str


# What a test sets in the environment: addresses, files and keys, and a quick first retry. Everything
# else (the log level included) is the production default, read by the same `Config.from_env`.
TEST_ENV = {
    "SMSCHANNEL_GRPC_ADDR": "127.0.0.1:0",
    "SMSCHANNEL_ADMIN_KEY": ADMIN_KEY,
    "SMSCHANNEL_SECRET_KEY": SECRET_KEY,
    "SMSCHANNEL_RETRY_BASE": "0.05",
}


def make_config(tmp: Path, **overrides: object) -> Config:
    """The production config for an in-process server on a free port and the database at `tmp`."""
    config = Config.from_env({**TEST_ENV, "SMSCHANNEL_DB": database_at(tmp)})
    return replace(config, **overrides)  # type: ignore[arg-type]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], object]]:
    """The tests' event loop is the server's: uvloop, as `smschannel server` runs it."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session", autouse=True)
def production_logging() -> None:
    """The CLI's logging: JSON lines on stderr at the configured level (INFO by default)."""
    configure(Config.from_env(TEST_ENV).log_level)


@pytest.fixture(scope="session")
async def fake() -> AsyncIterator[FakeInstasent]:
    """The fake Instasent, served in the test loop."""
    instasent = FakeInstasent()
    instasent.add_token(INSTASENT_TOKEN)
    async with instasent.serve():
        yield instasent


KILL_TOKEN = "kill-test-token"  # the Instasent token of the tests that kill servers


@pytest.fixture
async def slow_fake() -> AsyncIterator[FakeInstasent]:
    """A fake Instasent answering in 20 ms and sending no callbacks, for the tests that kill servers."""
    fake = FakeInstasent(send_callbacks=False)
    fake.add_token(KILL_TOKEN)
    fake.faults.latency = 0.02
    async with fake.serve():
        yield fake


@pytest.fixture
async def kill_fake() -> AsyncIterator[FakeInstasent]:
    """A fake Instasent answering in 30 ms (a kill lands while requests are in flight), with callbacks."""
    fake = FakeInstasent()
    fake.add_token(KILL_TOKEN)
    fake.faults.latency = 0.03
    async with fake.serve():
        yield fake


@pytest.fixture(scope="session")
async def app(tmp_path_factory: pytest.TempPathFactory, fake: FakeInstasent) -> AsyncIterator[App]:
    """The server under test, talking to the fake Instasent."""
    started = await App.start(make_config(tmp_path_factory.mktemp("server"), instasent_base_url=fake.base_url))
    yield started
    await started.stop(grace=1)


@pytest.fixture(scope="session")
async def sidecar(app: App) -> AsyncIterator[str]:
    """The sidecar app on a free port, calling the session's server; yields its base URL."""
    config = replace(app.config, grpc_addr=f"127.0.0.1:{app.port}")
    async with serve_in_loop(create_app(config)) as url:
        yield url


@pytest.fixture(scope="session")
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    """A real channel to the server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def stubs(channel: grpc.aio.Channel) -> Stubs:
    """Stubs of the three services."""
    return Stubs.on(channel)


async def create_store(stubs: Stubs) -> StoreCtx:
    """A new store with a unique id."""
    store_id = f"store-{next(_store_ids)}"
    resp = await stubs.sms.CreateStore(
        sms_channel_service_pb2.CreateStoreRequest(
            store_id=store_id, store=sms_channel_service_pb2.Store(display_name=store_id)
        ),
        metadata=ADMIN,
    )
    return StoreCtx(store_id, resp.store.name, auth(resp.api_key), resp.api_key)


@pytest.fixture
async def store(stubs: Stubs) -> StoreCtx:
    """A fresh store for one test."""
    return await create_store(stubs)


@pytest.fixture
async def other_store(stubs: Stubs) -> StoreCtx:
    """A second store, to prove tenancy."""
    return await create_store(stubs)


async def set_channel(stubs: Stubs, store: StoreCtx, **fields: object) -> sms_channel_service_pb2.SmsChannelConfig:
    """Save channel config fields for a store. Its quiet hours are off unless `quiet_hours` is given:
    the tests send at any hour of the day (tests/test_quiet_hours_api.py tests them)."""
    fields.setdefault("quiet_hours", sms_channel_service_pb2.QuietHours())
    return await stubs.sms.UpdateSmsChannelConfig(
        sms_channel_service_pb2.UpdateSmsChannelConfigRequest(
            sms_channel_config=sms_channel_service_pb2.SmsChannelConfig(
                name=f"{store.name}/smsChannelConfig",
                **fields,  # type: ignore[arg-type]
            )
        ),
        metadata=store.md,
    )


@pytest.fixture
async def es_store(stubs: Stubs) -> StoreCtx:
    """A fresh store whose default country is Spain."""
    ctx = await create_store(stubs)
    await set_channel(stubs, ctx, default_country="ES")
    return ctx


@pytest.fixture
async def sending_store(stubs: Stubs) -> StoreCtx:
    """A fresh store ready to send: Spain by default, a valid Instasent token, sender Acme."""
    ctx = await create_store(stubs)
    await set_channel(stubs, ctx, default_country="ES", api_token=INSTASENT_TOKEN, default_sender="Acme")
    return ctx


@contextmanager
def clock_at(app: App, local: datetime) -> Iterator[None]:
    """Within the block, the server's sending and outbox clocks read as if it were `local` now (and
    run on from there): a test of quiet hours or country rules holds whatever the hour it runs at."""
    offset = local - datetime.now(UTC)
    saved = app.sender.clock, app.dispatcher.clock

    def shifted() -> datetime:
        return datetime.now(UTC) + offset

    app.sender.clock = app.dispatcher.clock = shifted
    try:
        yield
    finally:
        app.sender.clock, app.dispatcher.clock = saved


async def eventually(check: Callable[[], Awaitable[bool]], what: str = "condition", within: float = 10.0) -> None:
    """Wait until `check()` is true, or fail after `within` seconds (no fixed sleeps)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# Why the PostgreSQL tests were skipped, repeated at the end of the run so that it cannot go unseen.
_postgres_missing: list[str] = []


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (tests/postgres.py); its DSN. Skipped, loudly, when
    PostgreSQL's server binaries are not installed."""
    if find_bindir() is None:
        reason = f"PostgreSQL is not installed, its tests are skipped: {INSTALL_HINT}"
        _postgres_missing.append(reason)
        pytest.skip(reason)
    with ThrowawayPostgres() as dsn:
        yield dsn


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A last line when the PostgreSQL tests were skipped for want of PostgreSQL."""
    if _postgres_missing:
        terminalreporter.write_line(f"WARNING: {_postgres_missing[0]}", yellow=True, bold=True)


# -- the backend under test ---------------------------------------------------------------------------
# `SMSCHANNEL_TEST_BACKEND=postgres pytest` runs the same tests on PostgreSQL: every server a test
# starts gets a new database of one throwaway PostgreSQL server (tests/postgres.py), created from a
# migrated template. `make test` runs the suite on both.

BACKEND = os.environ.get("SMSCHANNEL_TEST_BACKEND", "sqlite")
_databases = itertools.count(1)
_throwaway: list[tuple[ThrowawayPostgres, str]] = []


# Modules that use no storage, or only SQLite's own: they run once, in the SQLite run.
ONCE = {
    "test_contact_rules",
    "test_dockerfile",
    "test_eligibility",
    "test_jsoncol",
    "test_make_run",  # `make run` with its defaults: SQLite
    "test_names",
    "test_phones",
    "test_postgres_schema",  # PostgreSQL's own, the same in both runs
    "test_python_client_build",
    "test_query_plans",  # SQLite's query plans
    "test_readme",  # the README's walkthrough: `make run`, SQLite
    "test_records",
    "test_segments",
    "test_sqlite_file",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the PostgreSQL run: the modules of ONCE are left to the SQLite run, and without PostgreSQL
    every test is skipped with the reason repeated at the end (never a silent half)."""
    if not on_postgres():
        return
    if find_bindir() is None:
        reason = f"SMSCHANNEL_TEST_BACKEND=postgres, but PostgreSQL is not installed: {INSTALL_HINT}"
        _postgres_missing.append(reason)
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))
        return
    once = pytest.mark.skip(reason="no storage here, or SQLite's own: run once, in the SQLite run")
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in ONCE:
            item.add_marker(once)


def on_postgres() -> bool:
    """Whether this run tests the PostgreSQL backend."""
    return BACKEND == "postgres"


def database_at(tmp: Path, name: str = "test.db") -> str:
    """A test's database at `tmp/name`: that SQLite file, or on PostgreSQL a database standing for it —
    created empty the first time, the same one after (a server restarted on it finds its data)."""
    if not on_postgres():
        return str(tmp / name)
    path = str(tmp / name)
    if path not in _standing_for:
        _standing_for[path] = _new_postgres_database()
    return _standing_for[path]


_standing_for: dict[str, str] = {}


def _new_postgres_database() -> str:
    """A database of the session's throwaway server (started at the first call), copied from a
    template migrated once: a CREATE DATABASE of a few milliseconds instead of the migrations."""
    if not _throwaway:
        if find_bindir() is None:
            raise RuntimeError(f"SMSCHANNEL_TEST_BACKEND=postgres but PostgreSQL is missing: {INSTALL_HINT}")
        server = ThrowawayPostgres()
        dsn = server.__enter__()  # stopped at exit (ThrowawayPostgres registers it)
        with psycopg.connect(create_database(dsn, TEMPLATE), autocommit=True) as conn:
            migrate(conn)
        _throwaway.append((server, dsn))
    _, dsn = _throwaway[0]
    return create_database(dsn, f"t{os.getpid()}_{next(_databases)}", template=TEMPLATE)


TEMPLATE = "smschannel_template"
