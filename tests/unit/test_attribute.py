"""Flip attribution (bgmatrix/run/attribute.py, issue 13 items 2 and 3): flips between adjacent
releases, the environments' difference, the cause each set of experiments points to, the file
it is stored in, the command's errors, the clause page's table — and one real experiment, the
Starlette 0.31.1 -> 0.32.0 boundary, where anyio 3.7.1 -> 4.0.0 changed the resolved
environment while Starlette's middleware did not change."""

from __future__ import annotations

import json

import pytest

from bgmatrix import cli, results
from bgmatrix.run import attribute
from bgmatrix.run.attribute import Flip, Side
from bgmatrix.site import attribution as site_attribution
from bgmatrix.site.model import ReportError

# --------------------------------------------------------------------------- synthetic data


def stored(cell_id, *, kind="starlette", starlette="0.1.0", fastapi=None, python="3.8",
           state="ok", packages=None, clauses=None, suite="s1"):
    """A stored result as flips need it: the cell, the state, the environment, the clauses."""
    return {"cell": {"id": cell_id, "kind": kind, "fastapi": fastapi, "starlette": starlette,
                     "python": python, "cutoff": "2023-01-01T00:00:00Z"},
            "state": state,
            "provenance": {"suite_hash": suite, "packages": packages or {"starlette": starlette}},
            "clauses": clauses or {}}


def st(version, clauses, packages=None, **kw):
    cell_id = f"st-{version}_py3.8"
    return cell_id, stored(cell_id, starlette=version,
                           packages={"starlette": version, **(packages or {})},
                           clauses=clauses, **kw)


def side(cell, version, label, verdict="conforms", python="3.8"):
    return Side(cell, version, python, verdict, label)


def mw3_flip():
    return Flip("starlette", "starlette", "MW-3",
                side("st-0.31.1_py3.8", "0.31.1", "swallowed", "deviates"),
                side("st-0.32.0_py3.8", "0.32.0", "propagated"))


ANYIO_DIFF = {"anyio": ["3.7.1", "4.0.0"], "starlette": ["0.31.1", "0.32.0"]}


def exp(name, pins=None, label="propagated", verdict="conforms", state="ok", reverts=False,
        python=None):
    record = {"name": name, "pins": pins or {}, "state": state, "reverts": reverts,
              "also_changed": {}}
    if state == "ok":
        record.update(verdict=verdict, label=label)
    else:
        record["message"] = "resolution failed"
    if python:
        record["python"] = python
    return record


# --------------------------------------------------------------------------- flips


def test_flips_are_found_between_adjacent_releases_in_version_order():
    found = dict([
        st("0.10.0", {"MW-3": ["conforms", "propagated"]}),
        st("0.9.0", {"MW-3": ["deviates", "swallowed"]}),  # 0.9 before 0.10, not as text
        st("0.11.0", {"MW-3": ["conforms", "propagated"]}),
    ])
    flips, skipped = attribute.find_flips(found, {})
    assert [(f.clause, f.before.version, f.after.version) for f in flips] == [
        ("MW-3", "0.9.0", "0.10.0")]
    assert flips[0].before.outcome() == ("deviates", "swallowed")
    assert skipped == []


def test_a_pair_without_verdicts_or_from_two_suites_is_not_compared():
    found = dict([
        st("0.1.0", {"MW-3": ["deviates", "swallowed"]}),
        st("0.2.0", {}, state="import-error"),
        st("0.3.0", {"MW-3": ["conforms", "propagated"]}),
        st("0.4.0", {"MW-3": ["deviates", "swallowed"]}, suite="s2"),
    ])
    flips, skipped = attribute.find_flips(found, {})
    assert flips == []
    assert len(skipped) == 3
    assert "not both ok (ok, import-error)" in skipped[0]
    assert "different suites" in skipped[2]


def test_fastapi_lines_hold_one_python_and_one_starlette_bound_and_an_only_pair_counts_once():
    def fa(version, starlette, label, python="3.8"):
        cell_id = f"fa-{version}_st-{starlette}_py{python}"
        return cell_id, stored(cell_id, kind="fastapi", fastapi=version, starlette=starlette,
                               python=python, clauses={"ATTACH-3": ["deviates", label]},
                               packages={"fastapi": version, "starlette": starlette})

    found = dict([fa("0.1.0", "0.1.0", "drop"), fa("0.2.0", "0.1.0", "merge"),
                  fa("0.2.0", "0.2.0", "drop"), fa("0.3.0", "0.2.0", "drop"),
                  fa("0.3.0", "0.2.0", "merge", python="3.9")])
    bounds = {"fa-0.1.0_st-0.1.0_py3.8": "only", "fa-0.2.0_st-0.1.0_py3.8": "lowest",
              "fa-0.2.0_st-0.2.0_py3.8": "highest", "fa-0.3.0_st-0.2.0_py3.8": "only",
              "fa-0.3.0_st-0.2.0_py3.9": "only"}
    flips, _ = attribute.find_flips(found, bounds)
    # lowest: 0.1.0 drop -> 0.2.0 merge -> 0.3.0 drop; highest: 0.1.0 drop -> 0.2.0 drop ->
    # 0.3.0 drop; Python 3.9 is a line of its own (one cell, no pair).
    assert [(f.series, f.before.cell, f.after.cell) for f in flips] == [
        ("py3.8, lowest Starlette", "fa-0.1.0_st-0.1.0_py3.8", "fa-0.2.0_st-0.1.0_py3.8"),
        ("py3.8, lowest Starlette", "fa-0.2.0_st-0.1.0_py3.8", "fa-0.3.0_st-0.2.0_py3.8"),
    ]
    assert {f.line for f in flips} == {"fastapi"}


