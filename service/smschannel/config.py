"""Configuration, read once from the environment (SPEC §11)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Config"]

DEFAULT_INSTASENT_BASE_URL = "https://api.instasent.com/transactional/v1"
OUTBOX_MODES = ("inline", "process")


@dataclass(frozen=True)
class Config:
    """Every setting of the server and the sidecar."""

    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    db: str = "./smschannel.db"
    admin_key: str | None = None
    secret_key: str | None = None
    instasent_base_url: str = DEFAULT_INSTASENT_BASE_URL
    log_level: str = "INFO"
    shutdown_grace: float = 10.0
    metrics_addr: str | None = None
    import_workers: int | None = None  # None: one per core but one
    retry_base: float = 1.0  # seconds before the first provider retry (doubles each time)
    retry_max: float = 300.0  # the longest wait between two provider attempts
    retry_attempts: int = 15  # provider attempts before a message is FAILED
    # This server among replicas sharing one database, as the owner of its outbox claims. Stable across
    # restarts (the host name by default), so that a restarted server takes its own claims back at once.
    replica: str = ""
    # How long a replica's hold lasts without renewal: its outbox claims and the workflow engine's
    # lease. Beyond a provider request's time (10 s); a dead replica's work is taken over after it.
    lease_seconds: float = 30.0
    # Where the outbox dispatcher runs: "inline", in the server process; "process", in a process of its
    # own (`smschannel outbox`, beside a server started with the same setting), which gives the sending
    # of SMS a core of its own (`smschannel run` then starts it too). Inline by default: on two cores,
    # callbacks absorbed no faster, a newsletter sent apart outran them (README, "Sending apart").
    outbox: str = "inline"
    outbox_metrics_addr: str | None = None  # the outbox process's /metrics (its provider counters)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the config from `SMSCHANNEL_*` / `INSTASENT_*` variables, with SPEC defaults."""
        env = os.environ if env is None else env
        http_addr = env.get("SMSCHANNEL_HTTP_ADDR") or cls.http_addr
        return cls(
            grpc_addr=env.get("SMSCHANNEL_GRPC_ADDR") or cls.grpc_addr,
            http_addr=http_addr,
            public_url=(env.get("SMSCHANNEL_PUBLIC_URL") or f"http://{http_addr}").rstrip("/"),
            db=env.get("SMSCHANNEL_DB") or cls.db,
            admin_key=env.get("SMSCHANNEL_ADMIN_KEY") or None,
            secret_key=env.get("SMSCHANNEL_SECRET_KEY") or None,
            instasent_base_url=(env.get("INSTASENT_BASE_URL") or DEFAULT_INSTASENT_BASE_URL).rstrip("/"),
            log_level=(env.get("SMSCHANNEL_LOG_LEVEL") or cls.log_level).upper(),
            shutdown_grace=float(env.get("SMSCHANNEL_SHUTDOWN_GRACE") or cls.shutdown_grace),
            metrics_addr=env.get("SMSCHANNEL_METRICS_ADDR") or None,
            retry_base=float(env.get("SMSCHANNEL_RETRY_BASE") or cls.retry_base),
            retry_max=float(env.get("SMSCHANNEL_RETRY_MAX") or cls.retry_max),
            retry_attempts=int(env.get("SMSCHANNEL_RETRY_ATTEMPTS") or cls.retry_attempts),
            import_workers=int(env["SMSCHANNEL_IMPORT_WORKERS"]) if env.get("SMSCHANNEL_IMPORT_WORKERS") else None,
            replica=env.get("SMSCHANNEL_REPLICA") or socket.gethostname(),
            lease_seconds=float(env.get("SMSCHANNEL_LEASE_SECONDS") or cls.lease_seconds),
            outbox=(env.get("SMSCHANNEL_OUTBOX") or cls.outbox).lower(),
            outbox_metrics_addr=env.get("SMSCHANNEL_OUTBOX_METRICS_ADDR") or None,
        )

    def problem(self) -> str | None:
        """Why this configuration cannot run, or None."""
        if self.outbox not in OUTBOX_MODES:
            return f"SMSCHANNEL_OUTBOX must be one of {', '.join(OUTBOX_MODES)}, not {self.outbox!r}"
        if self.metrics_addr and self.metrics_addr == self.outbox_metrics_addr:
            return "SMSCHANNEL_OUTBOX_METRICS_ADDR must differ from SMSCHANNEL_METRICS_ADDR (two processes listen)"
        if "://" in self.db and not self.secret_key:
            # Replicas and the sidecar must share one key (tokens at rest, page tokens, the sidecar's
            # credential), and a database URL has no directory to keep a generated one in.
            return "SMSCHANNEL_SECRET_KEY is required with a database URL: give every replica and the sidecar the same"
        return None

    @property
    def secret_key_file(self) -> Path:
        """Where a generated secret key lives: beside the SQLite file."""
        return Path(f"{self.db}.secret.key")
