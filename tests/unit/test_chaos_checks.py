"""The chaos tests' checks (tests/chaos.py) count what they claim to count."""

from __future__ import annotations

from typing import Any

from tests.chaos import sent_per_zone, tally_alerts, totals, window_readings


def alert(seq: int, status: str, level: str, zone: str = "z", start: int = 1,
          **extra: Any) -> dict[str, Any]:
    return {"alert_id": f"{zone}:{start}:abc", "zone_id": zone, "seq": seq, "status": status,
            "level": level, "previous_level": "normal", "reason": "density",
            "ts": f"2026-02-16T13:00:0{seq}Z"} | extra


def test_a_clean_run_counts_nothing() -> None:
    run = [alert(1, "raised", "elevated"), alert(2, "escalated", "high")]
    assert totals(tally_alerts(run, run)) == totals({})


def test_redelivery_is_dropped_by_dedup_but_counted() -> None:
    a = alert(1, "raised", "elevated")
    t = tally_alerts([a, dict(a)], [a])["z"]
    assert (t.redelivered, t.duplicated, t.lost) == (1, 0, 0)


def test_a_transition_under_two_seqs_is_a_duplicate() -> None:
    first = alert(1, "raised", "elevated")
    again = alert(2, "raised", "elevated") | {"ts": first["ts"]}
    assert tally_alerts([first, again])["z"].duplicated == 1


def test_same_key_other_content_is_a_duplicate() -> None:
    a = alert(1, "raised", "elevated")
    assert tally_alerts([a, a | {"level": "high"}])["z"].duplicated == 1


def test_lost_unexpected_and_reordered_against_a_reference() -> None:
    ref = [alert(1, "raised", "elevated"), alert(2, "escalated", "high"),
           alert(3, "resolved", "normal")]
    got = [ref[1], ref[0], alert(4, "raised", "critical")]
    t = tally_alerts(got, ref)["z"]
    assert (t.lost, t.unexpected, t.reordered) == (1, 1, 1)


def test_windows_reconcile_readings_and_flag_conflicts() -> None:
    w = {"zone_id": "a", "window_end": "t1", "readings": 3}
    counted, conflicts = window_readings([w, dict(w), w | {"readings": 4},
                                          {"zone_id": "a", "window_end": "t2", "readings": 2}])
    assert counted == {"a": 5}
    assert conflicts == 1
    assert sent_per_zone({"nb-cam-west-1", "nb-cam-west-2", "st-cam-1-0"}) == {
        "naresuan-bridge": 2, "station-forecourt": 1}