# --------------------------------------------------------------------------- environments


def test_package_diff_names_every_package_whose_version_differs_normalised():
    diff = attribute.package_diff(
        {"starlette": "0.31.1", "anyio": "3.7.1", "typing_extensions": "4.7.1", "idna": "3.4",
         "gone": "1.0"},
        {"starlette": "0.32.0", "anyio": "4.0.0", "Typing-Extensions": "4.8.0", "idna": "3.4",
         "exceptiongroup": "1.1.3"})
    assert diff == {"anyio": ["3.7.1", "4.0.0"], "exceptiongroup": [None, "1.1.3"],
                    "gone": ["1.0", None], "starlette": ["0.31.1", "0.32.0"],
                    "typing-extensions": ["4.7.1", "4.8.0"]}
    pins, not_pinned = attribute.pinnable(diff, "starlette")
    assert pins == {"anyio": "3.7.1", "typing-extensions": "4.7.1"}
    assert set(not_pinned) == {"exceptiongroup", "gone"}


# --------------------------------------------------------------------------- the decision


def test_only_the_framework_differs_then_the_framework_is_the_cause_without_a_run():
    cause = attribute.decide(mw3_flip(), {"starlette": ["0.31.1", "0.32.0"]}, None)
    assert cause["kind"] == "framework"
    assert cause["versions"] == ["0.31.1", "0.32.0"]


def test_a_dependency_difference_without_experiments_is_unmeasured():
    assert attribute.decide(mw3_flip(), ANYIO_DIFF, None)["kind"] == "unmeasured"


def test_the_pin_that_brings_the_earlier_label_back_is_the_cause():
    runs = [exp("control"),
            exp("pin", {"anyio": "3.7.1"}, "swallowed", "deviates", reverts=True)]
    cause = attribute.decide(mw3_flip(), ANYIO_DIFF, runs)
    assert cause == {"kind": "dependency", "package": "anyio", "versions": ["3.7.1", "4.0.0"],
                     "note": "pinning anyio to 3.7.1 alone brings back the earlier label"}
    assert attribute.cause_text(cause) == "dependency: anyio 3.7.1 → 4.0.0"


def test_no_pin_brings_it_back_then_the_framework_is_the_cause():
    runs = [exp("control"), exp("pin", {"anyio": "3.7.1"})]
    cause = attribute.decide(mw3_flip(), ANYIO_DIFF, runs)
    assert cause["kind"] == "framework"
    assert "anyio==3.7.1" in cause["note"]


def test_a_label_the_control_run_does_not_reproduce_is_unstable():
    runs = [exp("control", label="swallowed", verdict="deviates"),
            exp("pin", {"anyio": "3.7.1"}, "swallowed", "deviates", reverts=True)]
    assert attribute.decide(mw3_flip(), ANYIO_DIFF, runs)["kind"] == "unstable"


def test_a_pin_that_cannot_install_or_a_new_package_leaves_the_cause_undetermined():
    runs = [exp("control"), exp("pin", {"anyio": "3.7.1"}, state="install-error")]
    cause = attribute.decide(mw3_flip(), ANYIO_DIFF, runs)
    assert cause["kind"] == "undetermined"
    assert "anyio==3.7.1 did not run (resolution failed)" in cause["note"]
    diff = {**ANYIO_DIFF, "exceptiongroup": [None, "1.1.3"]}
    cause = attribute.decide(mw3_flip(), diff, [exp("control"), exp("pin", {"anyio": "3.7.1"})])
    assert cause["kind"] == "undetermined"
    assert "exceptiongroup 1.1.3 is new" in cause["note"]


def test_two_sufficient_pins_are_undetermined_and_a_joint_pin_is_dependencies():
    diff = {**ANYIO_DIFF, "sniffio": ["1.2.0", "1.3.0"]}
    both = [exp("control"), exp("pin", {"anyio": "3.7.1"}, "swallowed", "deviates", reverts=True),
            exp("pin", {"sniffio": "1.2.0"}, "swallowed", "deviates", reverts=True)]
    assert attribute.decide(mw3_flip(), diff, both)["kind"] == "undetermined"
    joint = [exp("control"), exp("pin", {"anyio": "3.7.1"}), exp("pin", {"sniffio": "1.2.0"}),
             exp("dependencies", {"anyio": "3.7.1", "sniffio": "1.2.0"}, "swallowed",
                 "deviates", reverts=True)]
    cause = attribute.decide(mw3_flip(), diff, joint)
    assert cause["kind"] == "dependencies"
    assert cause["packages"] == ["anyio", "sniffio"]


def test_a_python_change_is_tried_and_can_be_the_cause():
    flip = Flip("starlette", "starlette", "MW-1",
                side("st-0.44.0_py3.8", "0.44.0", "a", python="3.8"),
                side("st-0.45.0_py3.9", "0.45.0", "b", python="3.9"))
    diff = {"starlette": ["0.44.0", "0.45.0"]}
    assert attribute.decide(flip, diff, None)["kind"] == "unmeasured"  # the Python differs
    runs = [exp("control", label="b"), exp("python", label="a", reverts=True, python="3.8")]
    assert attribute.decide(flip, diff, runs)["kind"] == "python"


def fa_flip():
    """MW-2 at FastAPI 0.84.0 -> 0.85.0 (py3.8, highest Starlette): 0.85.0's declared range
    refuses Starlette 0.19.1, so the ordinary pin cannot install."""
    return Flip("fastapi", "py3.8, highest Starlette", "MW-2",
                side("fa-0.84.0_st-0.19.1_py3.8", "0.84.0", "a", "deviates"),
                side("fa-0.85.0_st-0.20.4_py3.8", "0.85.0", "b"))


