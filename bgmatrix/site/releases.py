""""Is my version affected?": one page per measured FastAPI release with every hazard it has.

A hazard is a clause of the catalogue below (:data:`HAZARDS`) that at least one of the
release's cells *deviates* from: it is computed from the results, never listed by hand. The
catalogue says, once per clause, what the deviation means for an application (one plain
sentence of consequence) and which safe pattern avoids it (:data:`PATTERNS`, a code snippet).
The home page's version box looks releases up in a small JSON index (:func:`index_data`)
embedded in the page, so it works offline with the site's own script (js/releases.js).

Release pages are indexed by the site search (their number is in the title and the opening
sentence); the hazard details sit in a block the search skips (``data-search-exclude``), which
keeps the search index small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from bgmatrix.site import model
from bgmatrix.site.markup import json_for_script
from bgmatrix.site.render import LEAN, SEARCH_EXCLUDED, part, plural, raw

TEMPLATE = "releases.html"


@dataclass(frozen=True)
class Pattern:
    """A safe way to write the code a hazard breaks, and the clause whose verdict shows it works
    (``checked_by``: its verdict in the release is printed beside the snippet)."""

    title: str
    code: str
    checked_by: str | None = None


@dataclass(frozen=True)
class Hazard:
    clause: str
    topic: str
    #: what the deviation does to an application, in one sentence (`code` in backticks)
    sentence: str
    pattern: str


#: topic -> (section title, its short name in a release page's opening sentence)
TOPICS = {
    "conflict": ("The #11215 conflict: a Response with its own background",
                 "the #11215 conflict"),
    "lifecycle": ("yield dependencies", "yield dependencies"),
    "isolation": ("A reused Response", "a reused Response"),
    "websocket": ("WebSocket endpoints", "WebSocket"),
    "frontend": ("Frontend route groups", "frontend route groups"),
    "middleware": ("BaseHTTPMiddleware", "BaseHTTPMiddleware"),
    "dependencies": ("Dependencies declared but not called", "uncalled dependencies"),
    "declaration": ("How BackgroundTasks is declared", "the declaration of BackgroundTasks"),
}

PATTERNS = {
    "identity": Pattern(
        "Add your task to the injected BackgroundTasks and pass that object as the response's "
        "background (the identity pattern):",
        "from fastapi import BackgroundTasks, FastAPI\n"
        "from fastapi.responses import JSONResponse\n\n"
        "app = FastAPI()\n\n"
        "@app.post(\"/items\")\n"
        "async def create_item(background_tasks: BackgroundTasks):\n"
        "    background_tasks.add_task(notify, \"created\")  # your own task: same object\n"
        "    return JSONResponse({\"ok\": True}, background=background_tasks)\n",
        "ATTACH-6",
    ),
    "no-class-background": Pattern(
        "Do not give the response class a background of its own; add the task to the injected "
        "BackgroundTasks instead:",
        "@app.get(\"/report\", response_class=HTMLResponse)\n"
        "async def report(background_tasks: BackgroundTasks):\n"
        "    background_tasks.add_task(notify, \"report\")\n"
        "    return \"<p>ok</p>\"\n",
        "ATTACH-1",
    ),
    "own-resource": Pattern(
        "Let the task open (and close) the resource it needs, instead of using the one the "
        "yield dependency provided:",
        "def send_receipt(order_id: int) -> None:\n"
        "    with SessionLocal() as db:  # the task's own session\n"
        "        ...\n\n"
        "@app.post(\"/orders\")\n"
        "async def order(order_id: int, background_tasks: BackgroundTasks):\n"
        "    background_tasks.add_task(send_receipt, order_id)\n"
        "    return {\"ok\": True}\n",
    ),
    "per-request": Pattern(
        "Create the Response per request; never return a module-level Response object:",
        "@app.get(\"/ping\")\n"
        "async def ping(background_tasks: BackgroundTasks):\n"
        "    background_tasks.add_task(record, \"ping\")\n"
        "    return PlainTextResponse(\"pong\")  # a new object on every request\n",
    ),
    "websocket": Pattern(
        "Do not declare BackgroundTasks on a WebSocket endpoint: await the work yourself once "
        "the conversation is over:",
        "@app.websocket(\"/ws\")\n"
        "async def chat(websocket: WebSocket):\n"
        "    await websocket.accept()\n"
        "    ...\n"
        "    await websocket.close()\n"
        "    await notify(\"chat ended\")  # called directly, not through BackgroundTasks\n",
    ),
    "upgrade": Pattern(
        "Add the tasks in the endpoint (or upgrade to a release without the hazard):",
        "@router.get(\"/page\")\n"
        "async def page(background_tasks: BackgroundTasks):\n"
        "    background_tasks.add_task(audit, \"page\")  # added by the endpoint itself\n"
        "    return {\"ok\": True}\n",
    ),
    "pure-asgi": Pattern(
        "Write the middleware as pure ASGI (it wraps send) instead of BaseHTTPMiddleware:",
        "class Timing:\n"
        "    def __init__(self, app):\n"
        "        self.app = app\n\n"
        "    async def __call__(self, scope, receive, send):\n"
        "        async def wrapped(message):\n"
        "            ...  # look at or change the message here\n"
        "            await send(message)\n"
        "        await self.app(scope, receive, wrapped)\n\n"
        "app.add_middleware(Timing)\n",
    ),
    "plain-parameter": Pattern(
        "Declare the parameter with its plain annotation, with no default:",
        "@app.post(\"/items\")\n"
        "async def create_item(background_tasks: BackgroundTasks):\n"
        "    background_tasks.add_task(notify, \"created\")\n"
        "    return {\"ok\": True}\n",
        "ATTACH-1",
    ),
    "router-dependencies": Pattern(
        "Declare the dependency where the release calls it: on the router or include_router:",
        "app.include_router(router, dependencies=[Depends(verify_token)])\n",
    ),
}

#: clause -> the hazard its deviation is, in the order a release page shows them.
HAZARDS = tuple(Hazard(*h) for h in (
    ("ATTACH-3", "conflict",
     "Tasks added to the injected `BackgroundTasks` never run when the endpoint returns a "
     "`Response` with its own `background=BackgroundTask(...)`.", "identity"),
    ("ATTACH-4", "conflict",
     "Tasks added to the injected `BackgroundTasks` never run when the returned `Response` "
     "carries a `BackgroundTasks` collection the endpoint built itself.", "identity"),
    ("SHAPE-9", "conflict",
     "Even an empty `BackgroundTasks()` given as the response's background throws the "
     "injected tasks away.", "identity"),
    ("SHAPE-2", "conflict",
     "The same loss happens with other response classes (`JSONResponse`, `HTMLResponse`, "
     "`StreamingResponse`, ...), not only `Response`.", "identity"),
    ("SHAPE-7", "conflict",
     "The loss happens as well in mounted sub-applications and nested routers.", "identity"),
    ("ATTACH-16", "conflict",
     "Tasks your dependencies add (an audit log in a `Depends`, say) are lost when the "
     "endpoint returns a `Response` with its own background.", "identity"),
    ("SHAPE-11", "conflict",
     "Wherever the dependency is declared (router, application, sub-dependency), the tasks it "
     "adds are lost in that conflict.", "identity"),
    ("ATTACH-17", "conflict",
     "A `response_class=` or `default_response_class=` whose class sets a background of its "
     "own throws the injected tasks away, even when the endpoint returns plain data.",
     "no-class-background"),
    ("LIFE-1", "lifecycle",
     "A resource provided by a `yield` dependency (a database session, say) is already closed "
     "when your background tasks run.", "own-resource"),
    ("LIFE-4", "lifecycle",
     "The teardown of a `Depends(scope=\"function\")` dependency does not run before the "
     "response and its tasks.", "own-resource"),
    ("ISO-1", "isolation",
     "A module-level `Response` returned on every request replays an earlier request's "
     "tasks on later requests, and loses others.", "per-request"),
    ("ATTACH-14", "websocket",
     "Tasks added to a `BackgroundTasks` parameter of a WebSocket endpoint silently never "
     "run.", "websocket"),
    ("ATTACH-13", "frontend",
     "Tasks that the dependencies of an `app.frontend()` route group add are lost.",
     "upgrade"),
    ("MW-1", "middleware",
     "Under `BaseHTTPMiddleware`, background tasks can start before the client has the whole "
     "body, so the response waits for them.", "pure-asgi"),
    ("MW-3", "middleware",
     "Under `BaseHTTPMiddleware`, an exception raised by a background task is swallowed: it "
     "never reaches the server's log.", "pure-asgi"),
    ("SHAPE-12", "dependencies",
     "A dependency accepted at some sites (`FastAPI(dependencies=[...])`, say) is silently "
     "never called.", "router-dependencies"),
    ("SHAPE-8", "declaration",
     "A `BackgroundTasks` parameter declared in some accepted way (`= Depends()`, say) is "
     "not the request's collection: its tasks never run, or the endpoint fails.",
     "plain-parameter"),
))


def _ranges(versions: Sequence[str], hit: set[str]) -> list[tuple[str, str]]:
    """Runs of consecutive releases (in ``versions``' order) that are in ``hit``."""
    runs: list[tuple[str, str]] = []
    start = last = None
    for version in versions:
        if version in hit:
            start = start or version
            last = version
        elif start is not None and last is not None:
            runs.append((start, last))
            start = last = None
    if start is not None and last is not None:
        runs.append((start, last))
    return runs


def overview(snapshot: model.Snapshot, root: str = "") -> list[str]:
    """Every hazard of the catalogue that some measured release has: its release ranges, the
    safe pattern's title and the clause page (the home page's list, computed from the
    results)."""
    by_release = releases(snapshot)
    lines: list[str] = []
    for hazard in HAZARDS:
        if hazard.clause not in snapshot.clause_by_id:
            continue
        hit = {v for v, cells in by_release.items() if _deviating(cells, hazard.clause)}
        if not hit:
            continue
        # A release that measured nothing of the clause (an import error) does not split a
        # range: the ranges run over the releases that were graded.
        graded = [v for v in by_release if any(
            model.outcome(r, hazard.clause)[0] in ("conforms", "deviates")
            for r in by_release[v])]
        spans = ", ".join(a if a == b else f"{a}–{b}" for a, b in _ranges(graded, hit))
        lines.append(f"- **{TOPICS[hazard.topic][0]}** ([{hazard.clause}]"
                     f"({root}clauses/{hazard.clause}.md)), FastAPI {spans}: "
                     f"{hazard.sentence} *Safe:* {PATTERNS[hazard.pattern].title}")
    return lines

HAZARD_BY_CLAUSE = {h.clause: h for h in HAZARDS}


@dataclass(frozen=True)
class Found:
    """One hazard in one release: which cells deviate, with which labels."""

    hazard: Hazard
    labels: tuple[str, ...]
    cells: tuple[str, ...]  # the deviating cells
    starlette: tuple[str, ...]  # their Starlette versions
    partial: bool  # some measured cells of the release do not deviate
    fixed_in: str | None  # the first later release whose cells all measure without deviating


def page_name(version: str) -> str:
    return f"releases/{model.clean_version(version)}.md"


def page_href(root: str, version: str) -> str:
    return f"{root}releases/{model.clean_version(version)}.html"


def releases(snapshot: model.Snapshot) -> dict[str, list[Any]]:
    """Measured FastAPI releases, in version order, with their cells."""
    return snapshot.by_release("fastapi")


def _deviating(cells: Sequence[Mapping[str, Any]], clause: str) -> list[Mapping[str, Any]]:
    return [r for r in cells if model.outcome(r, clause)[0] == "deviates"]


def _fixed_after(snapshot: model.Snapshot) -> dict[tuple[str, str], str | None]:
    """(release, clause) -> the first later release whose cells all measure without
    deviating from the clause, one backward pass per clause."""
    order = list(releases(snapshot).items())
    out: dict[tuple[str, str], str | None] = {}
    for hazard in HAZARDS:
        clean: str | None = None
        for version, cells in reversed(order):
            out[version, hazard.clause] = clean
            outs = [model.outcome(r, hazard.clause)[0] for r in cells]
            graded = [v for v in outs if v in ("conforms", "deviates")]
            if graded and all(v == "conforms" for v in graded):
                clean = version
    return out


_MEMO: dict[int, tuple[model.Snapshot, dict[tuple[str, str], str | None]]] = {}


def _fixed_in(snapshot: model.Snapshot, version: str, clause: str) -> str | None:
    memo = _MEMO.get(id(snapshot))
    if memo is None or memo[0] is not snapshot:
        _MEMO.clear()  # one snapshot at a time: a report reads one
        memo = _MEMO[id(snapshot)] = (snapshot, _fixed_after(snapshot))
    return memo[1].get((version, clause))


def hazards_of(snapshot: model.Snapshot, version: str,
               cells: Sequence[Mapping[str, Any]] | None = None) -> list[Found]:
    """The hazards of FastAPI ``version`` (or of the given cells of it), catalogue order."""
    if cells is None:
        cells = releases(snapshot).get(version, [])
    found = []
    for hazard in HAZARDS:
        if hazard.clause not in snapshot.clause_by_id:
            continue
        bad = _deviating(cells, hazard.clause)
        if not bad:
            continue
        measured = [r for r in cells if model.is_measured(model.outcome(r, hazard.clause))]
        found.append(Found(
            hazard,
            tuple(sorted({model.outcome(r, hazard.clause)[1] for r in bad})),
            tuple(r["cell"]["id"] for r in bad),
            tuple(sorted({r["cell"]["starlette"] or "?" for r in bad}, key=model.version_key)),
            len(bad) < len(measured),
            _fixed_in(snapshot, version, hazard.clause),
        ))
    return found


def index_data(snapshot: model.Snapshot, root: str = "") -> dict[str, Any]:
    """The version box's index: measured release -> page, hazards and Starlette versions;
    planned releases without a measurement are listed so the box can say so."""
    measured = {}
    for version, cells in releases(snapshot).items():
        measured[version] = {
            "page": page_href(root, version),
            "hazards": [f.hazard.clause for f in hazards_of(snapshot, version, cells)],
            "starlette": sorted({r["cell"]["starlette"] or "?" for r in cells},
                                key=model.version_key),
        }
    planned = [v for v in snapshot.planned.get("fastapi", []) if v not in measured]
    return {"releases": measured, "unmeasured": planned}


def version_box(snapshot: model.Snapshot) -> Markup:
    """The home page's "Is my version affected?" form and its data."""
    data = index_data(snapshot)
    return part("version_box", TEMPLATE)(
        list(data["releases"]), Markup(json_for_script(data)))


def _segments(sentence: str) -> list[tuple[bool, str]]:
    """``a `b` c`` -> [(False, "a "), (True, "b"), (False, " c")]: code spans for the template."""
    return [(i % 2 == 1, s) for i, s in enumerate(sentence.split("`")) if s]


def _label_text(label: str) -> str:
    if label.startswith("schedule-dependent"):
        return "schedule-dependent (only under some task schedules)"
    return label


def release_page(snapshot: model.Snapshot, version: str) -> str:
    root = "../"
    cells = releases(snapshot).get(version, [])
    found = hazards_of(snapshot, version, cells)
    name = model.clean_version(version)
    starlettes = sorted({r["cell"]["starlette"] or "?" for r in cells}, key=model.version_key)
    pythons = sorted({r["cell"]["python"] for r in cells}, key=model.version_key)
    lines = [LEAN + f"# FastAPI {name}", ""]
    groups: dict[str, list[Found]] = {}
    for f in found:
        groups.setdefault(f.hazard.topic, []).append(f)
    if not found:
        said = "no hazard of the catalogue: none of its cells deviates from those clauses"
    else:
        said = plural(len(found), "hazard") + ": " + "; ".join(
            f"{TOPICS[t][1]} ({', '.join(f.hazard.clause for f in items)})"
            for t, items in groups.items())
    # Where it was measured is a paragraph of its own, left out of the search index: the
    # sentence above finds the release; this one, on ~330 pages, was 23 KB of the index's
    # 500 KB budget.
    lines += [
        f"FastAPI {name} has {said}.", "",
        f"Measured with Starlette {', '.join(starlettes)} on Python {', '.join(pythons)}; "
        f"snapshot `{snapshot.id}`.", "{ data-search-exclude }", "",
    ]
    rendered = []
    for topic, items in groups.items():
        hazards = []
        for f in items:
            clause = snapshot.clause_by_id[f.hazard.clause]
            first = f.cells[0]
            hazards.append({
                "clause": clause.id,
                "keyword": clause.keyword,
                "segments": _segments(f.hazard.sentence),
                "labels": [_label_text(lb) for lb in f.labels],
                "starlette": list(f.starlette) if f.partial else [],
                "fixed_in": f.fixed_in,
                "fixed_href": page_href(root, f.fixed_in) if f.fixed_in else None,
                "clause_href": f"{root}clauses/{clause.id}.html",
                "cell_href": f"{root}cells/{first}.html",
                "cell": first,
                "more": len(f.cells) - 1,
            })
        patterns = []
        for key in dict.fromkeys(f.hazard.pattern for f in items):
            pattern = PATTERNS[key]
            check = None
            if pattern.checked_by and pattern.checked_by in snapshot.clause_by_id:
                outs = snapshot.release_outcomes(cells, pattern.checked_by)
                check = (pattern.checked_by, " / ".join(
                    f"{lb} ({v})" if lb and lb != v else v for v, lb in outs))
            patterns.append((pattern.title, pattern.code, check))
        rendered.append((TOPICS[topic][0], hazards, patterns))
    clear = [h.clause for h in HAZARDS
             if h.clause in snapshot.clause_by_id and h.clause not in {f.hazard.clause
                                                                        for f in found}
             and any(model.is_measured(model.outcome(r, h.clause)) for r in cells)]
    unmeasured = [h.clause for h in HAZARDS
                  if h.clause in snapshot.clause_by_id and h.clause not in clear
                  and h.clause not in {f.hazard.clause for f in found}]
    cell_links = [(f"{root}cells/{r['cell']['id']}.html", r["cell"]["id"]) for r in cells]
    lines.append(raw(part("release_body", TEMPLATE)(
        rendered, clear, unmeasured, cell_links, root)))
    return "\n".join(lines) + "\n"


def releases_index(snapshot: model.Snapshot) -> str:
    lines = [SEARCH_EXCLUDED + "# Releases", "",
             "Every measured FastAPI release, with the hazards its cells show. Each links to "
             "its page: one sentence per hazard, the safe pattern, and the evidence. The "
             "[home page](../index.md) has a box to look a version up.", ""]
    rows = []
    for version, cells in releases(snapshot).items():
        found = hazards_of(snapshot, version, cells)
        rows.append((page_href("../", version), version,
                     [f.hazard.clause for f in found]))
    lines.append(raw(part("release_index", TEMPLATE)(rows)))
    return "\n".join(lines) + "\n"


def cell_hazards(snapshot: model.Snapshot, result: Mapping[str, Any]) -> list[Found]:
    """The hazards one cell shows (for its page's opening)."""
    version = result["cell"]["fastapi"]
    if result["cell"]["kind"] != "fastapi" or not version:
        return []
    return hazards_of(snapshot, version, [result])
