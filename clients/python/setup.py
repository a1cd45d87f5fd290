"""Build hook of the client: `smschannel_client.v1` is generated from the protos whenever the package is built.

The generated code is never committed, so without this hook `pip install ./clients/python` from a clean
checkout would install a package that cannot import. The code is made by the repository's one generator,
scripts/gen_protos.py (the same step as `make gen`, with the same import rewriting). An sdist carries copies
of that script and of the protos at the same relative paths, so a wheel built from the sdist is the same.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PACKAGE = "smschannel_client"
GENERATOR = Path("scripts", "gen_protos.py")
PROTOS = Path("protos", "smschannel", "v1")
GOOGLE_TYPES = Path("protos", "google", "type")  # TimeOfDay and Money, imported by the API's protos


def source_root() -> Path:
    """Where scripts/gen_protos.py and protos/ are: this directory in an sdist, the repository's root otherwise."""
    for root in (HERE, HERE.parent.parent):
        if (root / GENERATOR).is_file() and (root / PROTOS).is_dir():
            return root
    raise SystemExit(f"{PACKAGE}: {GENERATOR} and {PROTOS} not found; build from the repository or from an sdist")


def generator() -> ModuleType:
    """scripts/gen_protos.py as a module (a file of the repository, not an installed package)."""
    spec = importlib.util.spec_from_file_location("gen_protos", source_root() / GENERATOR)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{PACKAGE}: cannot load {GENERATOR}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithStubs(build_py):
    """build_py, then the generated stubs: into build_lib for a wheel, into src/ for an editable install."""

    def run(self) -> None:
        super().run()
        # An editable install imports from src/ (where `make gen` writes too), never from build_lib.
        out = HERE / "src" if self.editable_mode else Path(self.build_lib)
        generator().generate(out, PACKAGE)


class SdistWithProtos(sdist):
    """An sdist that can build its wheel far from the repository: it carries the generator and the protos."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = source_root()
        (Path(base_dir) / GENERATOR).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / GENERATOR, Path(base_dir) / GENERATOR)
        for protos in (PROTOS, GOOGLE_TYPES):
            shutil.copytree(root / protos, Path(base_dir) / protos, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