FA_DIFF = {"fastapi": ["0.84.0", "0.85.0"], "starlette": ["0.19.1", "0.20.4"]}


def forced(name, pins=None, removed=None, label="b", **kw):
    """A record of an experiment in a copy of the later environment (``--no-deps``)."""
    record = exp(name, pins, label, **kw)
    record["no_deps"] = True
    if removed:
        record["removed"] = removed
    return record


def test_the_earlier_framework_in_the_later_environment_bringing_the_label_back_is_the_cause():
    runs = [exp("control", label="b"), exp("pin", {"starlette": "0.19.1"}, state="install-error"),
            forced("earlier-framework", {"fastapi": "0.84.0"}, label="a", verdict="deviates",
                   reverts=True)]
    cause = attribute.decide(fa_flip(), FA_DIFF, runs)
    assert cause["kind"] == "framework" and cause["versions"] == ["0.84.0", "0.85.0"]
    assert cause["note"].startswith("fastapi 0.84.0 in a copy of the later environment")
    assert "overrides_declared_range" not in cause
    # ... unless a dependency alone brings it back too: then both suffice, and neither is named
    both = runs + [forced("forced-pin", {"starlette": "0.19.1"}, label="a", verdict="deviates",
                          reverts=True)]
    cause = attribute.decide(fa_flip(), FA_DIFF, both)
    assert cause["kind"] == "undetermined"
    assert "and so does each of starlette==0.19.1 (--no-deps) alone" in cause["note"]


def test_a_forced_pin_outside_the_declared_range_can_be_the_cause_and_says_so():
    runs = [exp("control", label="b"), exp("pin", {"starlette": "0.19.1"}, state="install-error"),
            forced("earlier-framework", {"fastapi": "0.84.0"}),
            forced("forced-pin", {"starlette": "0.19.1"}, label="a", verdict="deviates",
                   reverts=True)]
    cause = attribute.decide(fa_flip(), FA_DIFF, runs)
    assert cause["kind"] == "dependency" and cause["package"] == "starlette"
    assert cause["versions"] == ["0.19.1", "0.20.4"]
    assert cause["overrides_declared_range"] is True
    assert "the declared range was overridden" in cause["note"]
    assert attribute.cause_text(cause) == ("dependency: starlette 0.19.1 → 0.20.4 (declared "
                                           "range overridden)")
    assert site_attribution.cause_text(cause).endswith("(declared range overridden)")


def test_the_earlier_framework_keeping_the_later_label_with_nothing_else_is_undetermined():
    diff = {**FA_DIFF, "anyio": ["3.6.1", "3.6.2"]}
    runs = [exp("control", label="b"), exp("pin", {"starlette": "0.19.1"}, state="install-error"),
            exp("pin", {"anyio": "3.6.1"}), forced("earlier-framework", {"fastapi": "0.84.0"}),
            forced("forced-pin", {"starlette": "0.19.1"}),
            forced("forced-dependencies", {"anyio": "3.6.1", "starlette": "0.19.1"})]
    cause = attribute.decide(fa_flip(), diff, runs)
    assert cause["kind"] == "undetermined"
    assert "still reads as the later release" in cause["note"]
    assert "needs the earlier framework and the earlier environment together" in cause["note"]


def test_the_earlier_framework_keeping_the_later_label_when_one_package_differs_names_it():
    """The copy is then the earlier cell with that one package moved forward: the label flips
    with it, under the earlier framework, even when the other way round does not import."""
    runs = [exp("control", label="b"), exp("pin", {"starlette": "0.19.1"}, state="install-error"),
            forced("earlier-framework", {"fastapi": "0.84.0"}),
            forced("forced-pin", {"starlette": "0.19.1"}, state="import-error")]
    cause = attribute.decide(fa_flip(), FA_DIFF, runs)
    assert cause["kind"] == "dependency" and cause["package"] == "starlette"
    assert cause["versions"] == ["0.19.1", "0.20.4"]
    assert "differs from the earlier cell in starlette 0.19.1 -> 0.20.4 alone" in cause["note"]
    assert ("the later fastapi with the earlier starlette could not be measured: "
            "starlette==0.19.1 did not run") in cause["note"]


def test_when_only_all_changes_at_once_bring_it_back_the_ones_that_move_it_are_tried_together():
    diff = {"fastapi": ["0.110.3", "0.111.0"], "orjson": [None, "3.10.3"],
            "ujson": [None, "5.9.0"], "click": [None, "8.1.7"]}
    flip = Flip("fastapi", "py3.8, highest Starlette", "SHAPE-1",
                side("fa-0.110.3_st-0.37.2_py3.8", "0.110.3", "orjson:n/a ujson:n/a"),
                side("fa-0.111.0_st-0.37.2_py3.8", "0.111.0", "orjson:ran ujson:ran"))
    runs = [exp("control", label="orjson:ran ujson:ran"),
            forced("earlier-framework", {"fastapi": "0.110.3"}, label="orjson:ran ujson:ran"),
            forced("removal", removed=["click"], label="orjson:ran ujson:ran"),
            forced("removal", removed=["orjson"], label="orjson:n/a ujson:ran"),
            forced("removal", removed=["ujson"], label="orjson:ran ujson:n/a"),
            forced("forced-dependencies", {}, removed=["click", "orjson", "ujson"],
                   label="orjson:n/a ujson:n/a", reverts=True)]
    assert attribute.decide(flip, diff, runs)["packages"] == ["click", "orjson", "ujson"]
    assert attribute.moving_joint(diff, "fastapi", runs) == {
        "name": "moving-dependencies", "pins": {}, "removed": ["orjson", "ujson"]}
    runs.append(forced("moving-dependencies", {}, removed=["orjson", "ujson"],
                       label="orjson:n/a ujson:n/a", reverts=True))
    assert attribute.moving_joint(diff, "fastapi", runs) is None
    cause = attribute.decide(flip, diff, runs)
    assert cause["kind"] == "dependencies" and cause["packages"] == ["orjson", "ujson"]
    assert "each move the label (without orjson + without ujson (--no-deps))" in cause["note"]


