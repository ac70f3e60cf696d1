"""Spec and suite agree: every clause has a test, every test names known clauses.

Each check is a function of the spec folder and the suite folder, so the self-tests at the end
run the very same check on a copy with one defect added, and see it fail.
"""

import ast
import shutil
from pathlib import Path

from bgmatrix import spec

SUITE = Path(__file__).resolve().parent.parent / "spec"


def marked_clauses(suite: Path = SUITE) -> dict[str, list[str]]:
    """test node -> clause IDs named by its ``pytest.mark.clause(...)`` decorators."""
    found: dict[str, list[str]] = {}
    for path in sorted(suite.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "clause"
                ):
                    ids = [a.value for a in deco.args if isinstance(a, ast.Constant)]
                    found.setdefault(f"{path.name}::{node.name}", []).extend(ids)
    return found


def untested_clauses(spec_dir: Path = spec.SPEC_DIR, suite: Path = SUITE) -> list[str]:
    """Clauses of the spec in ``spec_dir`` that no test of ``suite`` names."""
    tested = {cid for ids in marked_clauses(suite).values() for cid in ids}
    return [c.id for c in spec.load(spec_dir) if c.id not in tested]


def unknown_clauses_named(spec_dir: Path = spec.SPEC_DIR,
                                 suite: Path = SUITE) -> dict[str, list[str]]:
    """Tests of ``suite`` that name a clause the spec in ``spec_dir`` does not define."""
    known = set(spec.by_id(spec_dir))
    return {t: sorted(set(ids) - known) for t, ids in marked_clauses(suite).items()
            if set(ids) - known}


def unmarked_tests(suite: Path = SUITE) -> list[str]:
    """Module-level test functions of ``suite`` that name no clause."""
    marked = set(marked_clauses(suite))
    found = []
    for path in sorted(suite.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.name.startswith("test_")
                    and f"{path.name}::{node.name}" not in marked):
                found.append(f"{path.name}::{node.name}")
    return found


def test_the_spec_parses_into_unique_clauses():
    ids = [c.id for c in spec.load()]
    assert len(ids) == len(set(ids)) > 0
    assert spec.spec_version().count(".") == 2


def test_every_clause_has_a_test():
    untested = untested_clauses()
    assert not untested, f"clauses without a test: {untested}"


def test_every_test_names_known_clauses():
    unknown = unknown_clauses_named()
    assert not unknown, f"tests naming unknown clauses: {unknown}"


def test_every_spec_test_is_marked():
    unmarked = unmarked_tests()
    assert not unmarked, f"tests naming no clause: {unmarked}"


# -- the checks can fail -------------------------------------------------------------------------


def spec_copy(folder: Path) -> Path:
    shutil.copytree(spec.SPEC_DIR, folder, ignore=shutil.ignore_patterns("*.tmp*"))
    return folder


def suite_copy(folder: Path) -> Path:
    folder.mkdir()
    for path in SUITE.glob("test_*.py"):
        shutil.copy(path, folder / path.name)
    return folder


def test_a_clause_without_a_test_is_caught(tmp_path):
    """The coverage check itself, on a copy of the spec with one clause no test names."""
    # A plain copy is covered, as the real spec is.  (spec.load caches by folder: a second
    # copy gets the extra clause.)
    assert untested_clauses(spec_copy(tmp_path / "plain")) == []
    copy = spec_copy(tmp_path / "spec")
    extra = (
        "\n### ZZZ-1 — An untested clause {#ZZZ-1}\n\n"
        "Level: FastAPI · Scenarios: 1 · Since: 0.2.0 · Scope: #11215\n\n"
        "**MUST.** Something MUST happen.\n"
    )
    with open(copy / "resolution.md", "a", encoding="utf-8") as fh:
        fh.write(extra)
    assert untested_clauses(copy) == ["ZZZ-1"]


def test_a_test_naming_an_unknown_clause_is_caught(tmp_path):
    suite = suite_copy(tmp_path / "suite")
    assert unknown_clauses_named(suite=suite) == {}  # a plain copy names known clauses only
    (suite / "test_zz_extra.py").write_text(
        "import pytest\n\n\n@pytest.mark.clause('ZZZ-9')\ndef test_extra():\n    pass\n",
        encoding="utf-8")
    assert unknown_clauses_named(suite=suite) == {"test_zz_extra.py::test_extra": ["ZZZ-9"]}


def test_a_test_naming_no_clause_is_caught(tmp_path):
    suite = suite_copy(tmp_path / "suite")
    assert unmarked_tests(suite) == []  # a plain copy marks every test
    (suite / "test_zz_extra.py").write_text("def test_unmarked():\n    pass\n", encoding="utf-8")
    assert unmarked_tests(suite) == ["test_zz_extra.py::test_unmarked"]
