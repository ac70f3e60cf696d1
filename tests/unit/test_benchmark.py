"""scripts/benchmark.py --schedules: which spec tests run under the schedule set, read from the
suite's source; pytest's JUnit report split into parts that add up to the process; N counted
in the records; the derived one-process-per-schedule figure.  Nothing here is timed."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("bgmatrix_benchmark_script",
                                                  ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_script()
SET, SEND_YIELDS, OTHER = bench.SET, bench.SEND_YIELDS, bench.OTHER


def test_the_suites_schedule_tests_are_found():
    assert bench.schedule_tests() == {
        ("test_execution", "test_tasks_start_after_final_body"): SET,
        ("test_middleware", "test_base_http_delivers_body_before_tasks"): SET,
        ("test_middleware", "test_base_http_does_not_swallow_task_errors"): SET,
        ("test_middleware", "test_gzip_sends_last_chunk_before_tasks"): SET,
        ("test_middleware", "test_pure_asgi_middleware_preserves_order"): SET,
        ("test_lifecycle", "test_resource_outlives_tasks_by_default"): SEND_YIELDS,
        ("test_lifecycle", "test_function_scope_teardown_precedes_response"): SEND_YIELDS,
    }


def test_schedule_tests_follow_the_modules_own_helpers(tmp_path):
    (tmp_path / "test_some.py").write_text(textwrap.dedent("""
        import vocabulary, webapp
        from elsewhere import helper_elsewhere

        def loops(harness):
            for yields in vocabulary.SEND_YIELDS:
                pass
            return again()

        def again():
            return loops(None)  # recursion is followed once

        def test_direct(harness):
            for name, yields, task in webapp.schedules(harness):
                pass

        def test_through_a_helper(harness):
            loops(harness)

        def test_both(harness):
            loops(harness)
            list(webapp.schedules(harness))

        def test_plain(harness):
            helper_elsewhere()  # another module's function is not read
            for yields in (0, 1, 3):
                pass

        def not_a_test(harness):
            list(webapp.schedules(harness))
    """))
    (tmp_path / "helpers.py").write_text("import webapp\ndef test_x(h): webapp.schedules(h)\n")
    assert bench.schedule_tests(tmp_path) == {
        ("test_some", "test_direct"): SET,
        ("test_some", "test_through_a_helper"): SEND_YIELDS,
        ("test_some", "test_both"): SET,
    }


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="0" skipped="0" tests="4" time="4.000">
<testcase classname="test_middleware" name="test_gzip_sends_last_chunk_before_tasks[stream]"
          time="0.750"/>
<testcase classname="test_middleware" name="test_gzip_sends_last_chunk_before_tasks[response]"
          time="0.250"/>
<testcase classname="test_lifecycle" name="test_resource_outlives_tasks_by_default[sync]"
          time="0.125"/>
<testcase classname="test_isolation" name="test_many_requests" time="1.875"/>
</testsuite></testsuites>"""

CLASSIFIED = {
    ("test_middleware", "test_gzip_sends_last_chunk_before_tasks"): SET,
    ("test_lifecycle", "test_resource_outlives_tasks_by_default"): SEND_YIELDS,
}


def test_junit_times_read_the_session_and_each_case():
    session, cases = bench.junit_times(JUNIT)
    assert session == 4.0
    assert cases[0] == (("test_middleware", "test_gzip_sends_last_chunk_before_tasks"), 0.75)
    assert [seconds for _, seconds in cases] == [0.75, 0.25, 0.125, 1.875]
    bare = JUNIT.replace("<testsuites>", "").replace("</testsuites>", "")
    assert bench.junit_times(bare) == (session, cases)
    with pytest.raises(ValueError, match="testsuite"):
        bench.junit_times("<testsuites/>")


def test_the_split_adds_up_to_the_process():
    parts = bench.schedule_split(5.5, 0.5, JUNIT, CLASSIFIED)
    assert parts == {"start+exit": 1.5, "collection": 0.5, "between": 0.5,
                     SET: 1.0, SEND_YIELDS: 0.125, OTHER: 1.875}
    assert sum(parts.values()) == 5.5


def test_node_ids_and_junit_cases_name_the_same_test():
    assert bench.test_of("test_middleware.py::test_x[a-b]") == ("test_middleware", "test_x")
    assert bench.test_of("test_middleware", "test_x[a-b]") == ("test_middleware", "test_x")
    assert bench.test_of("test_middleware.Group", "test_x") == ("test_middleware", "test_x")


def test_n_is_the_most_schedules_a_test_observed():
    records = [
        {"test": "test_middleware.py::test_gzip_sends_last_chunk_before_tasks[stream]",
         "observations": {"schedules": {f"s{i}": {} for i in range(9)}}},
        {"test": "test_middleware.py::test_gzip_sends_last_chunk_before_tasks[response]",
         "observations": {}},  # n/a in this release: it ran no schedule
        {"test": "test_lifecycle.py::test_resource_outlives_tasks_by_default[sync]",
         "observations": {"schedules": {"send-yields-0": {}, "send-yields-1": {},
                                        "send-yields-3": {}}}},
        {"test": "test_isolation.py::test_many_requests", "observations": {"request": {}}},
    ]
    assert bench.schedule_counts(records, CLASSIFIED) == {SET: 9, SEND_YIELDS: 3}
    unread = [{"test": "test_isolation.py::test_many_requests",
               "observations": {"schedules": {"s0": {}}}}]
    with pytest.raises(ValueError, match="test_many_requests observed schedules"):
        bench.schedule_counts(unread, CLASSIFIED)


def test_the_alternative_charges_each_extra_process_its_overhead():
    assert bench.one_process_instead(10.0, 1.5, 9) == 22.0
    assert bench.one_process_instead(10.0, 1.5, 1) == 10.0