def test_a_forced_install_that_does_not_import_is_undetermined_with_what_was_tried():
    runs = [exp("control", label="b"), exp("pin", {"starlette": "0.19.1"}, state="install-error"),
            forced("earlier-framework", {"fastapi": "0.84.0"}, state="import-error"),
            forced("forced-pin", {"starlette": "0.19.1"}, state="import-error")]
    cause = attribute.decide(fa_flip(), FA_DIFF, runs)
    assert cause["kind"] == "undetermined"
    assert cause["note"].count("did not run (resolution failed)") == 3
    assert "fastapi 0.84.0 in a copy of the later environment" in cause["note"]
    assert "starlette==0.19.1 (--no-deps) did not run" in cause["note"]


def test_a_package_new_in_the_later_environment_is_removed_and_can_be_the_cause():
    diff = {**ANYIO_DIFF, "exceptiongroup": [None, "1.1.3"]}
    runs = [exp("control"), exp("pin", {"anyio": "3.7.1"}),
            forced("earlier-framework", {"starlette": "0.31.1"}, label="propagated"),
            forced("removal", removed=["exceptiongroup"], label="swallowed", verdict="deviates",
                   reverts=True)]
    cause = attribute.decide(mw3_flip(), diff, runs)
    assert cause["kind"] == "dependency" and cause["package"] == "exceptiongroup"
    assert cause["versions"] == [None, "1.1.3"]
    assert "removing exceptiongroup 1.1.3" in cause["note"]
    assert attribute.cause_text(cause) == "dependency: exceptiongroup absent → 1.1.3"
    assert site_attribution.cause_text(cause) == "a dependency: exceptiongroup absent → 1.1.3"
    # a removal that ran fills the gap a new package used to leave; a swap that did not run
    # is one, and named
    runs[-1] = forced("removal", removed=["exceptiongroup"], label="propagated")
    runs[2] = forced("earlier-framework", {"starlette": "0.31.1"}, state="import-error")
    cause = attribute.decide(mw3_flip(), diff, runs)
    assert cause["kind"] == "undetermined" and "exceptiongroup 1.1.3 is new" not in cause["note"]
    assert "starlette 0.31.1 in a copy of the later environment" in cause["note"]


def test_narrowing_removes_new_packages_adds_lost_ones_and_forces_refused_pins():
    diff = {"fastapi": ["0.110.3", "0.111.0"], "orjson": [None, "3.10.3"],
            "ujson": ["5.9.0", None], "pydantic": ["2.7.0", "2.7.1"],
            "starlette": ["0.37.1", "0.37.2"]}
    ran = [exp("control"), exp("pin", {"pydantic": "2.7.0"}),
           exp("pin", {"starlette": "0.37.1"}, state="install-error")]
    assert attribute.narrowing(diff, "fastapi", ran) == [
        {"name": "removal", "pins": {}, "removed": ["orjson"]},
        {"name": "forced-pin", "pins": {"starlette": "0.37.1"}, "removed": []},
        {"name": "forced-pin", "pins": {"ujson": "5.9.0"}, "removed": []}]
    done = ran + [forced("removal", removed=["orjson"]),
                  forced("forced-pin", {"starlette": "0.37.1"}),
                  forced("forced-pin", {"ujson": "5.9.0"})]
    assert attribute.narrowing(diff, "fastapi", done) == []
    # all at once, when no single change brings the label back: the earlier environment
    assert attribute.forced_joint(diff, "fastapi", done) == {
        "name": "forced-dependencies", "removed": ["orjson"],
        "pins": {"pydantic": "2.7.0", "starlette": "0.37.1", "ujson": "5.9.0"}}
    done[-1] = forced("forced-pin", {"ujson": "5.9.0"}, label="a", reverts=True)
    assert attribute.forced_joint(diff, "fastapi", done) is None
    assert attribute.forced_joint(FA_DIFF, "fastapi", done) is None  # one package: no joint


def test_a_forced_joint_bringing_the_label_back_is_dependencies_with_the_range_overridden():
    diff = {**FA_DIFF, "anyio": ["3.7.1", "4.2.0"]}
    runs = [exp("control", label="b"), exp("pin", {"anyio": "3.7.1"}, label="b"),
            exp("pin", {"starlette": "0.19.1"}, state="install-error"),
            exp("dependencies", {"anyio": "3.7.1", "starlette": "0.19.1"}, state="install-error"),
            forced("earlier-framework", {"fastapi": "0.84.0"}),
            forced("forced-pin", {"starlette": "0.19.1"}),
            forced("forced-dependencies", {"anyio": "3.7.1", "starlette": "0.19.1"}, label="a",
                   verdict="deviates", reverts=True)]
    cause = attribute.decide(fa_flip(), diff, runs)
    assert cause["kind"] == "dependencies" and cause["packages"] == ["anyio", "starlette"]
    assert cause["overrides_declared_range"] is True


