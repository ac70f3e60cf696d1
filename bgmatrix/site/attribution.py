"""Why a clause's label changes: the causes ``bgmatrix attribute`` measured
(matrix/attribution.json), as a short table on the clause page.

Read here with the shared schema, not through the runner (the site never imports ``run``): a
missing file shows nothing, a broken one stops the report with one line, like a broken result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup

from bgmatrix.files import read_checked_once
from bgmatrix.site.model import ReportError
from bgmatrix.site.render import cell_href, clause_href, code, link, table, text, unsearched
from bgmatrix.spec import ROOT

ATTRIBUTION_PATH = ROOT / "matrix" / "attribution.json"


def load(path: Path | None = None) -> dict[str, Any] | None:
    """The attribution file (read once per version of it), or None if there is none."""
    return read_checked_once(path or ATTRIBUTION_PATH, "attribution", ReportError,
                             "attribution file")


def cause_text(cause: Mapping[str, Any]) -> str:
    kind = cause["kind"]
    forced = " (declared range overridden)" if cause.get("overrides_declared_range") else ""
    if kind in ("framework", "dependency"):
        old, new = (v or "absent" for v in cause["versions"])
        return f"{'the framework' if kind == 'framework' else 'a dependency'}: " \
               f"{cause['package']} {old} → {new}{forced}"
    if kind == "dependencies":
        return "dependencies together: " + ", ".join(cause["packages"]) + forced
    if kind == "python":
        return f"Python {cause['versions'][0]} → {cause['versions'][1]}"
    return {"undetermined": "undetermined", "unstable": "not reproducible",
            "unmeasured": "not attributed yet"}[kind]


#: Causes that are not the framework of the line: a release line must not credit the framework.
NOT_THE_FRAMEWORK = ("dependency", "dependencies", "python")


def outside_causes(clause_id: str, line: str, release: str,
                   path: Path | None = None) -> list[str]:
    """The measured causes of the clause's flips into ``release`` on ``line`` (``fastapi`` or
    ``starlette``) that are not the line's framework: a dependency, several, or Python."""
    found = []
    for e in (load(path) or {}).get("flips", []):
        cause = e["cause"]
        if (e["clause"] != clause_id or e["line"] != line or e["to"]["version"] != release
                or cause["kind"] not in NOT_THE_FRAMEWORK):
            continue
        if cause["kind"] == "dependency":
            old, new = (v or "absent" for v in cause["versions"])
            found.append(f"{cause['package']} {old} → {new}")
        elif cause["kind"] == "dependencies":
            found.append(" and ".join(cause["packages"]) + " together")
        else:
            found.append(cause_text(cause))
    return sorted(set(found))


def _today(entry: Mapping[str, Any]) -> Markup:
    today = entry.get("today")
    if not today:
        return Markup("")
    parts = []
    for side in ("from", "to"):
        seen = today[side]
        packages = ", ".join(f"{k} {v}" for k, v in sorted(seen["packages"].items()))
        said = seen.get("label") or seen.get("message") or seen["state"]
        parts.append(Markup("{} with {}: {}").format(entry[side]["version"], packages,
                                                      code(said)))
    return Markup("<br>Today's dependencies: ") + Markup("; ").join(parts)


def _files(entry: Mapping[str, Any]) -> Markup:
    files = entry.get("framework_files")
    if not files:
        return Markup("")
    more = files["total"] - len(files["files"])
    shown = Markup(", ").join(code(f) for f in files["files"]) or text("none")
    return Markup("<br>{} files changed ({}): {}{}").format(
        files["package"], files["total"], shown, f" and {more} more" if more else "")


def clause_section(clause_id: str, root: str = "../", path: Path | None = None) -> list[str]:
    """``## Why the label changes``: one row per flip of the clause (from -> to, cause), or
    nothing when no flip of it is recorded."""
    doc = load(path)
    entries = [e for e in (doc or {}).get("flips", []) if e["clause"] == clause_id]
    if not entries:
        return []
    rows = []
    for e in entries:
        line = "Starlette" if e["line"] == "starlette" else f"FastAPI ({e['series']})"
        change = Markup("{} → {}").format(link(cell_href(root, e["from"]["cell"]),
                                               e["from"]["version"]),
                                          link(cell_href(root, e["to"]["cell"]),
                                               e["to"]["version"]))
        labels = Markup("{} → {}").format(code(e["from"]["label"]), code(e["to"]["label"]))
        cause = Markup("<strong>{}</strong><br>{}").format(cause_text(e["cause"]),
                                                          text(e["cause"]["note"]))
        rows.append([text(line), change, labels, cause + _files(e) + _today(e)])
    return ["## Why the label changes", "",
            "Measured by `bgmatrix attribute`: the later release re-run with one differing "
            "dependency at the earlier release's version at a time, and the earlier release "
            "installed into an exact copy of the later environment (`--no-deps`). If the "
            "earlier release brings the earlier label back there, the framework is the cause; "
            "otherwise the package whose pin, removal or forced pin brings it back is. A forced "
            "pin ignores the release's declared range, and the cause says so.", "",
            unsearched(
                table(["Line", "From → to", "Label", "Cause"], rows)), ""]


def cell_section(cell_id: str, root: str = "../", path: Path | None = None) -> list[str]:
    """``## Labels that change here``: the flips whose earlier or later cell is this one, with
    their cause, or nothing."""
    entries = [e for e in (load(path) or {}).get("flips", [])
               if cell_id in (e["from"]["cell"], e["to"]["cell"])]
    if not entries:
        return []
    rows = []
    for e in entries:
        other = e["to"] if e["from"]["cell"] == cell_id else e["from"]
        rows.append([link(clause_href(root, e["clause"]), e["clause"]),
                     Markup("{} → {}").format(e["from"]["version"], e["to"]["version"]),
                     Markup("{} (against {})").format(
                         cause_text(e["cause"]), link(cell_href(root, other["cell"]),
                                                      other["cell"]))])
    return ["## Labels that change at this release", "",
            "Where a clause's label differs from the adjacent release's, `bgmatrix attribute` "
            "measured why; the clause page has both labels and the experiments.", "",
            unsearched(
                table(["Clause", "From → to", "Cause"], rows)), ""]
