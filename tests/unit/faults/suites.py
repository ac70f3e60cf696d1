"""Tiny in-cell suites run through the real recorder: tests/spec's conftest.py, harness.py,
oracle.py and pytest.ini copied next to one test file written here, so a fault reaches the
result file by the same path a release's behaviour does (JSON lines, then runner.run_suite's
reader, runner.result_for, results.write)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bgmatrix.run import runner

RECORDER = ("conftest.py", "harness.py", "oracle.py", "pytest.ini")

#: Evidence an application may produce: markup, Markdown control characters, text that looks
#: escaped already, invalid UTF-8 (bytes decoded with surrogateescape), another lone
#: surrogate, terminal and bidi controls, and a megabyte of it.
HOSTILE = (
    "<script>alert('x1')</script> <img src=x onerror=\"alert('x2')\">\n"
    "| a | b |\n|---|---|\n**bold-x3** [l](javascript:alert('x4')) `code` _em_ # h {: #id }\n"
    "&lt;script&gt;alert('x5')&lt;/script&gt; \x00\x1b[31m\u202eevil "
    + b"\xff\xfe invalid utf-8 ".decode("utf-8", "surrogateescape")
    + "\ud800 lone\n"
    + "M" * 1_000_000
    + " END"
)
HOSTILE_LABEL = "<script>alert('x6')</script>|*x7*"

SCENARIOS = '''\
import asyncio
import threading
import warnings

import pytest

HOSTILE = {hostile!r}
HOSTILE_LABEL = {label!r}


async def respond(send):
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": b"done", "more_body": False}})


@pytest.mark.clause("EXEC-1")
def test_background_awaits_forever(record, harness):
    async def app(scope, receive, send):
        await respond(send)
        await asyncio.Event().wait()  # a background task that never returns

    record.observe("request", harness.request(app, timeout=1))
    record.grade("EXEC-1", "after-body")


@pytest.mark.clause("EXEC-2")
def test_background_blocks_a_thread_forever(record, harness):
    async def app(scope, receive, send):
        await respond(send)
        loop = asyncio.get_event_loop()
        await loop.run_in_executor(None, threading.Event().wait)  # cannot even be cancelled

    record.observe("request", harness.request(app, timeout=1))
    record.grade("EXEC-2", "sequential")


@pytest.mark.clause("EXEC-5")
def test_app_warns_and_raises_hostile_text(record, harness):
    async def app(scope, receive, send):
        warnings.warn(HOSTILE, UserWarning)
        await respond(send)
        raise RuntimeError(HOSTILE)

    record.observe("request", harness.request(app))
    record.grade("EXEC-5", HOSTILE_LABEL)


@pytest.mark.clause("EXEC-6")
def test_the_harness_breaks_with_hostile_text(record, harness):
    raise ValueError(HOSTILE)
'''


def scenario_suite(folder: Path, hostile: str = HOSTILE, label: str = HOSTILE_LABEL) -> Path:
    """A suite folder holding the real recorder and the scenarios above."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in RECORDER:
        shutil.copyfile(runner.SUITE_DIR / name, folder / name)
    (folder / "test_faults_scenarios.py").write_text(
        SCENARIOS.format(hostile=hostile, label=label), encoding="utf-8")
    return folder