def test_an_experiment_in_a_copy_of_the_later_environment_installs_it_exactly_without_deps():
    cell = {"id": "fa-0.85.0_st-0.20.4_py3.8", "fastapi": "0.85.0", "starlette": "0.20.4"}
    env = {"FastAPI": "0.85.0", "starlette": "0.20.4", "anyio": "3.6.1", "orjson": "3.8.0"}
    swap = attribute.Experiment("earlier-framework", cell, {"fastapi": "0.84.0"}, environment=env)
    assert swap.install() == ["--no-deps", "anyio==3.6.1", "fastapi==0.84.0", "orjson==3.8.0",
                              "starlette==0.20.4"]
    gone = attribute.Experiment("removal", cell, {}, environment=env, removed=("orjson",))
    assert gone.install() == ["--no-deps", "anyio==3.6.1", "fastapi==0.85.0", "starlette==0.20.4"]
    assert gone.slug == "removal-no-orjson-fa-0.85.0_st-0.20.4_py3.8"


def test_a_failure_message_names_no_private_folder():
    failed = {"state": "import-error", "message": "Traceback\n.bgmatrix/envs/fa-0.91.0_st-0.24.0"
              "_py3.8.5_lx7mtv/env/lib/python3.8/site-packages/fastapi/applications.py:153: "
              "AttributeError"}
    record = attribute.experiment_record("forced-pin", {"starlette": "0.22.0"}, None, failed,
                                         "MW-1", side("a", "0.90.1", "x"), {})
    assert record["message"] == ("<cell-env>/lib/python3.8/site-packages/fastapi/"
                                 "applications.py:153: AttributeError")
    assert record["no_deps"] is True


def test_undetermined_selects_flips_without_a_cause_that_still_describe_the_same_flip():
    flip = mw3_flip()
    entry = {**attribute.base_entry(flip, ANYIO_DIFF), "experiments": [],
             "cause": {"kind": "framework", "note": "n"}}
    assert attribute.reuses({"flips": [entry]}, flip, ANYIO_DIFF)
    entry["cause"] = {"kind": "undetermined", "note": "n"}
    assert not attribute.reuses({"flips": [entry]}, flip, ANYIO_DIFF)
    assert not attribute.reuses({"flips": []}, flip, ANYIO_DIFF)


# --------------------------------------------------------------------------- measuring


def fake_runner(label_of, calls, refuse=()):
    """A cell runner that reads MW-3 off the environment it builds: ``label_of(packages)``.
    An ordinary install resolves (the cell's pair plus anyio and idna, the pins honoured) and
    fails for a requirement in ``refuse``; a ``--no-deps`` install is exactly what it names."""

    def run(cell, install):
        calls.append((cell["id"], cell.get("cutoff"), tuple(install)))
        today = cell.get("cutoff") is None
        if install[:1] == ["--no-deps"]:
            packages = dict(r.split("==") for r in install[1:])
        else:
            packages = {"anyio": "4.5.2" if today else "4.0.0", "idna": "3.4",
                        **dict(r.split("==") for r in install)}
        from tests.unit.test_results import sample

        data = sample(cell["id"])
        data["cell"].update(kind=cell.get("kind", "starlette"), fastapi=cell.get("fastapi"),
                            starlette=cell["starlette"], python=cell["python"],
                            cutoff=cell.get("cutoff"))
        refused = [r for r in install if r in refuse and install[:1] != ["--no-deps"]]
        if refused:
            from bgmatrix.run import runner

            return runner.result_for(data["cell"], "install-error",
                                     f"because you require {refused[0]}, we can conclude "
                                     "that your requirements are unsatisfiable.",
                                     data["provenance"])
        label = label_of(packages)
        verdict = "deviates" if label == "swallowed" else "conforms"
        data["provenance"]["packages"] = packages
        data["clauses"] = {"MW-3": {"verdict": verdict, "label": label, "tests": []}}
        return data

    return run


def by_anyio(packages):
    """MW-3 as at the Starlette 0.32.0 boundary: it follows anyio, whatever Starlette is."""
    return "swallowed" if packages.get("anyio") == "3.7.1" else "propagated"


def boundary():
    before = stored("st-0.31.1_py3.8", starlette="0.31.1",
                    packages={"starlette": "0.31.1", "anyio": "3.7.1", "idna": "3.4"},
                    clauses={"MW-3": ["deviates", "swallowed"]})
    after = stored("st-0.32.0_py3.8", starlette="0.32.0",
                   packages={"starlette": "0.32.0", "anyio": "4.0.0", "idna": "3.4"},
                   clauses={"MW-3": ["conforms", "propagated"]})
    return {"st-0.31.1_py3.8": before, "st-0.32.0_py3.8": after}


