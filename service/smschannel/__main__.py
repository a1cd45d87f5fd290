"""Command line: `python -m smschannel {server,outbox,sidecar,run,healthcheck}`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .config import Config
from .jsonlog import configure

__all__ = ["main"]

log = logging.getLogger("smschannel")


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def run_server(config: Config) -> None:
    """The gRPC server in the foreground."""
    early = _remember_stop_signals()
    import uvloop

    from .server import serve

    uvloop.run(serve(config, early))


def run_outbox(config: Config) -> None:
    """The outbox process in the foreground (beside a server run with SMSCHANNEL_OUTBOX=process)."""
    early = _remember_stop_signals()
    import uvloop

    from .server import serve_outbox

    sys.exit(uvloop.run(serve_outbox(config, early)))


def _remember_stop_signals() -> list[int]:
    """From the first moment: a SIGTERM or SIGINT while the process starts (imports, migrations) is
    remembered, and it drains as soon as it has started, instead of dying of it (`smschannel run` may
    pass one on before a child is up: it then exited 241). A second one while it still starts (a start
    that hangs, on a database that does not answer) stops it at once."""
    early: list[int] = []

    def remember(signum: int, _frame: object) -> None:
        if early:
            raise SystemExit(128 + signum)
        early.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, remember)
    return early


def run_sidecar(config: Config) -> None:
    """The HTTP sidecar in the foreground."""
    import uvicorn

    from .asgi import uvicorn_config
    from .sidecar.app import create_app

    host, port = _split_addr(config.http_addr)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again under the handler that
    # was there before it: with the default one the sidecar died of it (exit -15, `run` then 241). A
    # clean stop exits 0 (SPEC §11), so the handler it finds is one that does nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(uvicorn_config(create_app(config), host, port)).run()


def healthcheck(config: Config, role: str) -> int:
    """0 when the server answers SERVING (or the sidecar's /healthz answers), else 1: for HEALTHCHECK."""
    if role == "sidecar":
        import httpx

        host, port = _split_addr(config.http_addr)
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        try:
            return 0 if httpx.get(f"http://{host}:{port}/healthz", timeout=3).status_code == 200 else 1
        except httpx.HTTPError:
            return 1
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    host, port = _split_addr(config.grpc_addr)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    try:
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError:
        return 1
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


def _die_with_parent() -> None:
    """In a child, before it runs: SIGTERM when `smschannel run` dies, even of SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _run_all(config: Config) -> int:
    """Server and sidecar as child processes, and the outbox process with SMSCHANNEL_OUTBOX=process; a
    signal to us is passed to each, once.

    The children run in their own session, so a Ctrl-C on the terminal reaches them only through us:
    each gets one SIGTERM-like signal and drains, instead of a second one arriving while it exits (it
    then died of SIGTERM and `make run` reported Error 241). A hang-up (the terminal closed) stops
    them too, they stop if this process dies of anything, and a second Ctrl-C stops them at once.
    Exit 0 when all stopped cleanly."""
    roles = ("server", "outbox", "sidecar") if config.outbox == "process" else ("server", "sidecar")
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smschannel", role, start_new_session=True, preexec_fn=_die_with_parent
        )
        for role in roles
    ]
    loop = asyncio.get_running_loop()
    stopping = False

    def stop(sig: signal.Signals) -> None:
        nonlocal stopping
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGKILL if stopping else sig)
        stopping = True

    def asked(sig: signal.Signals) -> None:
        stop(signal.SIGTERM if sig is signal.SIGHUP else sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, asked, sig)
    waits = [asyncio.ensure_future(c.wait()) for c in children]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if not stopping:
        stop(signal.SIGTERM)  # one ended by itself: stop the others too
    codes = await asyncio.gather(*waits)
    return next((code for code in codes if code != 0), 0)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="smschannel", description=__doc__)
    parser.add_argument("command", choices=["server", "outbox", "sidecar", "run", "healthcheck"], help="what to run")
    parser.add_argument("role", nargs="?", choices=["server", "sidecar"], default="server", help="for healthcheck")
    args = parser.parse_args(argv)
    config = Config.from_env()
    if (problem := config.problem()) is not None:
        sys.exit(f"smschannel: {problem}")  # exit status 1, the reason on stderr
    configure(config.log_level)
    if args.command == "server":
        run_server(config)
    elif args.command == "outbox":
        if config.outbox != "process":  # beside an inline server, both would send: refuse
            sys.exit(
                "smschannel: the outbox process runs beside a server with SMSCHANNEL_OUTBOX=process: set it on both"
            )
        run_outbox(config)
    elif args.command == "sidecar":
        run_sidecar(config)
    elif args.command == "healthcheck":
        sys.exit(healthcheck(config, args.role))
    else:
        sys.exit(asyncio.run(_run_all(config)))


if __name__ == "__main__":
    main()
