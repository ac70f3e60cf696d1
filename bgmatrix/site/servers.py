"""The Servers page: how each server release delivers ASGI, probed with no framework
(matrix/server-probes.json, written by `bgmatrix probe`), and which wire disagreements each
fact explains (bgmatrix/agreement.py).

Every outcome on the page comes from the record; the fixed texts say what a probe asks and
what its outcomes mean, never which server gives which.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bgmatrix.site import model
from bgmatrix.site.markup import esc
from bgmatrix.site.render import code, part, table, text, unsearched

PAGE = "servers.md"

#: fact -> what the probe asks (tests/servers/apps.py), in the order the table shows them.
QUESTIONS = {
    "scope.async_library": "What `sniffio` finds inside the app: `asyncio`, or an error (then "
                           "anyio, and Starlette from 0.15, cannot run).",
    "scope.extensions": "The scope's `extensions` keys (`-`: the key is absent; Starlette "
                        "0.36.0's `FileResponse` reads it without a default).",
    "scope.spec_version": "The ASGI `spec_version` the server announces (2.4: `send` may raise "
                          "`OSError` after a disconnect).",
    "held-final.length": "Whole `Content-Length` body sent, final empty message held: does the "
                         "client have the body (`body-complete`) or wait (`body-held`)?",
    "held-final.chunked": "The same for a chunked body: the final chunk is the final message.",
    "close-before-final": "The client closes once it holds a `Content-Length` body: does "
                          "`http.disconnect` reach the app before the final message is sent "
                          "(Starlette #1438's moment), or `nothing`?",
    "disconnect.keep-open": "After the response, with the connection kept: what `receive()` "
                            "returns within 1 s.",
    "disconnect.close": "After the response, the client gone: what `receive()` returns within "
                        "1 s (ASGI: `http.disconnect`).",
    "after-final.keep-open": "Does the app run on after its final body message until released "
                             "(`released`), or is it cancelled?",
    "after-final.close": "The same, the client gone meanwhile.",
    "send-after-close.receive": "A client left mid-stream: what `receive()` returns.",
    "send-after-close.send": "… and whether the next `send` raises (ASGI before 2.4: it must "
                             "not).",
    "send-after-close.final-send": "… and whether the final `send` raises.",
    "final-send": "A chunked stream ended normally: does its final `send` raise?",
    "pending-receive": "A `receive()` pending while a stream is sent: what it gives once the "
                       "response is complete.",
    "cancel-receive": "A task cancelled with a message while in `receive()`: does the "
                      "`CancelledError` carry it (`kept-message`, what anyio's cancel scopes "
                      "need) or not (`lost-message`)? `no-cancel-message`: Python 3.8 has no "
                      "such message.",
}


def _value(found: Any) -> str:
    if found is None:
        return "-"
    if found == "None":  # the probe's fact never came: the server held the request
        return "no answer"
    if isinstance(found, list):
        return ", ".join(found) or "(empty)"
    return str(found)


def page(snapshot: model.Snapshot) -> str:
    lines = ["# Servers", "",
             "Wire mode re-observes the timing-sensitive clauses through real servers. Where a "
             "server's label differs from the raw-ASGI one, the clause page says why, and most "
             "reasons are facts about the server alone. They are measured here: a plain ASGI "
             "app, no framework, served by each server release a wire run served, through the "
             "same launcher and options (`bgmatrix probe`; the app is "
             "`tests/servers/apps.py`). A probe whose outcomes differed between its repeats "
             "shows all of them, joined by `|`; *no answer* means the probe's fact never came "
             "within its wait (the server held the request).", ""]
    probes = snapshot.probes
    if not probes or not probes.get("releases"):
        return "\n".join(lines + ["No server has been probed yet: run `bgmatrix probe`.", ""])
    explained: Counter[str] = Counter()
    for items in snapshot.disagreements.values():
        for item in items:
            if item.explanation and item.explanation.basis != "schedule":
                explained[f"{item.server} {item.version}"] += 1
    releases = sorted(probes["releases"].values(),
                      key=lambda e: (e["server"], model.version_key(e["version"])))
    lines += [f"{len(releases)} server releases probed, each probe {probes['repeats']} times "
              f"(method `{esc(probes['probe_hash'])}`).", "", "## What each probe asks", ""]
    lines += [f"- {code(name)}: {question}" for name, question in QUESTIONS.items()]
    lines += ["", "## Outcomes", ""]
    head = ["Release", "Cell", "Explains", *(code(name) for name in QUESTIONS)]
    rows = []
    for entry in releases:
        release = f"{entry['server']} {entry['version']}"
        if entry["state"] != "ok":
            cells = [text(f"{entry['state']}: {entry.get('message') or ''}", 300)]
            cells += [text("")] * (len(QUESTIONS) - 1)
        else:
            cells = [text(_value(entry["facts"].get(name)), 80) for name in QUESTIONS]
        rows.append([text(release), text(entry["cell"]), text(explained.get(release, 0)),
                     *cells])
    lines.append(unsearched(
        part("scroll")(table(head, rows))))
    lines += ["", "*Explains*: how many wire runs' disagreements with the raw verdict a fact "
              "of that release explains (the clause pages list them).", ""]
    return "\n".join(lines) + "\n"
