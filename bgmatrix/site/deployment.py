"""The Deployment page ("Does my task survive a deploy?"), the spec's Deployment chapter and
the home page's one-line answer, all from matrix/deployment.json (written by `bgmatrix
deploy`, bgmatrix/run/deploy.py; read here through its schema, never through the runner).

One table per scenario, servers as rows and the measured cells as columns, each entry the
server's release, the label in words and the verdict; below it what the labels mean for an
application and the safe pattern.  Every sentence that states an outcome is generated from the
record; the fixed texts explain labels, never which server has which.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgmatrix import spec
from bgmatrix.errors import DeployError
from bgmatrix.files import read_checked
from bgmatrix.site.markup import esc
from bgmatrix.site.render import code

DEPLOYMENT_PATH = spec.ROOT / "matrix" / "deployment.json"
PAGE = "deployment.md"
QUESTION = "Does my task survive a deploy?"

#: scenario -> (heading, the clause, what was done)
SCENARIOS = {
    "disconnect": ("The client leaves while the task runs", "DEPLOY-1",
                   "The client read the whole response, closed its connection, and the task "
                   "was released afterwards."),
    "sigterm": ("The server receives SIGTERM (its default graceful period)", "DEPLOY-2",
                "The client had the response; the server's main process got SIGTERM, as every "
                "process manager sends it on a deploy; the task was released 1 s later."),
    "sigterm-graceful": ("SIGTERM with the graceful timeout set shorter than the task",
                         "DEPLOY-3",
                         "As above, with the server's graceful-timeout option set to 1 s and "
                         "the task released 2.5 s after the signal."),
    "serverless": ("The end of a serverless invocation (AWS Lambda through Mangum)", "DEPLOY-4",
                   "One invocation of `Mangum(app)` with an API Gateway HTTP API event; the "
                   "task was released once it had held for 1 s."),
}

#: label -> what it means for an application, in plain words.
MEANING = {
    "completed": "the task ran to its end after the client left",
    "cancelled": "the task was cancelled: its work is lost (it sees `CancelledError`)",
    "unfinished": "the task neither ended nor was cancelled within the wait",
    "gave-up": "the task stopped waiting before it was released",
    "finished": "the server waited for the task, then exited: the deploy did not lose it",
    "killed": "the process exited with the task still running: the task stopped where it "
              "was, with no cancellation and no error of its own",
    "did-not-exit": "the process was still running 10 s after SIGTERM: the platform's "
                    "SIGKILL ends it",
    "no-task": "the task never started",
    "n/a": "the server has no graceful-timeout option",
    "ran-before-return": "the task ran before the handler returned: the response waits for "
                         "the task, and its time counts against the function's timeout",
    "returned-before-task-ended": "the handler returned while the task ran: Lambda freezes "
                                  "it, and it may never finish",
    "handler-failed": "the handler did not return",
}

SAFE = {
    "disconnect": "Nothing to do where every row reads *completed*. The task here ends well "
                  "under a second after the client leaves: a longer one is not measured (daphne's "
                  "`application_close_timeout`, 10 s by default in its source, cancels an "
                  "application still running that long after a disconnect).",
    "sigterm": "Run a server that waits for running tasks at SIGTERM, and keep the platform's "
               "kill timer longer than your longest task (Kubernetes "
               "`terminationGracePeriodSeconds`, 30 s by default; `docker stop -t`, 10 s by "
               "default). Work that must survive a restart or a crash belongs in a task queue "
               "(Celery, RQ, arq, Dramatiq), not in `BackgroundTasks`.",
    "sigterm-graceful": "Set the graceful timeout longer than your longest task and shorter "
                        "than the platform's kill timer (uvicorn `--timeout-graceful-shutdown`, "
                        "hypercorn `--graceful-timeout`, granian `--workers-kill-timeout`): a "
                        "task longer than it is cut off.",
    "serverless": "Keep background work short, or hand it to a queue or a second function: "
                  "the client waits for it, and a task that outlives the handler would be "
                  "frozen.",
}


def load(path: Path = DEPLOYMENT_PATH) -> dict:
    """matrix/deployment.json, valid against schema/deployment.schema.json; a missing or
    invalid file is a one-line :class:`DeployError`."""
    data = read_checked(path, "deployment", DeployError, "deployment record")
    if data is None:
        raise DeployError(f"{path}: missing (run `bgmatrix deploy` to measure it)")
    return data


def _newest_first(data: dict) -> list[dict]:
    def key(entry: dict) -> tuple[int, ...]:
        return tuple(int(p) for p in entry["cell"]["fastapi"].split(".") if p.isdigit())

    return sorted(data["cells"].values(), key=key, reverse=True)


def _runs(entry: dict, scenario: str) -> dict[str, dict]:
    kind = "adapters" if scenario == "serverless" else "servers"
    return entry[kind]


def _entry(run: dict | None, scenario: str) -> str:
    if run is None:
        return "not measured"
    if run["state"] != "ok":
        return f"{esc(run['state'])}: {esc((run.get('message') or '')[:200])}"
    seen = run["scenarios"].get(scenario)
    if seen is None:
        return "not measured"
    return f"{esc(run['version'])}: **{code(seen['label'])}** ({esc(seen['verdict'])})"


def _evidence(run: dict | None, scenario: str) -> str:
    seen = (run or {}).get("scenarios", {}).get(scenario)
    if not seen:
        return ""
    ev = seen["evidence"]
    order = ev.get("effects") or ev.get("order") or []
    facts = [" → ".join(str(code(n)) for n in order)] if order else []
    if ev.get("exit"):
        facts.append(f"exit {esc(ev['exit'])}")
    if ev.get("left_processes"):
        facts.append("processes left behind")
    if ev.get("reason"):
        facts.append(esc(ev["reason"]))
    return "; ".join(facts)


def scenario_section(data: dict, scenario: str) -> list[str]:
    heading, clause, done = SCENARIOS[scenario]
    cells = _newest_first(data)
    names = sorted({n for e in cells for n in _runs(e, scenario)})
    newest = cells[0] if cells else None
    lines = [f"## {heading}", "",
             f"[{clause}](spec/deployment.md#{clause}). {done}", ""]
    head = ["Adapter" if scenario == "serverless" else "Server"]
    head += [f"FastAPI {esc(e['cell']['fastapi'])}" for e in cells]
    head.append(f"Evidence (FastAPI {esc(newest['cell']['fastapi'])})" if newest else "Evidence")
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in names:
        row = [str(code(name))] + [_entry(_runs(e, scenario).get(name), scenario)
                                    for e in cells]
        row.append(_evidence(_runs(newest, scenario).get(name), scenario) if newest else "")
        lines.append("| " + " | ".join(row) + " |")
    seen = sorted({run["scenarios"][scenario]["label"] for e in cells
                   for run in _runs(e, scenario).values()
                   if run["state"] == "ok" and scenario in run["scenarios"]})
    if seen:
        lines += ["", "What the labels mean for your application:", ""]
        lines += [f"- **{code(label)}**: {MEANING.get(label, 'see the clause')}"
                  for label in seen]
    lines += ["", f"**Safe pattern.** {SAFE[scenario]}", ""]
    return lines


def _who(newest: dict, scenario: str, labels: set[str]) -> list[str]:
    return [f"{name} {run['version']}" for name, run in sorted(_runs(newest, scenario).items())
            if run["state"] == "ok" and run["scenarios"].get(scenario, {}).get("label") in labels]


def headline(data: dict) -> str:
    """One sentence: the newest cell's answer, generated from the record."""
    cells = _newest_first(data)
    if not cells:
        return "Not measured yet."
    newest = cells[0]
    waited = _who(newest, "sigterm", {"finished"})
    lost = _who(newest, "sigterm", set(MEANING) - {"finished", "n/a"})
    parts = [f"On FastAPI {esc(newest['cell']['fastapi'])}, a task still running at a "
             f"deploy's SIGTERM finished under {', '.join(map(esc, waited)) or 'no server'}"]
    if lost:
        parts.append(f"and was lost under {', '.join(map(esc, lost))}")
    sentence = " ".join(parts)
    bounded = [w for w in _who(newest, "sigterm-graceful", {"cancelled", "killed"})
               if w in waited]
    if bounded:
        sentence += (f"; with a graceful timeout set ({', '.join(map(esc, bounded))}), a "
                     "longer task is cut off")
    mangum = _runs(newest, "serverless").get("mangum")
    if mangum and mangum["state"] == "ok" and "serverless" in mangum["scenarios"]:
        label = mangum["scenarios"]["serverless"]["label"]
        sentence += (f"; through Mangum {esc(mangum['version'])} the task "
                     + ("ran before the Lambda handler returned (the response waits for it)"
                        if label == "ran-before-return" else f"was `{esc(label)}`"))
    return sentence + "."


