"""Generate the Python code of protos/ into service/smschannel/v1 (never edited by hand).

The proto package `smschannel.v1` is the Python import path, so the generated `_pb2_grpc` files'
`from smschannel.v1 import ...` lines resolve without rewriting. Run by `make gen`; the Python client's
build (clients/python/setup.py) runs `generate` too, so a wheel of the client carries the same code.
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata, resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def plugin(name: str) -> Path:
    """The protoc plugin script installed with the mypy-protobuf that this interpreter imports.

    Not looked up on PATH nor beside sys.executable: make runs the venv's Python without activating it,
    and pip's isolated build environment (building the client's wheel) installs scripts elsewhere."""
    dist = metadata.distribution("mypy-protobuf")
    for file in dist.files or ():
        if file.name == name:
            return Path(str(dist.locate_file(file))).resolve()
    sys.exit(f"{name} is not among the files of the installed mypy-protobuf")


def generate(out: Path, package: str = "smschannel") -> None:
    """Compile every proto of smschannel/v1 into `out`/`package`/v1.

    For another package than `smschannel` (the client library), the generated imports are rewritten
    from `smschannel.v1` to `package.v1`: one deterministic step, no sys.path tricks."""
    protos = sorted((ROOT / "protos").glob("smschannel/v1/*.proto"))
    build = out / "_build" if package != "smschannel" else out
    target = out / package / "v1"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={build}",
        f"--grpc_python_out={build}",
        f"--mypy_out=quiet:{build}",
        f"--mypy_grpc_out=quiet:{build}",
        *(str(p.relative_to(ROOT / "protos")) for p in protos),
    ]
    build.mkdir(parents=True, exist_ok=True)
    code = protoc.main(args)
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    if package != "smschannel":
        for src in sorted((build / "smschannel" / "v1").iterdir()):
            text = src.read_text().replace("from smschannel.v1 import", f"from {package}.v1 import")
            text = text.replace("import smschannel.v1.", f"import {package}.v1.")
            (target / src.name).write_text(text)
        shutil.rmtree(build)
    (target / "__init__.py").write_text('"""Generated from protos/smschannel/v1 by scripts/gen_protos.py."""\n')


if __name__ == "__main__":
    generate(ROOT / "service")
    if (ROOT / "clients" / "python" / "src").is_dir():  # absent in the Docker build context
        generate(ROOT / "clients" / "python" / "src", "smschannel_client")
