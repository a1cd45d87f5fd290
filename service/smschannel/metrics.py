"""Prometheus metrics of the server: RPCs, messages, provider calls, callbacks, the outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .domain.enums import MessageStatus
from .storage.sqlite.db import WriteStats

__all__ = ["Metrics"]

log = logging.getLogger("smschannel.metrics")

CountByStatus = Callable[[], Coroutine[Any, Any, dict[MessageStatus, int]]]


class _MessageGauges(Collector):
    """Messages by status and the outbox depth, counted by the storage at scrape time.

    Scrapes come on prometheus_client's HTTP thread; the storage lives on the server's loop, so the
    count is asked of the loop, with a short timeout (a busy or stopped server answers no gauges)."""

    def __init__(self, count: CountByStatus, loop: asyncio.AbstractEventLoop) -> None:
        self._count = count
        self._loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status = GaugeMetricFamily("smschannel_messages", "Messages in the log by status", labels=["status"])
        depth = GaugeMetricFamily("smschannel_outbox_depth", "QUEUED messages waiting for the provider")
        try:
            counts: dict[MessageStatus, int] = asyncio.run_coroutine_threadsafe(self._count(), self._loop).result(
                timeout=2
            )
        except Exception:
            log.warning("message gauges not read", exc_info=True)
            return
        for status in MessageStatus:
            if status is not MessageStatus.UNSPECIFIED:
                by_status.add_metric([status.name], counts.get(status, 0))
        depth.add_metric([], counts.get(MessageStatus.QUEUED, 0))
        yield by_status
        yield depth


class _WriteLockCounters(Collector):
    """SQLite's write lock as this process used it (storage/sqlite/db.py WriteStats): read at scrape."""

    def __init__(self, stats: WriteStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "smschannel_sqlite_write_transactions", "SQLite write transactions", value=self._stats.transactions
        )
        yield CounterMetricFamily(
            "smschannel_sqlite_write_lock_held_seconds",
            "Seconds this process held SQLite's write lock (one writer at a time for every process)",
            value=self._stats.held,
        )
        yield CounterMetricFamily(
            "smschannel_sqlite_write_lock_waited_seconds",
            "Seconds this process waited for another process to release SQLite's write lock",
            value=self._stats.waited,
        )


class Metrics:
    """The counters, and the HTTP endpoint that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._rpc_children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        self.rpcs = Counter("smschannel_rpcs", "RPCs by method and code", ["method", "code"], registry=self.registry)
        self.rpc_seconds = Histogram(
            "smschannel_rpc_seconds",
            "RPC latency by method",
            ["method"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.provider = Counter(
            "smschannel_provider_messages",
            "Messages at the provider hand-over by outcome (sent, refused, failed, retried, skipped at sending)",
            ["outcome"],
            registry=self.registry,
        )
        self.callbacks = Counter(
            "smschannel_callbacks",
            "Provider callbacks by status and outcome",
            ["status", "outcome"],
            registry=self.registry,
        )

    def watch_messages(self, count: CountByStatus, loop: asyncio.AbstractEventLoop) -> None:
        """Gauges of the message log, counted by `count` on `loop` at each scrape."""
        self.registry.register(_MessageGauges(count, loop))

    def watch_write_lock(self, stats: WriteStats | None) -> None:
        """Counters of SQLite's write lock as this process uses it (none on PostgreSQL)."""
        if stats is not None:
            self.registry.register(_WriteLockCounters(stats))

    def observe_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one RPC."""
        children = self._rpc_children.get((method, code))
        if children is None:  # labels() hashes and locks on every call: resolve each pair once
            children = self._rpc_children[(method, code)] = (
                self.rpcs.labels(method, code.name),
                self.rpc_seconds.labels(method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_provider(self, outcome: str, count: int) -> None:
        """Count messages by what the provider did with them."""
        self.provider.labels(outcome).inc(count)

    def observe_callback(self, status: str, outcome: str, count: int = 1) -> None:
        """Count callbacks of one status and outcome."""
        self.callbacks.labels(status[:20], outcome).inc(count)

    def serve(self, addr: str) -> None:
        """Expose /metrics on `addr` (a failure to bind is logged, never fatal)."""
        host, _, port = addr.rpartition(":")
        try:
            start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
            log.info("metrics", extra={"addr": addr})
        except OSError as e:
            log.warning("metrics endpoint not started", extra={"addr": addr, "error": str(e)})
