"""Generate the Python code of protos/ into service/smschannel/v1 (never edited by hand).

The proto package `smschannel.v1` is the Python import path, so the generated `_pb2_grpc` files'
`from smschannel.v1 import ...` lines resolve without rewriting. Run by `make gen`.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path) -> None:
    """Compile every proto of smschannel/v1 into `out` (the package root)."""
    protos = sorted((ROOT / "protos").glob("smschannel/v1/*.proto"))
    target = out / "smschannel" / "v1"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    # The mypy-protobuf plugins live beside this interpreter (the venv), which need not be on PATH.
    bindir = Path(sys.executable).parent
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(ROOT / "protos")) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    (target / "__init__.py").write_text('"""Generated from protos/smschannel/v1 by scripts/gen_protos.py."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "service")
