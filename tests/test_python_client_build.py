"""The Python client builds its own generated code: `pip install ./clients/python` works from a clean checkout.

Each build runs on a copy of what a clean checkout holds (no generated `v1/`, no egg-info), so the
generated code that `make gen` leaves in this working tree can neither help nor hide a broken hook.
Building needs PyPI (or pip's cache) for the build requirements, as `make` does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
# The services the generated code must define, one module each plus its stub module and .pyi files.
SERVICES = ("common", "contacts_service", "sms_channel_service", "workflow_service")


def clean_checkout(dest: Path) -> Path:
    """What the client's build sees in a fresh clone: the client's sources, the protos and the generator."""
    ignored = shutil.ignore_patterns("v1", "*.egg-info", "build", "dist", "__pycache__")
    shutil.copytree(CLIENT, dest / "clients" / "python", ignore=ignored)
    shutil.copytree(ROOT / "protos", dest / "protos")
    (dest / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "gen_protos.py", dest / "scripts" / "gen_protos.py")
    return dest / "clients" / "python"


def pip(*args: str | Path, cwd: Path) -> None:
    """`python -m pip ...` with this interpreter; the build requirements come from PyPI or pip's cache."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def generated_in(wheel: Path) -> set[str]:
    """The generated files a wheel carries, by name."""
    with zipfile.ZipFile(wheel) as zf:
        return {Path(n).name for n in zf.namelist() if n.startswith("smschannel_client/v1/")}


def expected() -> set[str]:
    """Every module, stub module and type stub that scripts/gen_protos.py writes, and the package's __init__."""
    names = {"__init__.py"}
    for service in SERVICES:
        names |= {f"{service}_pb2.py", f"{service}_pb2.pyi", f"{service}_pb2_grpc.py", f"{service}_pb2_grpc.pyi"}
    return names


@pytest.mark.slow
def test_a_wheel_built_from_a_clean_checkout_carries_importable_stubs(tmp_path: Path) -> None:
    client = clean_checkout(tmp_path / "checkout")
    pip("wheel", "--no-deps", "-w", tmp_path / "dist", client, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("smschannel_client-*.whl")
    assert generated_in(wheel) == expected()
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    assert not [n for n in names if n.split("/")[0] in ("_build", "scripts", "protos", "smschannel")]
    # The wheel's own code, ahead of this venv's editable install: the rewritten imports must resolve
    # inside the wheel (`from smschannel_client.v1 import ...`), not against the service's `smschannel.v1`.
    probe = (
        "import smschannel_client, smschannel_client.v1.contacts_service_pb2 as c, "
        "smschannel_client.v1.workflow_service_pb2_grpc as w; "
        "print(smschannel_client.__file__); print(c.Contact(first_name='Ana').first_name); print(w.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, name, stubs = result.stdout.split()
    assert Path(first).is_relative_to(tmp_path / "site")
    assert name == "Ana"
    assert Path(stubs).is_relative_to(tmp_path / "site")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="this venv's setuptools makes the sdist")
def test_the_sdist_builds_its_wheel_away_from_the_repository(tmp_path: Path) -> None:
    client = clean_checkout(tmp_path / "checkout")
    # What `make gen` once left in a working tree (here a module whose proto is gone) stays out of the sdist.
    (client / "src" / "smschannel_client" / "v1").mkdir()
    (client / "src" / "smschannel_client" / "v1" / "removed_service_pb2.py").write_text("")
    # Making an sdist needs no grpcio-tools (it only copies files), so this venv's setuptools will do.
    make_sdist = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", make_sdist, str(tmp_path / "sdist")],
        cwd=client,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sdist = tmp_path / "sdist" / result.stdout.split()[-1]
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[-1] for n in tar.getnames()]
    assert not [n for n in names if n.startswith("src/smschannel_client/v1")]
    assert {"scripts/gen_protos.py", "protos/smschannel/v1/contacts_service.proto"} <= set(names)
    shutil.rmtree(tmp_path / "checkout")  # no repository around: the sdist must carry protos and generator
    pip("wheel", "--no-deps", "-w", tmp_path / "dist", sdist, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("smschannel_client-*.whl")
    assert generated_in(wheel) == expected()


@pytest.mark.slow
def test_an_editable_install_imports_the_code_generated_in_src(tmp_path: Path) -> None:
    # make installs the client with `pip install --no-deps -e clients/python`, then `make gen` writes
    # src/smschannel_client/v1: the editable install must import from src/, where the hook writes too.
    client = clean_checkout(tmp_path / "checkout")
    venv.create(tmp_path / "venv", with_pip=False)
    target = tmp_path / "venv" / "bin" / "python"
    pip("--python", target, "install", "--no-deps", "-e", client, cwd=tmp_path)
    assert sorted(p.name for p in (client / "src" / "smschannel_client" / "v1").iterdir()) == sorted(expected())
    probe = "import importlib.util; print(importlib.util.find_spec('smschannel_client').origin)"
    result = subprocess.run([target, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert Path(result.stdout.strip()).resolve() == (client / "src" / "smschannel_client" / "__init__.py").resolve()


def test_the_build_requirements_are_pinned_as_the_repository_pins_them() -> None:
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["build-system"]["requires"]
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    for tool in ("grpcio-tools", "mypy-protobuf"):
        pinned = [r for r in dev if r.startswith(f"{tool}==")]
        assert pinned, f"the root pyproject.toml no longer pins {tool}"
        assert pinned[0] in client, f"clients/python builds with another {tool} than `make gen`"