def page(data: dict) -> str:
    lines = [f"# {QUESTION}", "",
             f"**{headline(data)}** A task queue is the safe place for work that must "
             "survive a deploy.", "",
             "Measured by `bgmatrix deploy` with the apps wire mode serves, each server at the "
             "release current at the cell's cutoff, on 127.0.0.1; the requirements are the "
             "spec's [Deployment chapter](spec/deployment.md). A task holds at a gate until "
             "the host releases it, so each label comes from what the task recorded, never "
             "from a timing. `uvicorn-fast` is uvicorn with httptools and uvloop "
             "(`uvicorn[standard]`). Raw record: `matrix/deployment.json` (method hash "
             f"{code(data['deploy_hash'])}).", ""]
    for scenario in SCENARIOS:
        lines += scenario_section(data, scenario)
    return "\n".join(lines) + "\n"


def chapter(text: str) -> str:
    """spec/deployment.md with a line after each clause linking to its measured table."""
    out: list[str] = []
    for block in text.split("\n### "):
        if out:
            block = "### " + block
        cid = block.split(" — ", 1)[0].removeprefix("### ")
        if cid.startswith("DEPLOY-"):
            block = (block.rstrip("\n") + f"\n\n*Measured.* Per server and adapter on the "
                     f"[Deployment page](../{PAGE}).\n\n")
        out.append(block)
    return "\n".join(out)


def home_lines() -> list[str]:
    """The home page's answer, under its own heading (the record is required: see load)."""
    return ["### [Deployment](spec/deployment.md)", "",
            f"- **{QUESTION}** {headline(load())} ([Deployment]({PAGE}))", ""]


def generate(page_writer: Callable[[str, str], Any]) -> None:
    """Write the Deployment page and the spec's Deployment chapter (build.generate's hook)."""
    page_writer(PAGE, page(load()))
    for chapter_name in spec.APART:
        text = (spec.SPEC_DIR / f"{chapter_name}.md").read_text(encoding="utf-8")
        page_writer(f"spec/{chapter_name}.md", chapter(text))
