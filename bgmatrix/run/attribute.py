"""``bgmatrix attribute``: why a clause's label changes between two adjacent releases of a line,
found by measuring, never by reading changelogs.

A *flip* is a clause whose verdict or label differs between two adjacent cells of one line:
adjacent Starlette releases (the Starlette line), or adjacent FastAPI releases on the same
Python with the same Starlette bound (the FastAPI lines). For a flip A -> B the two cells'
recorded environments (``provenance.packages``) are compared:

- only the framework differs (and the Python is the same): the cause is the framework;
- otherwise B's cell is re-run in a scratch folder (never results/): once unchanged (the
  *control*: does B's label reproduce at all?), then once per differing dependency with that one
  package pinned to A's version (and once on A's Python if the Python differs), and once with
  *the earlier framework in the later environment*: an exact copy of B's recorded environment,
  installed with ``--no-deps`` (no resolution, so no declared range refuses it), with A's
  framework release in place of B's. If A's label comes back there, the framework is the cause.
- What resolution cannot try is then tried in copies of B's environment, one change at a time:
  a package new in B's environment is left out (*removal*), a package B lost is added back, and
  a pin whose declared range refuses it (a FastAPI release and the earlier Starlette) is forced
  (*forced pin*; the record says the declared range was overridden). The package whose pin,
  removal or forced pin alone brings back A's label is the cause. When no single change does
  and several packages differ, one more run changes them all at once (resolved, or as a copy
  with ``--no-deps`` when resolution refuses it or a package is new): if A's label comes back,
  the dependencies together are the cause (narrowed, in one more run, to the changes that
  each moved the label, if those alone together bring it back). If the earlier framework in
  the later environment keeps B's label and only one dependency differs, that copy is A's cell
  with the dependency moved forward: the dependency is the cause. If nothing brings A's label
  back and every change ran, the framework is, unless the earlier framework in the later
  environment also kept B's label (then the earlier label needs both, and the cause stays
  ``undetermined``, saying so).
  What could not be run (a forced install that does not import, a suite that cannot run) also
  leaves it ``undetermined``, with exactly what was tried.

For a flip a dependency caused, both releases are also measured in *today's environment*: the
cell without its cutoff, i.e. the newest dependencies the releases' declared ranges allow now
(what a user installing that release today gets), beside the period-correct result.

The outcome is ``matrix/attribution.json`` (schema/attribution.schema.json): one entry per
flip, sorted, without times, so a re-run that sees the same behaviour changes no byte. Flips
not measured in a run keep their entry when it still describes the same flip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from packaging.version import InvalidVersion, Version

from bgmatrix import paths, results, schemas, spec
from bgmatrix.errors import BgmatrixError, UsageError
from bgmatrix.files import read_checked, write_text_if_changed
from bgmatrix.plan import store
from bgmatrix.spec import ROOT

ATTRIBUTION_PATH = ROOT / "matrix" / "attribution.json"
SCRATCH_DIR = paths.WORK_DIR / "attribution"  # experiment results: never results/
FORMAT = 1
LINES = ("starlette", "fastapi")

#: The Starlette bounds whose FastAPI cells form one line (an ``only`` cell belongs to both).
_BOUND_LINES = {"lowest": ("lowest",), "highest": ("highest",), "only": ("lowest", "highest"),
                None: ("-",)}

#: Causes, in the words the file and the site use.
CAUSES = ("framework", "dependency", "dependencies", "python", "undetermined", "unstable",
          "unmeasured")


class AttributionError(BgmatrixError):
    """matrix/attribution.json is unreadable or invalid."""


# ---------------------------------------------------------------------------- flips


@dataclass(frozen=True)
class Side:
    """One end of a flip: the cell and what the clause read there."""

    cell: str
    version: str  # the line's framework version
    python: str
    verdict: str
    label: str

    def outcome(self) -> tuple[str, str]:
        return (self.verdict, self.label)


@dataclass(frozen=True)
class Flip:
    line: str  # starlette | fastapi
    series: str  # which sequence of the line: "starlette", or "py3.8, lowest Starlette"
    clause: str
    before: Side
    after: Side

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.before.cell, self.after.cell, self.clause)

    @property
    def framework(self) -> str:
        return self.line


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def sequences(stored: Mapping[str, Mapping[str, Any]],
              bounds: Mapping[str, Optional[str]]) -> list[tuple[str, str, list[Mapping]]]:
    """Each line's cells in release order: ``(line, series, results)``.

    ``bounds`` gives a FastAPI cell's Starlette bound (from the plan); FastAPI cells of one
    Python and one bound form a series.
    """
    starlette = sorted((r for r in stored.values() if r["cell"]["kind"] == "starlette"),
                       key=lambda r: _version(r["cell"]["starlette"]))
    out: list[tuple[str, str, list[Mapping]]] = [("starlette", "starlette", starlette)]
    series: dict[tuple[str, str], list[Mapping]] = {}
    for result in stored.values():
        cell = result["cell"]
        if cell["kind"] != "fastapi":
            continue
        for bound in _BOUND_LINES.get(bounds.get(cell["id"]), ("-",)):
            series.setdefault((cell["python"], bound), []).append(result)
    for (python, bound), members in sorted(series.items(),
                                           key=lambda kv: (_version(kv[0][0]), kv[0][1])):
        members.sort(key=lambda r: (_version(r["cell"]["fastapi"]),
                                    _version(r["cell"]["starlette"] or "0")))
        name = f"py{python}" + ("" if bound == "-" else f", {bound} Starlette")
        out.append(("fastapi", name, members))
    return out


def _side(result: Mapping[str, Any], line: str, entry: Mapping[str, Any]) -> Side:
    cell = result["cell"]
    return Side(cell["id"], cell[line], cell["python"], entry["verdict"], entry["label"])


def find_flips(stored: Mapping[str, Mapping[str, Any]],
               bounds: Mapping[str, Optional[str]]) -> tuple[list[Flip], list[str]]:
    """Every flip between adjacent cells of every line, and why any adjacent pair was not
    compared (a cell without verdicts, results of two different suites)."""
    flips: dict[tuple[str, str, str], Flip] = {}
    skipped: list[str] = []
    for line, series, members in sequences(stored, bounds):
        for before, after in zip(members, members[1:]):
            pair = f"{before['cell']['id']} -> {after['cell']['id']}"
            if before["state"] != "ok" or after["state"] != "ok":
                skipped.append(f"{pair}: not both ok ({before['state']}, {after['state']})")
                continue
            hashes = {r["provenance"].get("suite_hash") for r in (before, after)}
            if len(hashes) != 1:
                skipped.append(f"{pair}: measured with different suites {sorted(map(str, hashes))}")
                continue
            old, new = results.clause_entries(before), results.clause_entries(after)
            for clause in sorted(set(old) & set(new), key=spec.clause_order):
                a, b = old[clause], new[clause]
                if (a["verdict"], a["label"]) == (b["verdict"], b["label"]):
                    continue
                flip = Flip(line, series, clause, _side(before, line, a), _side(after, line, b))
                flips.setdefault(flip.key, flip)  # an `only` pair sits in two series: once
    return sorted(flips.values(), key=flip_order), skipped


def flip_order(flip: Flip) -> tuple:
    return (LINES.index(flip.line), _version(flip.before.python), flip.series,
            _version(flip.before.version), _version(flip.after.version), flip.before.cell,
            flip.after.cell, spec.clause_order(flip.clause))


# ---------------------------------------------------------------------------- environments


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_diff(before: Mapping[str, str], after: Mapping[str, str]
                 ) -> dict[str, list[Optional[str]]]:
    """The packages whose versions differ: name -> [before, after] (None: not installed)."""
    a = {normalise(k): v for k, v in before.items()}
    b = {normalise(k): v for k, v in after.items()}
    return {name: [a.get(name), b.get(name)] for name in sorted(set(a) | set(b))
            if a.get(name) != b.get(name)}


def pinnable(diff: Mapping[str, Sequence[Optional[str]]], framework: str
             ) -> tuple[dict[str, str], dict[str, str]]:
    """The dependencies one pin can set to the earlier cell's version (name -> version), and
    those it cannot (name -> why)."""
    pins, not_pinned = {}, {}
    for name, (old, new) in sorted(diff.items()):
        if name == framework:
            continue
        if old is None:
            not_pinned[name] = (f"{name} {new} is new in the later environment (nothing to pin "
                                f"it to)")
        elif new is None:
            not_pinned[name] = f"{name} {old} is absent from the later environment"
        else:
            pins[name] = old
    return pins, not_pinned


# ---------------------------------------------------------------------------- the decision


def experiment_record(name: str, pins: Mapping[str, str], python: Optional[str],
                      result: Mapping[str, Any], clause: str, before: Side,
                      after_packages: Mapping[str, str], removed: Sequence[str] = ()
                      ) -> dict[str, Any]:
    """What one experiment says about one flip's clause (stored in the flip's entry)."""
    record: dict[str, Any] = {"name": name, "pins": dict(sorted(pins.items())),
                              "state": result["state"]}
    if python is not None:
        record["python"] = python
    if removed:
        record["removed"] = sorted(removed)
    if name in NO_DEPS:
        record["no_deps"] = True
    entry = results.clause_entries(result).get(clause) if result["state"] == "ok" else None
    if entry is not None:
        record["verdict"], record["label"] = entry["verdict"], entry["label"]
        record["reverts"] = (entry["verdict"], entry["label"]) == before.outcome()
    else:
        record["reverts"] = False
        last = (result.get("message") or result["state"]).splitlines()[-1]
        record["message"] = _PRIVATE_ENV.sub("<cell-env>", last)[:300]
    seen = (result.get("provenance") or {}).get("packages") or {}
    moved = package_diff(after_packages, seen) if seen else {}
    record["also_changed"] = {k: v for k, v in moved.items() if k not in pins and k not in removed}
    return record


#: A run's private environment folder (a random name) as a traceback names it: the same failure
#: must read the same in every run.
_PRIVATE_ENV = re.compile(r"[^\s(]*envs/[^/\s]+/env(?=/)")

#: Experiments that change one thing in the later cell (what can single out a cause).
SINGLES = ("pin", "python", "forced-pin", "removal")
#: Experiments that install an exact copy of the later cell's environment with ``--no-deps``.
NO_DEPS = ("earlier-framework", "forced-pin", "removal", "forced-dependencies",
           "moving-dependencies")


def decide(flip: Flip, diff: Mapping[str, Sequence[Optional[str]]],
           experiments: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The cause of ``flip`` from the environments' difference and the experiments run."""
    framework = flip.framework
    versions = [flip.before.version, flip.after.version]
    pins, not_pinned = pinnable(diff, framework)
    same_python = flip.before.python == flip.after.python
    if not pins and not not_pinned and same_python:
        return {"kind": "framework", "package": framework, "versions": versions,
                "note": f"only {framework} differs between the two environments"}
    if not experiments:
        return {"kind": "unmeasured", "note": "not attributed yet: `bgmatrix attribute "
                f"--clause {flip.clause} --line {flip.line}` runs the experiments"}
    by_name = {e["name"]: e for e in experiments}
    control = by_name.get("control")
    if control is None or control.get("state") != "ok":
        return {"kind": "undetermined", "note": "the later cell could not be re-run unchanged ("
                f"{(control or {}).get('message', 'no control run')})"}
    if (control.get("verdict"), control.get("label")) != flip.after.outcome():
        return {"kind": "unstable", "note": "re-running the later cell unchanged gave "
                f"{control.get('verdict')} · {control.get('label')}, not its recorded label: the "
                "label is not reproducible, so no experiment can attribute it"}
    swap = by_name.get("earlier-framework")
    swapped = (f"{framework} {flip.before.version} in a copy of the later environment "
               "(installed with --no-deps, no declared range consulted)")
    singles = [e for e in experiments if e["name"] in SINGLES]
    reverting = [e for e in singles if e["reverts"]]
    if swap is not None and swap["reverts"]:
        if reverting:
            named = ", ".join(_what(e) for e in reverting)
            return {"kind": "undetermined", "note": f"{swapped} brings back the earlier label, "
                    f"and so does each of {named} alone"}
        return {"kind": "framework", "package": framework, "versions": versions,
                "note": f"{swapped} brings back the earlier label"}
    if len(reverting) == 1 and reverting[0]["name"] != "python":
        return _dependency(reverting[0], diff, experiments)
    if len(reverting) == 1:
        return {"kind": "python", "versions": [flip.before.python, flip.after.python],
                "note": f"the later release on Python {flip.before.python} reads as the earlier"}
    if reverting:
        named = ", ".join(_what(e) for e in reverting)
        return {"kind": "undetermined", "note": f"each of {named} alone brings back the earlier "
                "label"}
    joints = [by_name[n] for n in ("moving-dependencies", "dependencies", "forced-dependencies")
              if n in by_name]
    for joint in joints:
        if joint.get("state") == "ok" and joint["reverts"]:
            forced = joint["name"] != "dependencies"
            together = (f"the changes that each move the label ({_what(joint)}) together do"
                        if joint["name"] == "moving-dependencies" else
                        f"{_what(joint)} together do" if forced else "all of them together do")
            cause: dict[str, Any] = {
                "kind": "dependencies",
                "packages": sorted([*joint["pins"], *joint.get("removed", [])]),
                "note": f"no single change brings back the earlier label; {together}"}
            refused = [e for e in experiments if e["name"] in ("pin", "dependencies")
                       and e.get("state") == "install-error"]
            if forced and refused:
                cause["overrides_declared_range"] = True
                cause["note"] += (f"; {_what(refused[0])} does not install with resolution "
                                  f"({refused[0].get('message')}), so the declared range was "
                                  "overridden")
            return cause
    tried = ", ".join(_what(e) for e in singles + joints) or "nothing"
    gaps = [f"{_what(e)} did not run ({e.get('message', e.get('state'))})"
            for e in singles + joints if e.get("state") != "ok" and not _covered(e, experiments)]
    gaps += [why for name, why in not_pinned.items() if not _covered_package(name, experiments)]
    if not same_python and not any(e["name"] == "python" and e.get("state") == "ok"
                                   for e in singles):
        gaps.append(f"Python {flip.before.python} -> {flip.after.python} was not tried")
    if swap is not None and swap.get("state") != "ok":
        gaps.insert(0, f"{swapped} did not run ({swap.get('message', swap.get('state'))})")
    if swap is not None and swap.get("state") == "ok":
        kept = (f"{swapped} still reads as the later release, so the change comes with the "
                "environment, not the framework")
        others = [k for k in diff if k != framework]
        if len(others) == 1 and same_python:
            # The copy then differs from the earlier cell in that one package alone: its change
            # flips the label with the earlier framework, and the framework's change does not.
            (name,) = others
            old, new = diff[name]
            return {"kind": "dependency", "package": name, "versions": [old, new],
                    "note": f"{kept}: it differs from the earlier cell in {name} "
                    f"{old or 'absent'} -> {new or 'absent'} alone"
                    + (f"; the later {framework} with the earlier {name} could not be measured: "
                       + "; ".join(gaps) if gaps else "")}
        if gaps:
            return {"kind": "undetermined", "note": f"{kept}; tried {tried}: none brought back "
                    "the earlier label, and " + "; ".join(gaps)}
        return {"kind": "undetermined", "note": f"{kept}; but no change of the environment "
                f"brings back the earlier label either ({tried}): the earlier label needs the "
                "earlier framework and the earlier environment together"}
    if gaps and not tried_any(singles, joints[0] if joints else None):
        return {"kind": "undetermined", "note": "no experiment can separate the framework from "
                "its environment here: " + "; ".join(gaps)}
    if gaps:
        return {"kind": "undetermined", "note": f"tried {tried}; none brought back the earlier "
                "label, and " + "; ".join(gaps)}
    return {"kind": "framework", "package": framework, "versions": versions,
            "note": f"no dependency pinned to the earlier version ({tried}) brings back the "
            "earlier label"}


