"""The recorder: turns each spec test into one JSON record of observations and verdicts.

A test names its clauses with ``@pytest.mark.clause("ATTACH-3", ...)``, observes through the
``record`` fixture and gives every named clause a verdict.  A release that deviates is data:
the test still passes.  A test fails only when the harness itself broke, and that failure is
recorded too (``harness-error``).  A scenario that exceeds its budget is recorded as
``timeout`` and the run goes on.

Records are appended to ``--bgmatrix-out`` as JSON lines after every test, so a run killed
half-way keeps what it finished.  Python 3.8 compatible.
"""
import json
import os
import platform
import sys
import traceback

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# The repository root, for bgmatrix.vocabulary: the labels, passing sets and expectation texts
# the suite, wire mode and the site share (stdlib-only, Python 3.8 compatible).
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from harness import Harness, ScenarioTimeout  # noqa: E402

from bgmatrix import vocabulary  # noqa: E402

VERDICTS = vocabulary.VERDICTS
_TRACE_LIMIT = 4000  # characters of a harness traceback kept: enough to locate the fault


def pytest_addoption(parser):
    parser.addoption("--bgmatrix-out", default=None, help="append JSON-lines records here")


def pytest_configure(config):
    config.addinivalue_line("markers", "clause(*ids): the spec clauses a test checks")
    config._bgmatrix_hung = False


def pytest_collection_modifyitems(config, items):
    """In a Starlette-only cell, run only the tests whose clauses are all Starlette-level.

    The host passes the Starlette-level clause IDs (read from spec/) in BGMATRIX_ONLY_CLAUSES,
    so the suite needs no copy of the spec's levels.
    """
    only = os.environ.get("BGMATRIX_ONLY_CLAUSES")
    if not only:
        return
    allowed = set(only.split(","))
    keep, drop = [], []
    for item in items:
        (keep if set(clauses_of(item)) <= allowed else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def clauses_of(item):
    ids = []
    for mark in item.iter_markers("clause"):
        ids.extend(mark.args)
    return ids


class Record(object):
    """What one test saw and concluded."""

    def __init__(self, nodeid, clauses):
        self.nodeid = nodeid
        self.clauses = list(clauses)
        self.observations = {}
        self.verdicts = {}
        self.timed_out = None
        self.harness = Harness()

    def observe(self, key, value):
        """Keep an observation (an Exchange, a list of them, or plain JSON data)."""
        self.observations[key] = _jsonable(value)
        return value

    def grade(self, key, label, graded=None):
        """Grade a clause by its expectation ``key`` (a clause ID, or ``<clause>/<case>``, see
        ``bgmatrix.vocabulary.EXPECTATIONS``).  ``label`` is what was seen and is recorded;
        ``graded`` is what the expectation judges when it is not ``label`` itself: the label
        of each case of a composite label.  Verdict and expectation text come from one call."""
        clause = vocabulary.clause_of(key)
        self._check(clause)
        verdict, expected = vocabulary.grade(key, label if graded is None else graded)
        self.verdicts[clause] = {"verdict": verdict, "label": label, "expected": expected}
        return verdict

    def not_applicable(self, reason, clauses=None):
        """The release lacks what the clause is about (found by capability, not version)."""
        for clause in clauses or self.clauses:
            self._check(clause)
            self.verdicts[clause] = {"verdict": "n/a", "label": "n/a", "reason": reason}

    def _check(self, clause):
        if clause not in self.clauses:
            raise AssertionError("%s grades %s but its marker does not name it" % (
                self.nodeid, clause))

    def to_json(self, outcome, error=None):
        return {
            "test": self.nodeid,
            "clauses": self.clauses,
            "outcome": outcome,
            "error": error,
            "observations": self.observations,
            "verdicts": self.verdicts,
        }


def _jsonable(value):
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@pytest.fixture
def record(request):
    clauses = clauses_of(request.node)
    if not clauses:
        raise AssertionError("%s has no clause marker" % request.node.nodeid)
    rec = Record(request.node.nodeid, clauses)
    request.node._bgmatrix_record = rec
    return rec


@pytest.fixture
def harness(record):
    """The record's harness: one event log per test."""
    return record.harness


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    # A hanging scenario is a finding about the release, not a broken harness.
    try:
        return (yield)
    except ScenarioTimeout as exc:
        rec = getattr(pyfuncitem, "_bgmatrix_record", None)
        if rec is None:
            raise
        rec.timed_out = str(exc)
        pyfuncitem.config._bgmatrix_hung = True
        return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call" or (call.when == "setup" and report.failed):
        _finish(item, report, call)
    return report


def _finish(item, report, call):
    rec = getattr(item, "_bgmatrix_record", None) or Record(item.nodeid, clauses_of(item))
    error = None
    if rec.timed_out:
        outcome, error = "timeout", rec.timed_out
    elif report.failed:
        outcome = "harness-error"
        error = "".join(traceback.format_exception_only(call.excinfo.type, call.excinfo.value))
        error += "\n" + str(report.longrepr)[-_TRACE_LIMIT:]
    else:
        missing = [c for c in rec.clauses if c not in rec.verdicts]
        if missing:
            outcome = "harness-error"
            error = "no verdict recorded for " + ", ".join(missing)
            report.outcome = "failed"
            report.longrepr = error
        else:
            outcome = "ok"
    _append(item.config, rec.to_json(outcome, error))


def _append(config, data):
    path = config.getoption("--bgmatrix-out")
    if not path:
        return
    with open(path, "a") as fh:
        fh.write(json.dumps(data, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def pytest_sessionfinish(session, exitstatus):
    session.config._bgmatrix_exitstatus = int(exitstatus)
    _append(
        session.config,
        {
            "session": {
                "exitstatus": int(exitstatus),
                "python": platform.python_version(),
                "pytest": pytest.__version__,
            }
        },
    )


def pytest_unconfigure(config):
    # A timed-out scenario may have left a worker thread blocked forever; the interpreter
    # would wait for it at exit.  Everything is written by now, so leave without waiting.
    if getattr(config, "_bgmatrix_hung", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(getattr(config, "_bgmatrix_exitstatus", 0))
