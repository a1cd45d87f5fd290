"""The README's grpcurl walkthrough, run verbatim against the server, the sidecar and the fake."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .procs import free_port, is_serving, wait_for

ROOT = Path(__file__).resolve().parent.parent
GRPCURL = ROOT / ".tools" / "grpcurl"


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S)
    assert m, "the README has no walkthrough block"
    return m.group(1)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl is installed by make test into .tools/")
def test_the_readme_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    grpc_port, http_port, fake_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{GRPCURL.parent}:{os.environ['PATH']}",
        "SMSCHANNEL_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "SMSCHANNEL_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "SMSCHANNEL_DB": str(tmp_path / "readme.db"),
        "SMSCHANNEL_ADMIN_KEY": "my-admin-key",
        "INSTASENT_BASE_URL": f"http://127.0.0.1:{fake_port}",
        "GRPC": f"127.0.0.1:{grpc_port}",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smschannel.instasent.fake",
                "--port",
                str(fake_port),
                "--token",
                "my-instasent-token",
            ],
            env=env,
        ),
        subprocess.Popen([sys.executable, "-m", "smschannel", "run"], env=env),
    ]
    try:
        wait_for(lambda: is_serving(f"127.0.0.1:{grpc_port}"), what="the server")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{http_port}/healthz"), what="the sidecar")
        script = tmp_path / "walkthrough.sh"
        script.write_text("set -euo pipefail\n" + walkthrough())
        result = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "smschannel.v1.WorkflowService" in out
    assert '"status": "SERVING"' in out
    assert "TOKEN_STATUS_VALID" in out
    assert '"mobile_phone": "+34612345678"' in out
    assert "WORKFLOW_RUN_STATE_COMPLETED" in out
    assert '{"outcome":"applied"}' in out
    assert "SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED" in out
    assert "ACTIVITY_SOURCE_PROVIDER" in out
    assert '"reason": "not_subscribed"' in out  # the dry run after Ana's stop: she is skipped
