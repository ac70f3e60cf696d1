"""One command line: `bgmatrix <verb>`. Bad input gets one clear line and exit code 2, Ctrl-C
one line and exit code 130, and nothing is written."""

import importlib
import inspect
import json
import os
import pkgutil
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

import bgmatrix
from bgmatrix import cli, errors
from bgmatrix.plan import store
from bgmatrix.spec import ROOT


def bgmatrix_cmd(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bgmatrix", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_help_lists_every_verb_with_a_line_of_help():
    proc = bgmatrix_cmd("--help")
    assert proc.returncode == 0
    listed = {line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith("    ") and line.split()}
    assert set(cli.VERBS) <= listed
    for verb in ("run", "show", "plan", "report", "cite", "candidates", "shard", "watch",
                 "snapshot", "reproduce"):
        assert verb in cli.VERBS and cli.VERBS[verb][1]


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_every_verb_has_its_own_options(verb):
    parser = cli.parser(verb)
    args = {a.dest for a in parser._subparsers._group_actions[0].choices[verb]._actions}
    assert "help" in args and len(args) > 1  # the module filled in its arguments


@pytest.mark.parametrize(
    "args, says",
    [
        (["nope"], "invalid choice: 'nope'"),
        ([], "required: <verb>"),
        (["run", "fastapi==0.999.0"], "fastapi 0.999.0 is not a planned release"),
        (["run", "no-such-cell"], "unknown cell 'no-such-cell'"),
        (["run", "--tag", "no-such-tag"], "no cell is tagged 'no-such-tag'"),
        (["run"], "name a cell"),
        (["run", "--jobs", "many"], "invalid int value: 'many'"),
        (["show", "no-such-cell", "--results", "/nonexistent"], "no result for"),
        (["shard", "matrix", "/nonexistent/listing.json"], "cannot be read"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, says):
    before = sorted((ROOT / "results").glob("*.json"))
    proc = bgmatrix_cmd(*args)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("bgmatrix")
    assert "Traceback" not in proc.stderr
    assert sorted((ROOT / "results").glob("*.json")) == before


def test_unknown_version_names_the_planned_range_in_version_order():
    cells = store.load_cells()
    versions = {c["starlette"] for c in cells if c["kind"] == "starlette"}
    oldest = min(versions, key=store.version_key)
    newest = max(versions, key=store.version_key)
    assert store.version_key("0.9.9") < store.version_key("0.11.1")  # not string order
    with pytest.raises(errors.UsageError) as caught:
        store.select(cells, ["starlette==0.0.1"], [])
    assert f"(planned: {oldest} … {newest})" in str(caught.value)
    fastapi = {c["fastapi"] for c in cells if c["fastapi"]}
    with pytest.raises(errors.UsageError) as caught:
        store.select(cells, ["fastapi==0.0.1"], [])
    low = min(fastapi, key=store.version_key)
    high = max(fastapi, key=store.version_key)
    assert f"(planned: {low} … {high})" in str(caught.value)


def test_version_key_orders_like_releases():
    ordered = ["0.9.9", "0.9.10", "0.10.0", "0.26.0", "0.26.0.post1", "1.0.0rc1", "1.0.0",
               "1.10.0"]
    assert sorted(reversed(ordered), key=store.version_key) == ordered


def _result(clauses):
    return {"cell": {"id": "fa-1.0.0_st-1.0.0_py3.11", "fastapi": "1.0.0",
                     "starlette": "1.0.0", "python": "3.11"},
            "state": "ok", "message": None, "provenance": {}, "clauses": clauses}


def test_show_sorts_clauses_by_number_and_prints_n_a_reasons():
    text = cli.describe(_result({
        "ATTACH-10": {"verdict": "n/a", "label": "n/a",
                      "reason": "release has no temporal `response: Response` parameter"},
        "ATTACH-2": {"verdict": "conforms", "label": "runs"},
        "ATTACH-1": {"verdict": "deviates", "label": "drop"},
        "EXEC-1": {"verdict": "conforms", "label": "after-body"},
    }))
    order = [line.split()[0] for line in text.splitlines()[1:]]
    assert order == ["ATTACH-1", "ATTACH-2", "ATTACH-10", "EXEC-1"]
    assert "release has no temporal `response: Response` parameter" in text


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    # A verb that waits (reading a listing from stdin), interrupted as a terminal would.
    # SIGINT restored to its default in the child: a shell that started this run in the
    # background may have set it to "ignore", which Python would inherit and keep.
    proc = subprocess.Popen([sys.executable, "-m", "bgmatrix", "shard", "matrix", "-"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3)  # usually past the imports, blocked on stdin; either way it must be 130
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["bgmatrix shard: interrupted"]
    assert "Traceback" not in err


def test_every_project_exception_is_in_the_tree_and_drawn_in_its_docstring():
    found = {}
    for info in pkgutil.walk_packages(bgmatrix.__path__, "bgmatrix."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == info.name):
                found[f"{info.name}.{name}"] = obj
    assert len(found) >= 12
    outside = [n for n, c in found.items() if not issubclass(c, errors.BgmatrixError)]
    assert outside == []
    undrawn = [n for n, c in found.items() if c.__name__ not in errors.__doc__]
    assert undrawn == []


def test_exit_code_2_is_chosen_in_one_place():
    sources = {p: p.read_text(encoding="utf-8") for p in (ROOT / "bgmatrix").rglob("*.py")}
    choosing = [str(p.relative_to(ROOT)) for p, s in sources.items()
                if "USAGE_ERROR" in s and p.name not in ("cli.py", "errors.py")]
    assert choosing == []
    programs = [str(p.relative_to(ROOT)) for p, s in sources.items()
                if 'if __name__ == "__main__"' in s]
    assert programs == []


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "no plan"),
        ('{"schema": 1, "cells": [', "corrupt"),
        ('{"schema": 7, "cells": []}', "not a schema-1 plan"),
        ('{"schema": 1, "cells": [{"tags": []}]}', "cell 0: 'id' is missing"),
        ('[]', "not a JSON object"),
    ],
)
def test_a_missing_corrupt_or_other_plan_is_one_line(tmp_path, content, says):
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(store.PlanFileError, match=says) as err:
        store.load_cells(path)
    assert "\n" not in str(err.value)
    proc = bgmatrix_cmd("shard", "--plan", str(path), "run", "1", "2", "--out",
                        str(tmp_path / "out"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_committed_plan_matches_its_schema():
    schema = json.loads(store.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    plan = json.loads(store.PLAN_PATH.read_text(encoding="utf-8"))
    errors_ = list(jsonschema.Draft202012Validator(schema).iter_errors(plan))
    assert errors_ == []
    broken = dict(plan, cells=[dict(plan["cells"][0], kind="other")])
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))


def test_the_plan_store_is_stdlib_only_and_its_path_absolute():
    assert store.PLAN_PATH.is_absolute()
    code = ("import sys, bgmatrix.plan.store; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('packaging', 'jsonschema', 'httpx', 'requests', 'pypi_simple')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.strip() == "[]", proc.stderr


def test_selection_by_release_and_tag():
    cells = store.load_cells()
    newest = max((c["fastapi"] for c in cells if c["fastapi"]), key=store.version_key)
    picked = store.select(cells, [f"fastapi=={newest}"], [])
    assert picked and all(c["fastapi"] == newest for c in picked)
    headline = store.select(cells, [], ["headline"])
    assert 10 <= len(headline) <= 30
