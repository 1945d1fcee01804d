"""The re-creation budget of machines that never become ready (issue 11 item 11)."""

from __future__ import annotations

import pytest

from controller.workspace import relaunch
from controller.workspace.relaunch import LaunchRecord, Policy, decide, parse

POLICY = Policy(limit=2, backoff_seconds=10.0, backoff_max_seconds=15.0)


def test_first_launches_go_at_once_and_are_not_failures() -> None:
    record = LaunchRecord()
    assert decide(record, ["m-0", "m-1"], 100.0, POLICY).create == ["m-0", "m-1"]
    record.launched("m-0")
    record.launched("m-1")
    assert record.failures == 0


def test_a_recreation_waits_out_a_doubling_backoff_then_stops_at_the_limit() -> None:
    record = LaunchRecord(launches={"m-0": 1}, reason="RegistrationTimeout: no node registered")
    first = decide(record, ["m-0"], 100.0, POLICY)
    assert first.create == [] and first.wait_seconds == 10.0 and record.noticed == 100.0
    assert decide(record, ["m-0"], 110.0, POLICY).create == ["m-0"]
    record.launched("m-0")
    assert record.failures == 1 and record.noticed is None
    assert decide(record, ["m-0"], 200.0, POLICY).wait_seconds == 15.0  # 20 s, capped
    assert decide(record, ["m-0"], 215.0, POLICY).create == ["m-0"]
    record.launched("m-0")
    stop = decide(record, ["m-0"], 1000.0, POLICY)
    assert stop.create == [] and stop.gave_up
    assert "RegistrationTimeout" in stop.gave_up and relaunch.ANNOTATION in stop.gave_up


def test_the_record_round_trips_and_resets_once_all_are_ready() -> None:
    record = LaunchRecord(launches={"m-0": 3}, reason="r", noticed=5.0)
    assert parse({relaunch.ANNOTATION: record.dump()}) == record
    assert record.reset(["m-0", "m-1"]) and record.failures == 0
    assert not record.reset(["m-0", "m-1"])


@pytest.mark.parametrize("raw", ["", "{", "[]", '"x"', '{"launches": {"a": "lots"}}', '{"launches": 3}',
                                 '{"launches": {"a": 1e999}}', '{"noticed": "soon"}', "null"])
def test_a_record_that_does_not_parse_is_no_record(raw: str) -> None:
    record = parse({relaunch.ANNOTATION: raw})
    assert record.failures == 0  # and no exception: a person may have written anything there