def _dependency(experiment: Mapping[str, Any], diff: Mapping[str, Sequence[Optional[str]]],
                experiments: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The cause when one change of one package brings the earlier label back."""
    if experiment["name"] == "removal":
        (name,) = experiment["removed"]
        return {"kind": "dependency", "package": name, "versions": list(diff[name]),
                "note": f"removing {name} {diff[name][1]} (new in the later environment) from "
                "a copy of it alone brings back the earlier label"}
    ((name, old),) = experiment["pins"].items()
    if experiment["name"] == "pin":
        return {"kind": "dependency", "package": name, "versions": list(diff[name]),
                "note": f"pinning {name} to {old} alone brings back the earlier label"}
    refused = [e for e in experiments if e["name"] == "pin" and e["pins"] == experiment["pins"]
               and e.get("state") == "install-error"]
    cause: dict[str, Any] = {"kind": "dependency", "package": name, "versions": list(diff[name]),
             "note": f"{name} {old} in a copy of the later environment (installed with "
             "--no-deps) alone brings back the earlier label"}
    if refused:
        cause["overrides_declared_range"] = True
        cause["note"] += ("; the ordinary pin does not install with resolution "
                          f"({refused[0].get('message')}), so the declared range was overridden")
    return cause


def _covered(experiment: Mapping[str, Any], experiments: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a pin that did not run was run since as a forced pin (no resolution)."""
    return experiment["name"] == "pin" and any(
        e["name"] == "forced-pin" and e["pins"] == experiment["pins"] and e.get("state") == "ok"
        for e in experiments)


def _covered_package(name: str, experiments: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a package only one environment has was removed from, or added back to, a copy
    of the later environment in a run that ran."""
    return any(e.get("state") == "ok" and (name in e.get("removed", ()) and e["name"] == "removal"
                                           or e["name"] == "forced-pin" and name in e["pins"])
               for e in experiments)


def narrowing(diff: Mapping[str, Sequence[Optional[str]]], framework: str,
              experiments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The single changes still worth trying in a copy of the later environment installed with
    ``--no-deps`` (``{"name", "pins", "removed"}``): a package new in the later environment
    removed, a package it lost added back, and a pin that did not install (its declared range
    refuses it) forced. What already ran is left out."""
    wanted: list[dict[str, Any]] = []
    for name, (old, new) in sorted(diff.items()):
        if name == framework:
            continue
        if old is None:
            wanted.append({"name": "removal", "pins": {}, "removed": [name]})
        elif new is None or any(e["name"] == "pin" and e["pins"] == {name: old}
                                and e.get("state") != "ok" for e in experiments):
            wanted.append({"name": "forced-pin", "pins": {name: old}, "removed": []})
    done = {(e["name"], tuple(sorted(e["pins"].items())), tuple(e.get("removed", ())))
            for e in experiments}
    return [w for w in wanted
            if (w["name"], tuple(sorted(w["pins"].items())), tuple(w["removed"])) not in done]


def moving_joint(diff: Mapping[str, Sequence[Optional[str]]], framework: str,
                 experiments: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """When every dependency at once brings the earlier label back but no single one does:
    only the changes that each move the label (away from the control's, not to the earlier
    one) at once, in a copy of the later environment; None if that is every change anyway."""
    control = next((e for e in experiments if e["name"] == "control"), None)
    joint = next((e for e in experiments if e["name"] in ("dependencies", "forced-dependencies")
                  and e.get("state") == "ok" and e["reverts"]), None)
    if control is None or joint is None or any(e["name"] == "moving-dependencies"
                                               for e in experiments):
        return None
    moved = [e for e in experiments if e["name"] in ("pin", "forced-pin", "removal")
             and e.get("state") == "ok" and not e["reverts"]
             and (e.get("verdict"), e.get("label")) != (control.get("verdict"),
                                                        control.get("label"))]
    pins = {k: v for e in moved for k, v in e["pins"].items()}
    removed = sorted({k for e in moved for k in e.get("removed", ())})
    if len(moved) < 2 or set(pins) | set(removed) == set(joint["pins"]) | set(
            joint.get("removed", ())):
        return None
    return {"name": "moving-dependencies", "pins": dict(sorted(pins.items())), "removed": removed}


def forced_joint(diff: Mapping[str, Sequence[Optional[str]]], framework: str,
                 experiments: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """Every dependency at the earlier cell's version at once, without resolution (the later
    framework in the earlier environment), when no single change brought the earlier label back
    and the ordinary joint pin did not run or could not cover every package; else None."""
    others = {k: v for k, v in diff.items() if k != framework}
    if len(others) < 2 or any(e["reverts"] for e in experiments if e["name"] in SINGLES):
        return None
    joint = next((e for e in experiments if e["name"] == "dependencies"), None)
    if joint is not None and joint.get("state") == "ok" and all(
            old is not None and new is not None for old, new in others.values()):
        return None
    if any(e["name"] == "forced-dependencies" for e in experiments):
        return None
    return {"name": "forced-dependencies",
            "pins": {k: old for k, (old, _) in sorted(others.items()) if old is not None},
            "removed": sorted(k for k, (old, _) in others.items() if old is None)}


def tried_any(singles: Sequence[Mapping[str, Any]], joint: Mapping[str, Any] | None) -> bool:
    return bool(singles) or joint is not None


def _what(experiment: Mapping[str, Any]) -> str:
    if experiment["name"] == "python":
        return f"Python {experiment.get('python')}"
    pins = experiment.get("pins") or {}
    parts = [f"{k}=={v}" for k, v in sorted(pins.items())]
    parts += [f"without {k}" for k in experiment.get("removed", ())]
    what = " + ".join(parts) or experiment["name"]
    if experiment["name"] in NO_DEPS and experiment["name"] != "earlier-framework":
        what += " (--no-deps)"
    return what


def cause_text(cause: Mapping[str, Any]) -> str:
    """The cause in a few words, for the CLI and the site."""
    kind = cause["kind"]
    if kind in ("framework", "dependency"):
        old, new = (v or "absent" for v in cause["versions"])
        forced = " (declared range overridden)" if cause.get("overrides_declared_range") else ""
        return f"{kind}: {cause['package']} {old} → {new}{forced}"
    if kind == "dependencies":
        forced = " (declared range overridden)" if cause.get("overrides_declared_range") else ""
        return "dependencies together: " + ", ".join(cause["packages"]) + forced
    if kind == "python":
        return f"Python {cause['versions'][0]} → {cause['versions'][1]}"
    return kind


# ---------------------------------------------------------------------------- entries


def base_entry(flip: Flip, diff: Mapping[str, Sequence[Optional[str]]]) -> dict[str, Any]:
    def side(s: Side) -> dict[str, str]:
        return {"cell": s.cell, "version": s.version, "python": s.python,
                "verdict": s.verdict, "label": s.label}

    return {"line": flip.line, "series": flip.series, "clause": flip.clause,
            "from": side(flip.before), "to": side(flip.after),
            "differing": {k: list(v) for k, v in diff.items()}}


def same_flip(entry: Mapping[str, Any], flip: Flip,
              diff: Mapping[str, Sequence[Optional[str]]]) -> bool:
    """Whether a stored entry still describes ``flip`` (same cells, labels and environments)."""
    fresh = base_entry(flip, diff)
    return all(entry.get(k) == v for k, v in fresh.items())


def reuses(previous: Mapping[str, Any], flip: Flip,
           diff: Mapping[str, Sequence[Optional[str]]]) -> bool:
    """Whether ``previous`` holds a cause for ``flip`` that a run of the undetermined flips
    keeps: an entry that still describes the flip and is neither undetermined nor unmeasured."""
    entry = next((e for e in previous.get("flips", [])
                  if (e["from"]["cell"], e["to"]["cell"], e["clause"]) == flip.key), None)
    return (entry is not None and same_flip(entry, flip, diff)
            and entry["cause"]["kind"] not in ("undetermined", "unmeasured"))


def without_fastapi(entry: Mapping[str, Any], stored: Mapping[str, Mapping[str, Any]]
                    ) -> Optional[dict[str, Any]]:
    """The cause of an undetermined FastAPI flip whose Starlette also changed, when the
    Starlette line reproduces it: the Starlette-only cells (no FastAPI installed, the same
    Python) at the two Starlette versions read exactly the earlier and the later label.  The
    framework of the line is then not needed for the change; Starlette's change is the cause.
    Used only where no experiment could cross the two releases (each fails in the other's
    environment), and said so."""
    versions = entry["differing"].get("starlette")
    if (entry["line"] != "fastapi" or entry["cause"]["kind"] != "undetermined"
            or not versions or None in versions):
        return None
    python = entry["from"]["python"]
    sides = []
    for version, side in zip(versions, (entry["from"], entry["to"])):
        result = stored.get(f"st-{version}_py{python}")
        seen = (result or {}).get("clauses", {}).get(entry["clause"])
        if result is None or result.get("state") != "ok" or seen is None:
            return None
        verdict, label = seen[:2] if isinstance(seen, list) else (seen["verdict"], seen["label"])
        if (verdict, label) != (side["verdict"], side["label"]):
            return None
        sides.append(result["cell"]["id"])
    old, new = versions
    return {"kind": "dependency", "package": "starlette", "versions": [old, new],
            "reproduced_by": sides,
            "note": f"the Starlette line reproduces the change with no FastAPI installed: "
                    f"{sides[0]} reads the earlier label and {sides[1]} the later one; no "
                    f"experiment could cross the two releases ({entry['cause']['note']})"}


def document(flips: Sequence[Flip], diffs: Mapping[tuple, Mapping],
             measured: Mapping[tuple, Mapping[str, Any]],
             previous: Optional[Mapping[str, Any]], suite_hash: Optional[str],
             stored: Optional[Mapping[str, Mapping[str, Any]]] = None) -> dict[str, Any]:
    """The attribution file: every flip once, measured now, kept from ``previous`` when it still
    describes the same flip, else attributed from the environments alone; an undetermined
    FastAPI flip the Starlette line reproduces is Starlette's (:func:`without_fastapi`)."""
    kept = {(e["from"]["cell"], e["to"]["cell"], e["clause"]): e
            for e in (previous or {}).get("flips", [])}
    entries = []
    for flip in flips:
        diff = diffs[flip.key]
        if flip.key in measured:
            entry = dict(measured[flip.key])
        elif flip.key in kept and same_flip(kept[flip.key], flip, diff):
            entry = dict(kept[flip.key])
        else:
            entry = {**base_entry(flip, diff), "experiments": []}
            entry["cause"] = decide(flip, diff, None)
        if stored is not None and entry["cause"]["kind"] == "undetermined":
            entry["cause"] = without_fastapi(entry, stored) or entry["cause"]
        entries.append(entry)
    return {"format": FORMAT, "suite_hash": suite_hash,
            "about": "Why a clause's label changes between adjacent releases of a line, "
                     "measured by `bgmatrix attribute` (bgmatrix/run/attribute.py).",
            "flips": entries}


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def load(path: Path = ATTRIBUTION_PATH) -> Optional[dict[str, Any]]:
    """The attribution file, or None if there is none; one line naming it if it is broken."""
    return read_checked(path, "attribution", AttributionError, "attribution file")


def write(doc: Mapping[str, Any], path: Path = ATTRIBUTION_PATH) -> bool:
    """Validate and write ``doc``; True if the file changed."""
    found = schemas.problem(doc, "attribution")
    if found is not None:
        raise AttributionError(f"{path}: the attribution to write is invalid: {found}")
    return write_text_if_changed(path, dumps(doc))


# ---------------------------------------------------------------------------- framework files

#: How many changed files an entry names (the count says how many there were in all).
FILES_SHOWN = 25


def package_files(package: str, version: str, folder: Path) -> dict[str, str]:
    """``package==version``'s own files (no dependencies) by path, with their SHA-256,
    installed with uv into ``folder`` (uv's cache usually holds it after a sweep)."""
    from bgmatrix.run.env import run as run_tool
    from bgmatrix.run.env import uv, uv_env

    target = folder / f"{package}-{version}"
    if not target.is_dir():
        staging = folder / f".{package}-{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        rc, out = run_tool([uv(), "pip", "install", "-q", "--no-deps", "--python",
                            sys.executable, "--target", str(staging),
                            f"{package}=={version}"], 300, uv_env())
        if rc:
            raise AttributionError(f"{package}=={version} could not be installed to compare "
                                   f"its files: {out.strip().splitlines()[-1:]}")
        staging.rename(target)
    top = normalise(package).replace("-", "_")
    return {str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((target / top).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def changed_files(package: str, old: str, new: str, folder: Path = SCRATCH_DIR / "files"
                  ) -> dict[str, Any]:
    """The files of ``package`` that differ between two releases (changed, added, removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    before, after = package_files(package, old, folder), package_files(package, new, folder)
    changed = sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f))
    return {"package": package, "versions": [old, new], "total": len(changed),
            "files": changed[:FILES_SHOWN]}


# ---------------------------------------------------------------------------- measuring

#: Runs one cell: (cell, install requirements) -> a result in the full form.
CellRunner = Callable[[Mapping[str, Any], list[str]], Mapping[str, Any]]


def _default_runner(cell: Mapping[str, Any], install: list[str]) -> Mapping[str, Any]:
    from bgmatrix.run import runner  # imported here: the pure parts need no uv

    return runner.run_cell(cell, install=install, wire_mode=False)


def _requirements(cell: Mapping[str, Any]) -> list[str]:
    return [f"{name}=={cell[name]}" for name in ("fastapi", "starlette") if cell.get(name)]


@dataclass
class Experiment:
    name: str  # control | pin | python | dependencies | today, or one of NO_DEPS
    cell: dict[str, Any]  # the cell as run (its python or cutoff may be changed)
    pins: dict[str, str]
    python: Optional[str] = None
    result: Optional[Mapping[str, Any]] = None
    seconds: float = 0.0
    #: For a NO_DEPS experiment: the later cell's recorded environment, installed exactly
    #: (``--no-deps``) with the pins applied and ``removed`` left out.
    environment: Optional[dict[str, str]] = None
    removed: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        pins = "+".join([f"{k}-{v}" for k, v in sorted(self.pins.items())]
                        + [f"no-{k}" for k in self.removed])
        if len(pins) > 80:  # a joint pin of many packages: a folder name has 255 bytes
            pins = f"{len(self.pins)}-pins-" + hashlib.sha256(pins.encode()).hexdigest()[:12]
        extra = f"-py{self.python}" if self.python else ""
        return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{self.name}{extra}{'-' + pins if pins else ''}"
                      f"-{self.cell['id']}")

    def install(self) -> list[str]:
        """The cell's pair, except a pinned one (Starlette in a FastAPI cell), then the pins;
        or, with an ``environment``, every package of it at its version (the pins' instead),
        without ``removed`` and without dependency resolution (``--no-deps``)."""
        if self.environment is not None:
            exact = {normalise(k): v for k, v in self.environment.items()}
            exact.update({normalise(k): v for k, v in self.pins.items()})
            return ["--no-deps"] + [f"{k}=={v}" for k, v in sorted(exact.items())
                                    if k not in self.removed]
        pair = [r for r in _requirements(self.cell) if r.split("==")[0] not in self.pins]
        return pair + [f"{k}=={v}" for k, v in sorted(self.pins.items())]


def _run_all(batch: Sequence[Experiment], run: CellRunner, jobs: int, scratch: Path,
             log: Callable[[str], None]) -> None:
    def one(exp: Experiment) -> None:
        start = time.monotonic()
        exp.result = run(exp.cell, exp.install())
        exp.seconds = time.monotonic() - start
        folder = scratch / exp.slug
        shutil.rmtree(folder, ignore_errors=True)
        results.write(folder / f"{exp.cell['id']}.json", dict(exp.result))  # type: ignore[arg-type]
        what = _what({"name": exp.name, "pins": exp.pins, "python": exp.python,
                      "removed": exp.removed})
        log(f"  {exp.cell['id']} {exp.name} {what if exp.name != 'control' else ''}".rstrip()
            + f": {exp.result['state']} in {exp.seconds:.1f} s")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, batch))


def measure_pair(flips: Sequence[Flip], before: Mapping[str, Any], after: Mapping[str, Any],
                 run: CellRunner = _default_runner, jobs: int = 2,
                 scratch: Path = SCRATCH_DIR, today: bool = True,
                 log: Callable[[str], None] = print) -> dict[tuple, dict[str, Any]]:
    """Attribute every flip between the cells ``before`` and ``after`` (results in either form)
    with one set of experiments; returns each flip's entry by key."""
    framework = flips[0].framework
    a_cell, b_cell = dict(before["cell"]), dict(after["cell"])
    a_packages = before["provenance"].get("packages") or {}
    b_packages = after["provenance"].get("packages") or {}
    diff = package_diff(a_packages, b_packages)
    pins, _ = pinnable(diff, framework)
    folder = scratch / f"{a_cell['id']}__{b_cell['id']}"
    entries: dict[tuple, dict[str, Any]] = {}
    needs_runs = [f for f in flips if decide(f, diff, None)["kind"] == "unmeasured"]
    if not needs_runs:
        for flip in flips:
            entries[flip.key] = {**base_entry(flip, diff), "experiments": [],
                                 "cause": decide(flip, diff, None)}
        return entries
    batch = [Experiment("control", b_cell, {})]
    batch += [Experiment("pin", b_cell, {name: version}) for name, version in pins.items()]
    if a_cell["python"] != b_cell["python"]:
        batch.append(Experiment("python", {**b_cell, "python": a_cell["python"]}, {},
                                python=a_cell["python"]))
    earlier = diff.get(framework, [None, None])[0]
    if b_packages and earlier is not None:
        batch.append(Experiment("earlier-framework", b_cell, {framework: earlier},
                                environment=dict(b_packages)))
    log(f"{a_cell['id']} -> {b_cell['id']}: {len(flips)} flip(s), differing "
        + (", ".join(f"{k} {v[0]}->{v[1]}" for k, v in diff.items()) or "nothing")
        + f"; {len(batch)} run(s)")
    _run_all(batch, run, jobs, folder, log)
    records = {f.key: _records(batch, f, b_packages) for f in flips}
    if len(pins) > 1 and any(not any(r["reverts"] for r in recs if r["name"] != "control")
                             for recs in records.values()):
        joint = Experiment("dependencies", b_cell, dict(pins))
        _run_all([joint], run, jobs, folder, log)
        batch.append(joint)
        records = {f.key: _records(batch, f, b_packages) for f in flips}
    # What resolution could not try, tried in copies of the later environment: each change
    # alone (always, so that a second sufficient cause is not missed), then all at once (only
    # while the cause is still undetermined).
    for step, kinds in ((narrowing, ("framework", "undetermined", "dependency", "python",
                                     "dependencies")), (forced_joint, ("undetermined",)),
                        (moving_joint, ("dependencies",))):
        open_keys = [f.key for f in flips
                     if decide(f, diff, records[f.key])["kind"] in kinds
                     and _control_reproduces(records[f.key], f)]
        wanted: list[dict[str, Any]] = []
        for key in open_keys:
            found = step(diff, framework, records[key])
            for w in ([found] if isinstance(found, dict) else found or []):
                if w not in wanted:
                    wanted.append(w)
        if not wanted or not b_packages:
            continue
        more = [Experiment(w["name"], b_cell, dict(w["pins"]), environment=dict(b_packages),
                           removed=tuple(w["removed"])) for w in wanted]
        _run_all(more, run, jobs, folder, log)
        batch += more
        records = {f.key: _records(batch, f, b_packages) for f in flips}
    todays: dict[str, Experiment] = {}
    for flip in flips:
        entry = {**base_entry(flip, diff), "experiments": records[flip.key]}
        entry["cause"] = decide(flip, diff, records[flip.key])
        entries[flip.key] = entry
    if today and any(e["cause"]["kind"] in ("dependency", "dependencies")
                     for e in entries.values()):
        todays = {"from": Experiment("today", {**a_cell, "cutoff": None}, {}),
                  "to": Experiment("today", {**b_cell, "cutoff": None}, {})}
        _run_all(list(todays.values()), run, jobs, folder, log)
        for flip in flips:
            entry = entries[flip.key]
            if entry["cause"]["kind"] in ("dependency", "dependencies"):
                entry["today"] = {side: _today(exp, flip.clause, entry["cause"])
                                  for side, exp in todays.items()}
    return entries


def add_framework_files(entries: Mapping[tuple, dict[str, Any]],
                        log: Callable[[str], None] = print) -> None:
    """Name, in each measured entry, the framework files that differ between its releases."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries.values():
        old, new = entry["differing"].get(entry["line"], [None, None])
        if old is None or new is None:
            continue
        pair = (entry["line"], old, new)
        if pair not in found:
            try:
                found[pair] = changed_files(*pair)
            except AttributionError as exc:
                log(f"  {exc}")
                continue
        entry["framework_files"] = found[pair]


def _records(batch: Sequence[Experiment], flip: Flip,
             after_packages: Mapping[str, str]) -> list[dict[str, Any]]:
    return [experiment_record(e.name, e.pins, e.python, e.result or {}, flip.clause,
                              flip.before, after_packages, e.removed) for e in batch]


def _control_reproduces(records: Sequence[Mapping[str, Any]], flip: Flip) -> bool:
    control = next((r for r in records if r["name"] == "control"), None)
    return (control is not None and control.get("state") == "ok"
            and (control.get("verdict"), control.get("label")) == flip.after.outcome())


def _today(exp: Experiment, clause: str, cause: Mapping[str, Any]) -> dict[str, Any]:
    result = exp.result or {}
    out: dict[str, Any] = {"cell": exp.cell["id"], "state": result.get("state")}
    entry = results.clause_entries(result).get(clause) if result.get("state") == "ok" else None
    if entry is not None:
        out["verdict"], out["label"] = entry["verdict"], entry["label"]
    else:
        out["message"] = (result.get("message") or str(result.get("state"))).splitlines()[-1][:300]
    seen = {normalise(k): v for k, v in
            ((result.get("provenance") or {}).get("packages") or {}).items()}
    names = [cause["package"]] if "package" in cause else list(cause.get("packages", []))
    out["packages"] = {name: seen.get(name) for name in names}
    return out


# ---------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clause", action="append", default=[], metavar="ID",
                   help="only flips of this clause (repeatable)")
    p.add_argument("--line", choices=LINES, help="only flips of this line")
    p.add_argument("--limit", type=int, metavar="N",
                   help="measure at most N pairs of releases that need experiments")
    p.add_argument("--unmeasured", action="store_true",
                   help="only flips the attribution file does not attribute yet")
    p.add_argument("--undetermined", action="store_true",
                   help="only flips the attribution file leaves undetermined or unattributed")
    p.add_argument("--list", action="store_true",
                   help="print the flips and what differs; run nothing, write nothing")
    p.add_argument("--no-today", action="store_true",
                   help="skip today's environment for dependency-caused flips")
    p.add_argument("--no-files", action="store_true",
                   help="do not name the framework files that changed at each flip")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--results", default=str(results.RESULTS_DIR))
    p.add_argument("--out", default=str(ATTRIBUTION_PATH))


def _bounds() -> dict[str, Optional[str]]:
    return {c["id"]: c.get("starlette_bound") for c in store.load_cells()}


def read_results(folder: Path) -> dict[str, results.StoredResult]:
    """Every stored result of ``folder`` (flips need no evidence objects); a broken file is
    one line."""
    if not folder.is_dir():
        raise UsageError(f"no results folder {folder}")
    found = {}
    for path in results.result_paths(folder):
        found[path.stem] = results.load_stored(path)
    return found


def command(args: argparse.Namespace) -> int:
    known = {c.id for c in spec.load()}
    unknown = [c for c in args.clause if c not in known]
    if unknown:
        raise UsageError(f"unknown clause {unknown[0]!r}; clause IDs look like MW-3 (see spec/)")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be 0 or more, not {args.limit}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be 1 or more, not {args.jobs}")
    out = Path(args.out)
    previous = load(out)
    stored = read_results(Path(args.results))
    flips, skipped = find_flips(stored, _bounds())
    diffs = {f.key: package_diff(stored[f.before.cell]["provenance"].get("packages") or {},
                                 stored[f.after.cell]["provenance"].get("packages") or {})
             for f in flips}
    chosen = [f for f in flips if (not args.clause or f.clause in args.clause)
              and (args.line is None or f.line == args.line)]
    if args.unmeasured and previous:
        done = {(e["from"]["cell"], e["to"]["cell"], e["clause"]): e for e in previous["flips"]}
        chosen = [f for f in chosen
                  if not (f.key in done and same_flip(done[f.key], f, diffs[f.key])
                          and done[f.key]["cause"]["kind"] != "unmeasured")]
    if args.undetermined and previous:
        chosen = [f for f in chosen if not reuses(previous, f, diffs[f.key])]
    for line in skipped:
        print(f"not compared: {line}")
    print(f"{len(flips)} flip(s) in {args.results}; {len(chosen)} chosen")
    if args.list:
        for flip in chosen:
            diff = diffs[flip.key]
            print(f"{flip.line} {flip.series}: {flip.clause} {flip.before.version} -> "
                  f"{flip.after.version} ({flip.before.label[:50]!r} -> {flip.after.label[:50]!r})"
                  f"; differing: {', '.join(diff) or 'nothing'}; "
                  f"{cause_text(decide(flip, diff, None))}")
        return 0
    pairs: dict[tuple[str, str], list[Flip]] = {}
    for flip in chosen:
        pairs.setdefault((flip.before.cell, flip.after.cell), []).append(flip)
    measured: dict[tuple, dict[str, Any]] = {}
    runs = 0
    suite_hashes = {r["provenance"].get("suite_hash") for r in stored.values()
                    if r["state"] == "ok"}
    try:
        for (a, b), group in pairs.items():
            needs = any(decide(f, diffs[f.key], None)["kind"] == "unmeasured" for f in group)
            if needs and args.limit is not None and runs >= args.limit:
                continue
            runs += needs
            # Every flip of the pair is measured by the same runs, chosen or not.
            every = [f for f in flips if (f.before.cell, f.after.cell) == (a, b)]
            measured.update(measure_pair(every, stored[a], stored[b], jobs=args.jobs,
                                         today=not args.no_today))
        if not args.no_files:
            add_framework_files(measured, log=print)
    finally:  # Ctrl-C keeps what was measured
        doc = document(flips, diffs, measured, previous,
                       next(iter(suite_hashes)) if len(suite_hashes) == 1 else None, stored)
        changed = write(doc, out)
    final = {(e["from"]["cell"], e["to"]["cell"], e["clause"]): e for e in doc["flips"]}
    for key in sorted(measured, key=lambda k: flip_order(next(f for f in flips if f.key == k))):
        entry = final[key]  # as written: without_fastapi may have settled it
        print(f"{entry['clause']} {entry['from']['version']} -> {entry['to']['version']} "
              f"({entry['series']}): {cause_text(entry['cause'])}")
    print(f"{out}: {'written' if changed else 'unchanged'}; {len(measured)} flip(s) measured, "
          f"{sum(e['cause']['kind'] == 'unmeasured' for e in doc['flips'])} not yet attributed")
    return 0