def test_measuring_a_pair_runs_control_pins_and_today_and_writes_only_to_scratch(tmp_path):
    found = boundary()
    flips, _ = attribute.find_flips(found, {})
    calls: list = []
    entries = attribute.measure_pair(flips, found["st-0.31.1_py3.8"], found["st-0.32.0_py3.8"],
                                     run=fake_runner(by_anyio, calls), jobs=1,
                                     scratch=tmp_path / "scratch", log=lambda line: None)
    entry = entries[flips[0].key]
    assert entry["cause"]["kind"] == "dependency" and entry["cause"]["package"] == "anyio"
    assert [(e["name"], e["pins"], e["reverts"]) for e in entry["experiments"]] == [
        ("control", {}, False), ("pin", {"anyio": "3.7.1"}, True),
        ("earlier-framework", {"starlette": "0.31.1"}, False)]
    # the earlier Starlette in an exact copy of the later environment, no resolution
    assert ("st-0.32.0_py3.8", "2023-01-01T00:00:00Z",
            ("--no-deps", "anyio==4.0.0", "idna==3.4", "starlette==0.31.1")) in calls
    # today's environment: both releases without the cutoff (the newest anyio they allow)
    assert entry["today"]["from"]["packages"] == {"anyio": "4.5.2"}
    assert entry["today"]["from"]["label"] == "propagated"
    assert sorted(c[1] is None for c in calls) == [False, False, False, True, True]
    assert ("st-0.32.0_py3.8", "2023-01-01T00:00:00Z",
            ("starlette==0.32.0", "anyio==3.7.1")) in calls
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("st-*.json"))
    assert written and all(p.parts[0] == "scratch" for p in written)
    # the file: valid, sorted, and the same bytes for the same behaviour
    doc = attribute.document(flips, {flips[0].key: ANYIO_LIKE(found)}, entries, None, "s1")
    path = tmp_path / "attribution.json"
    assert attribute.write(doc, path) is True
    assert attribute.write(attribute.document(flips, {flips[0].key: ANYIO_LIKE(found)}, entries,
                                              attribute.load(path), "s1"), path) is False
    assert json.loads(path.read_text())["flips"][0]["cause"]["package"] == "anyio"


def test_measuring_a_fastapi_pair_forces_the_refused_starlette_into_the_later_environment(
        tmp_path):
    """MW-3 follows Starlette here; the ordinary pin is refused, so the earlier FastAPI in the
    later environment and the earlier Starlette forced into it (--no-deps) decide."""
    def cell(fa, st_version):
        return stored(f"fa-{fa}_st-{st_version}_py3.8", kind="fastapi", fastapi=fa,
                      starlette=st_version,
                      packages={"fastapi": fa, "starlette": st_version, "anyio": "4.0.0",
                                "idna": "3.4"},
                      clauses={"MW-3": ["deviates" if st_version == "0.19.1" else "conforms",
                                        "swallowed" if st_version == "0.19.1" else "propagated"]})

    found = {r["cell"]["id"]: r for r in (cell("0.84.0", "0.19.1"), cell("0.85.0", "0.20.4"))}
    flips, _ = attribute.find_flips(found, {})
    calls: list = []

    def by_starlette(packages):
        return "swallowed" if packages["starlette"] == "0.19.1" else "propagated"

    a, b = found.values()
    entries = attribute.measure_pair(flips, a, b, jobs=1, scratch=tmp_path, today=False,
                                     run=fake_runner(by_starlette, calls,
                                                     refuse=("starlette==0.19.1",)),
                                     log=lambda line: None)
    entry = entries[flips[0].key]
    assert [(e["name"], e["state"], e["reverts"]) for e in entry["experiments"]] == [
        ("control", "ok", False), ("pin", "install-error", False),
        ("earlier-framework", "ok", False), ("forced-pin", "ok", True)]
    assert entry["cause"]["kind"] == "dependency" and entry["cause"]["package"] == "starlette"
    assert entry["cause"]["overrides_declared_range"] is True
    assert ("fa-0.85.0_st-0.20.4_py3.8", "2023-01-01T00:00:00Z",
            ("--no-deps", "anyio==4.0.0", "fastapi==0.85.0", "idna==3.4", "starlette==0.19.1")
            ) in calls
    assert all(e["also_changed"] == {} for e in entry["experiments"])
    doc = attribute.document(flips, {flips[0].key: entry["differing"]}, entries, None, "s1")
    assert attribute.write(doc, tmp_path / "attribution.json") is True  # valid by the schema


def ANYIO_LIKE(found):  # noqa: N802 - reads as the diff it is
    return attribute.package_diff(found["st-0.31.1_py3.8"]["provenance"]["packages"],
                                  found["st-0.32.0_py3.8"]["provenance"]["packages"])


def test_an_unmeasured_run_keeps_entries_that_still_describe_the_same_flip(tmp_path):
    found = boundary()
    flips, _ = attribute.find_flips(found, {})
    diffs = {flips[0].key: ANYIO_LIKE(found)}
    measured = {flips[0].key: {**attribute.base_entry(flips[0], diffs[flips[0].key]),
                               "experiments": [exp("control")],
                               "cause": {"kind": "framework", "package": "starlette",
                                         "versions": ["0.31.1", "0.32.0"], "note": "n"}}}
    first = attribute.document(flips, diffs, measured, None, "s1")
    assert attribute.document(flips, diffs, {}, first, "s1") == first
    # the later release's label changed since: the old attribution no longer applies
    found["st-0.32.0_py3.8"]["clauses"]["MW-3"] = ["conforms", "propagated+logged"]
    flips, _ = attribute.find_flips(found, {})
    again = attribute.document(flips, diffs, {}, first, "s1")
    assert again["flips"][0]["cause"]["kind"] == "unmeasured"


def test_measured_entries_name_the_framework_files_that_changed(monkeypatch):
    asked = []

    def changed_files(package, old, new):
        asked.append((package, old, new))
        return {"package": package, "versions": [old, new], "total": 1,
                "files": ["starlette/responses.py"]}

    monkeypatch.setattr(attribute, "changed_files", changed_files)
    entries = {("a", "b", "MW-1"): {"line": "starlette", "differing": ANYIO_DIFF},
               ("a", "b", "MW-3"): {"line": "starlette", "differing": ANYIO_DIFF},
               ("c", "d", "MW-3"): {"line": "starlette", "differing": {"anyio": ["1", "2"]}}}
    attribute.add_framework_files(entries, log=lambda line: None)
    assert asked == [("starlette", "0.31.1", "0.32.0")]  # once per pair of releases
    assert entries[("a", "b", "MW-3")]["framework_files"]["files"] == ["starlette/responses.py"]
    assert "framework_files" not in entries[("c", "d", "MW-3")]


