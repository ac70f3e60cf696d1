"""Spec and suite agree: every clause has a test, every test names known clauses."""

import ast
from pathlib import Path

from bgmatrix import spec

SUITE = Path(__file__).resolve().parent.parent / "spec"


def marked_clauses() -> dict[str, list[str]]:
    """test node -> clause IDs named by its ``pytest.mark.clause(...)`` decorators."""
    found: dict[str, list[str]] = {}
    for path in sorted(SUITE.glob("test_*.py")):
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


def test_the_spec_parses_into_unique_clauses():
    ids = [c.id for c in spec.load()]
    assert len(ids) == len(set(ids)) > 0
    assert spec.spec_version().count(".") == 2


def test_every_clause_has_a_test():
    tested = {cid for ids in marked_clauses().values() for cid in ids}
    untested = [c.id for c in spec.load() if c.id not in tested]
    assert not untested, f"clauses without a test: {untested}"


def test_every_test_names_known_clauses():
    known = set(spec.by_id())
    unknown = {t: ids for t, ids in marked_clauses().items() if set(ids) - known}
    assert not unknown, f"tests naming unknown clauses: {unknown}"


def test_every_spec_test_is_marked():
    marked = set(marked_clauses())
    for path in sorted(SUITE.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                assert f"{path.name}::{node.name}" in marked, f"{node.name} names no clause"


def test_a_clause_without_a_test_is_caught(tmp_path):
    """The check itself can fail: a spec with an extra clause has an untested clause."""
    for chapter in spec.CHAPTERS:
        text = (spec.SPEC_DIR / f"{chapter}.md").read_text(encoding="utf-8")
        (tmp_path / f"{chapter}.md").write_text(text, encoding="utf-8")
    (tmp_path / "index.md").write_text("Spec version: 9.9.9\n", encoding="utf-8")
    extra = (
        "\n### ZZZ-1 — An untested clause {#ZZZ-1}\n\nLevel: FastAPI · Scenarios: 1\n\n"
        "**MUST.** Something MUST happen.\n"
    )
    with open(tmp_path / "resolution.md", "a", encoding="utf-8") as fh:
        fh.write(extra)
    tested = {cid for ids in marked_clauses().values() for cid in ids}
    assert "ZZZ-1" in {c.id for c in spec.load(tmp_path)} - tested
