"""The quality gates of `nox -s tests` can fail: the layers contract (.importlinter) and the type
check (mypy.ini) are run, as configured, on a small stand-in package named ``bgmatrix`` with one
defect added at a time, and must report exactly that defect.

The stand-in has the real layout (cli; site | run; plan; the shared modules), so these tests
check the configuration itself, whatever state the real package is in; `nox -s tests` runs the
same two tools on the real package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bgmatrix.plan import store

ROOT = Path(__file__).resolve().parents[2]

#: The stand-in package: every import points down a layer, as the contract requires.
#: Only some of the optional shared modules exist, as in a tree on its way there.
STAND_IN = {
    "__init__.py": "",
    "__main__.py": "from bgmatrix.cli import main\n",
    "cli.py": "from bgmatrix.run import sweep\nfrom bgmatrix.site import build\n\n\n"
              "def main():\n    pass\n",
    "site/__init__.py": "",
    "site/build.py": "from bgmatrix import results\nfrom bgmatrix.plan import store\n"
                     "from bgmatrix.site import pages\n",
    "site/pages.py": "from bgmatrix import spec\n",
    "run/__init__.py": "",
    "run/sweep.py": "from bgmatrix.plan import store\nfrom bgmatrix.run import runner\n",
    "run/runner.py": "from bgmatrix import results\nfrom bgmatrix.run import env\n",
    "run/env.py": "",
    "plan/__init__.py": "",
    "plan/store.py": "from bgmatrix import spec\n",
    "spec.py": "",
    "results.py": "from bgmatrix import spec\n",
    "snapshot.py": "from bgmatrix import results\n",
    "errors.py": "",
}


def stand_in(folder: Path) -> Path:
    """Write the stand-in package into ``folder``."""
    for name, text in STAND_IN.items():
        path = folder / "bgmatrix" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def tool(name: str) -> str:
    """A console script of the project's environment (beside this interpreter)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} is not installed: it is in the `test` extra"
    return found


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run([tool("lint-imports"), "--no-cache", "--no-logo",
                           str(ROOT / ".importlinter")],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_the_stand_in_keeps_both_contracts_without_every_optional_module(tmp_path):
    proc = lint_imports(stand_in(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


# (file to change, the line added, what lint-imports must say)
DEFECTS = {
    "site-imports-run": ("site/pages.py", "from bgmatrix.run import runner",
                         "bgmatrix.site is not allowed to import bgmatrix.run"),
    "run-imports-site": ("run/runner.py", "from bgmatrix.site import pages",
                         "bgmatrix.run is not allowed to import bgmatrix.site"),
    "run-imports-cli": ("run/sweep.py", "from bgmatrix import cli",
                        "bgmatrix.run is not allowed to import bgmatrix.cli"),
    "plan-imports-run": ("plan/store.py", "from bgmatrix.run import env",
                         "bgmatrix.plan is not allowed to import bgmatrix.run"),
    "shared-imports-plan": ("results.py", "from bgmatrix.plan import store",
                            "bgmatrix.results is not allowed to import bgmatrix.plan"),
    "cycle-in-run": ("run/env.py", "from bgmatrix.run import runner",
                     "No cycles are allowed in bgmatrix.run"),
    "cycle-in-shared": ("spec.py", "from bgmatrix import snapshot",
                        "No cycles are allowed in bgmatrix."),
    "module-in-no-layer": ("extra.py", "",
                           "not listed as layers:\n\n- bgmatrix.extra"),
}


@pytest.mark.parametrize("where, line, says", DEFECTS.values(), ids=DEFECTS.keys())
def test_the_contracts_catch_a_back_edge_a_cycle_and_an_unplaced_module(where, line, says,
                                                                         tmp_path):
    folder = stand_in(tmp_path)
    path = folder / "bgmatrix" / where
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    proc = lint_imports(folder)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout and says in proc.stdout, proc.stdout


def mypy(folder: Path) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "mypy.ini", folder / "mypy.ini")
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def test_mypy_checks_the_bodies_of_unannotated_functions(tmp_path):
    folder = stand_in(tmp_path)
    clean = mypy(folder)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    with open(folder / "bgmatrix" / "run" / "env.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef count():\n    return len(3)\n")  # no annotation: checked anyway
    proc = mypy(folder)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'bgmatrix/run/env.py:4: error: Argument 1 to "len"' in proc.stdout, proc.stdout


def test_the_typed_cell_has_the_keys_the_plan_schema_names():
    """store.Cell (what mypy checks) and schema/plan.schema.json (what loading checks) agree."""
    schema = json.loads((ROOT / "schema" / "plan.schema.json").read_text(encoding="utf-8"))
    cell = schema["$defs"]["cell"]
    assert store.Cell.__required_keys__ == set(cell["required"])
    assert store.Cell.__optional_keys__ == set(cell["properties"]) - set(cell["required"])
    for c in store.load_cells():
        assert store.Cell.__required_keys__ <= set(c) <= set(store.Cell.__annotations__), c["id"]