@pytest.mark.live
def test_changed_files_compares_two_releases_of_the_framework(tmp_path):
    """Starlette's middleware/base.py is the same file in 0.31.1 and 0.32.0 (the review's
    finding), and differs in 0.46.0 (PR #2812)."""
    same = attribute.changed_files("starlette", "0.31.1", "0.32.0", tmp_path)
    assert same["total"] >= 1 and "starlette/middleware/base.py" not in same["files"]
    fixed = attribute.changed_files("starlette", "0.45.3", "0.46.0", tmp_path)
    assert "starlette/middleware/base.py" in fixed["files"]


def test_a_pin_of_starlette_in_a_fastapi_cell_replaces_its_starlette_requirement():
    cell = {"id": "fa-0.90.1_st-0.23.1_py3.8", "fastapi": "0.90.1", "starlette": "0.23.1"}
    assert attribute.Experiment("pin", cell, {"starlette": "0.23.0"}).install() == [
        "fastapi==0.90.1", "starlette==0.23.0"]
    assert attribute.Experiment("control", cell, {}).install() == [
        "fastapi==0.90.1", "starlette==0.23.1"]


def test_a_joint_pin_of_many_packages_has_a_short_folder_name():
    pins = {f"package-number-{i}": f"{i}.0.0" for i in range(30)}
    slug = attribute.Experiment("dependencies", {"id": "fa-0.111.1_st-0.37.2_py3.8"}, pins).slug
    assert len(slug) < 120 and slug.startswith("dependencies-30-pins-")


# --------------------------------------------------------------------------- errors


