"""The Dockerfile (no Docker engine here): hadolint clean, everything it copies exists, and its build
and run commands work in a plain virtualenv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .procs import free_port, is_serving, wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_copied_path_exists_and_is_not_ignored() -> None:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    ignore = (ROOT / ".dockerignore").read_text()
    for src in sources:
        assert (ROOT / src).exists(), src
        assert re.search(rf"^!{re.escape(src.rstrip('/'))}/?$", ignore, re.M), f"{src} is excluded by .dockerignore"


@pytest.mark.slow
def test_the_build_and_run_commands_work_in_a_plain_venv(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for src in ("pyproject.toml", "README.md", "scripts/gen_protos.py", "protos", "service"):
        target = context / src
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / src).is_dir():
            skip = ("v1", "__pycache__") if src == "service" else ("__pycache__",)  # as .dockerignore
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns(*skip))
        else:
            shutil.copy(ROOT / src, target)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run = {"cwd": context, "check": True, "capture_output": True}
    subprocess.run([*pip, "grpcio-tools==1.85.1", "mypy-protobuf==5.1.0"], **run)  # type: ignore[call-overload]
    subprocess.run([str(env_dir / "bin" / "python"), "scripts/gen_protos.py"], **run)  # type: ignore[call-overload]
    subprocess.run([*pip, "."], **run)  # type: ignore[call-overload]
    addr = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "SMSCHANNEL_GRPC_ADDR": addr,
        "SMSCHANNEL_DB": str(tmp_path / "data" / "smschannel.db"),
        "SMSCHANNEL_ADMIN_KEY": "k",
    }
    server = subprocess.Popen([str(env_dir / "bin" / "smschannel"), "server"], env=env, cwd=tmp_path)
    try:
        wait_for(lambda: is_serving(addr), what="the installed server")
        check = subprocess.run([str(env_dir / "bin" / "smschannel"), "healthcheck"], env=env, check=False)
        assert check.returncode == 0
    finally:
        server.terminate()
        server.wait(timeout=15)
    down = subprocess.run([str(env_dir / "bin" / "smschannel"), "healthcheck"], env=env, check=False)
    assert down.returncode == 1
