"""Command line: `python -m smschannel {server,sidecar,run}`."""

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
    from .server import serve

    asyncio.run(serve(config))


def run_sidecar(config: Config) -> None:
    """The HTTP sidecar in the foreground."""
    import uvicorn

    from .sidecar.app import create_app

    host, port = _split_addr(config.http_addr)
    uvicorn.run(create_app(config), host=host, port=port, log_config=None, access_log=False)


async def _run_both() -> int:
    """Server and sidecar as two child processes; a signal to us is passed to both."""
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "smschannel", role) for role in ("server", "sidecar")
    ]
    loop = asyncio.get_running_loop()

    def forward(sig: signal.Signals) -> None:
        for child in children:
            if child.returncode is None:
                child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, forward, sig)
    waits = [asyncio.ensure_future(c.wait()) for c in children]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    forward(signal.SIGTERM)  # one ended: stop the other too
    codes = await asyncio.gather(*waits)
    return max(codes, key=abs)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="smschannel", description=__doc__)
    parser.add_argument("command", choices=["server", "sidecar", "run"], help="what to run")
    args = parser.parse_args(argv)
    config = Config.from_env()
    configure(config.log_level)
    if args.command == "server":
        run_server(config)
    elif args.command == "sidecar":
        run_sidecar(config)
    else:
        sys.exit(asyncio.run(_run_both()))


if __name__ == "__main__":
    main()