def test_an_unknown_clause_is_one_line_and_exit_2(capsys):
    assert cli.main(["attribute", "--clause", "MW-99", "--list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bgmatrix attribute: unknown clause 'MW-99'; clause IDs look like MW-3 "
                   "(see spec/)"]


@pytest.mark.parametrize("argv", [["--line", "django"], ["--limit", "-1"], ["--limit", "x"]])
def test_bad_options_are_one_line_and_exit_2(argv, capsys):
    assert cli.main(["attribute", *argv, "--list"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", ["{not json", '{"format": 1, "flips": "x"}'])
def test_a_corrupt_attribution_file_is_one_line_and_exit_2(tmp_path, content, capsys):
    out = tmp_path / "attribution.json"
    out.write_text(content)
    folder = tmp_path / "results"
    folder.mkdir()
    assert cli.main(["attribute", "--results", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0]
    assert out.read_text() == content  # nothing written over it
    with pytest.raises(ReportError, match="attribution.json"):
        site_attribution.clause_section("MW-3", path=out)


def test_the_clause_page_table_names_each_flip_and_its_cause(tmp_path):
    found = boundary()
    flips, _ = attribute.find_flips(found, {})
    diffs = {flips[0].key: ANYIO_LIKE(found)}
    entry = {**attribute.base_entry(flips[0], diffs[flips[0].key]),
             "experiments": [exp("control"),
                             exp("pin", {"anyio": "3.7.1"}, "swallowed", "deviates",
                                 reverts=True)],
             "cause": attribute.decide(flips[0], diffs[flips[0].key],
                                       [exp("control"), exp("pin", {"anyio": "3.7.1"},
                                                            "swallowed", "deviates",
                                                            reverts=True)])}
    path = tmp_path / "attribution.json"
    attribute.write(attribute.document(flips, diffs, {flips[0].key: entry}, None, "s1"), path)
    lines = "\n".join(site_attribution.clause_section("MW-3", path=path))
    assert "## Why the label changes" in lines
    assert "0.31.1</a> → <a" in lines and "a dependency: anyio 3.7.1 → 4.0.0" in lines
    assert "files changed" not in lines  # none recorded for this entry
    assert site_attribution.clause_section("MW-1", path=path) == []
    assert site_attribution.clause_section("MW-3", path=tmp_path / "none.json") == []


def test_the_matrix_export_carries_each_flip_and_its_cause(tmp_path, monkeypatch):
    import jsonschema

    from bgmatrix.site import exports

    found = boundary()
    flips, _ = attribute.find_flips(found, {})
    diffs = {flips[0].key: ANYIO_LIKE(found)}
    path = tmp_path / "attribution.json"
    attribute.write(attribute.document(flips, diffs, {}, None, "s1"), path)
    monkeypatch.setattr(site_attribution, "ATTRIBUTION_PATH", path)
    export = {"schema_version": 2, "snapshot": "x", "spec_version": "0.2.1", "clauses": [],
              "cells": [], **exports.flips()}
    assert export["flips"] == [{
        "clause": "MW-3", "line": "starlette", "series": "starlette",
        "from_cell": "st-0.31.1_py3.8", "to_cell": "st-0.32.0_py3.8", "from": "0.31.1",
        "to": "0.32.0", "cause": "unmeasured", "cause_text": "not attributed yet",
        "note": "not attributed yet: `bgmatrix attribute --clause MW-3 --line starlette` runs "
                "the experiments"}]
    schema = json.loads(exports.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validate(export, schema)
    monkeypatch.setattr(site_attribution, "ATTRIBUTION_PATH", tmp_path / "none.json")
    assert exports.flips() == {}


# --------------------------------------------------------------------------- a real experiment


@pytest.mark.live
def test_the_starlette_0_32_0_boundary_follows_anyio_for_real(tmp_path):
    """Starlette 0.31.1 and 0.32.0 as of their cutoffs, and 0.32.0 with anyio pinned to 0.31.1's
    anyio: every clause whose label differs between the two releases reads as in 0.31.1 again
    with the pin (the flip follows anyio, not Starlette), and the pin changes nothing else."""
    from bgmatrix.plan import store
    from bgmatrix.run import runner

    cells = {c["id"]: c for c in store.load_cells()}
    before, after = cells["st-0.31.1_py3.8"], cells["st-0.32.0_py3.8"]
    a = runner.run_cell(before, install=runner.requirements(before), wire_mode=False)
    b = runner.run_cell(after, install=runner.requirements(after), wire_mode=False)
    assert a["state"] == b["state"] == "ok"
    old = a["provenance"]["packages"]["anyio"]
    assert (old, b["provenance"]["packages"]["anyio"]) == ("3.7.1", "4.0.0")
    pinned = runner.run_cell(after, install=runner.requirements(after) + [f"anyio=={old}"],
                             wire_mode=False)
    assert pinned["provenance"]["packages"]["starlette"] == "0.32.0"

    def outcomes(r):
        return {c: (e["verdict"], e["label"]) for c, e in results.clause_entries(r).items()}

    flipped = {c for c in outcomes(a) if outcomes(a)[c] != outcomes(b)[c]}
    print(f"clauses that flip at 0.31.1 -> 0.32.0: {sorted(flipped) or 'none'}")
    for clause in sorted(flipped):
        print(f"  {clause}: 0.31.1 {outcomes(a)[clause]}\n    0.32.0 {outcomes(b)[clause]}\n"
              f"    0.32.0 + anyio=={old} {outcomes(pinned)[clause]}")
    assert flipped, "no clause flips at this boundary: nothing to attribute"
    assert outcomes(pinned) == outcomes(a)  # every flip comes back with anyio 3.7.1


def test_a_release_line_never_credits_the_framework_for_a_dependency(monkeypatch):
    """Issue 13: where attribution traced a flip to a dependency, the release line and the
    timeline say so; a framework-caused flip reads as before."""
    from types import SimpleNamespace

    from bgmatrix.site import attribution as site_attribution
    from bgmatrix.site import cite

    def flip(release, cause):
        return {"clause": "MW-3", "line": "starlette", "to": {"version": release},
                "from": {"version": "x"}, "cause": cause}

    flips = [flip("0.32.0", {"kind": "dependency", "package": "anyio",
                             "versions": ["3.7.1", "4.0.0"], "note": ""}),
             flip("0.46.0", {"kind": "framework", "package": "starlette",
                             "versions": ["0.45.3", "0.46.0"], "note": ""}),
             flip("0.20.0", {"kind": "dependencies", "packages": ["orjson", "ujson"],
                             "note": ""})]
    monkeypatch.setattr(site_attribution, "load", lambda path=None: {"flips": flips})
    line = SimpleNamespace(clause_id="MW-3", kind="starlette")
    assert cite.cause_note(line, "0.32.0") == \
        " (the change follows anyio 3.7.1 → 4.0.0, not Starlette)"
    assert cite.cause_note(line, "0.46.0") == ""
    assert cite.cause_note(line, "0.20.0") == \
        " (the change follows orjson and ujson together, not Starlette)"
    assert cite.cause_note(SimpleNamespace(clause_id="MW-1", kind="starlette"), "0.32.0") == ""
    assert cite.cause_note(SimpleNamespace(clause_id="MW-3", kind="fastapi"), "0.32.0") == ""


def test_an_uncrossable_fastapi_flip_is_starlettes_when_the_starlette_line_reproduces_it():
    from bgmatrix.run import attribute

    entry = {"line": "fastapi", "clause": "MW-1", "differing": {
        "fastapi": ["0.90.1", "0.91.0"], "starlette": ["0.22.0", "0.24.0"]},
        "from": {"python": "3.8", "verdict": "deviates", "label": "schedule-dependent (x)"},
        "to": {"python": "3.8", "verdict": "deviates", "label": "before-body"},
        "cause": {"kind": "undetermined", "note": "neither crossing ran"}}

    def cell(version, verdict, label):
        return {"cell": {"id": f"st-{version}_py3.8"}, "state": "ok",
                "clauses": {"MW-1": [verdict, label]}}

    stored = {"st-0.22.0_py3.8": cell("0.22.0", "deviates", "schedule-dependent (x)"),
              "st-0.24.0_py3.8": cell("0.24.0", "deviates", "before-body")}
    cause = attribute.without_fastapi(entry, stored)
    assert cause["kind"] == "dependency" and cause["package"] == "starlette"
    assert cause["versions"] == ["0.22.0", "0.24.0"]
    assert cause["reproduced_by"] == ["st-0.22.0_py3.8", "st-0.24.0_py3.8"]
    assert "neither crossing ran" in cause["note"]
    # the Starlette line must read both labels exactly, on the same Python
    stored["st-0.24.0_py3.8"] = cell("0.24.0", "deviates", "after-body")
    assert attribute.without_fastapi(entry, stored) is None
    del stored["st-0.24.0_py3.8"]
    assert attribute.without_fastapi(entry, stored) is None
    # only for an undetermined FastAPI flip whose Starlette changed
    stored["st-0.24.0_py3.8"] = cell("0.24.0", "deviates", "before-body")
    assert attribute.without_fastapi({**entry, "cause": {"kind": "framework", "note": ""}},
                                     stored) is None
    assert attribute.without_fastapi({**entry, "differing": {"fastapi": ["a", "b"]}},
                                     stored) is None
