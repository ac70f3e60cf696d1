"""The compatibility rows' recorder: each test observes one row and records it as JSON.

Run only by ``bgmatrix compat`` (bgmatrix/run/compat.py), inside a fresh environment holding
FastAPI 0.165.0 or a candidate build; it sets ``BGMATRIX_COMPAT=1``.  Anywhere else (the host's
``pytest``, which lacks FastAPI) nothing here is collected.

A test never asserts what a build should do: it records what it saw (``label`` and ``facts``).
It fails only when the harness itself broke; that failure is recorded as ``harness-error``.
"""

import json
import os
import traceback

import pytest

if os.environ.get("BGMATRIX_COMPAT") != "1":
    collect_ignore_glob = ["test_*.py"]


def pytest_addoption(parser):
    parser.addoption("--compat-out", default=None, help="append one JSON line per row here")


class Row:
    """What one row saw: a short canonical label and the raw facts behind it."""

    def __init__(self):
        self.row = None
        self.label = None
        self.facts = {}

    def record(self, row, label, facts):
        self.row, self.label, self.facts = row, label, facts


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item._compat_error = "".join(
            traceback.format_exception_only(call.excinfo.type, call.excinfo.value)
        ).strip()[-2000:] if call.excinfo else report.longreprtext[-2000:]


@pytest.fixture
def row(request):
    seen = Row()
    yield seen
    out = request.config.getoption("--compat-out")
    if not out:
        return
    error = getattr(request.node, "_compat_error", None)
    record = {
        "test": request.node.nodeid,
        "row": seen.row,
        "label": seen.label,
        "facts": seen.facts,
        "outcome": "harness-error" if error or seen.row is None else "observed",
        "error": error if error else (None if seen.row is not None else "nothing recorded"),
    }
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
