"""CARLA Leaderboard driving score: penalties per infraction, status rules, aggregation and the results JSON.

Reference numbers come from carla_eval.md §1.7 (the original LB 2.0 / 2.1 statistics code run on
synthetic events) and from the LB 2.x source formulas.
"""
from __future__ import annotations

import json
import math

import pytest

from metrics.driving_score import (
    INFRACTION_KEYS,
    LABELS,
    Event,
    InfractionType,
    ResultsFileError,
    ScoringFormula,
    bench2drive_summary,
    build_global_record,
    build_results,
    build_route_record,
    classify_collision,
    collision_event,
    infraction_penalty,
    is_route_completed,
    km_driven,
    min_speed_checkpoint_value,
    min_speed_event,
    outside_lanes_metres,
    outside_route_lanes_event,
    read_results,
    red_light_event,
    resume_check,
    resume_index,
    route_completion_percent,
    route_deviation_event,
    route_id_for,
    route_length,
    route_timeout_event,
    route_timeout_lb2,
    route_timeout_lb10,
    scenario_timeout_event,
    started_route_record,
    stop_event,
    upsert_record,
    vehicle_blocked_event,
    write_results,
    yield_emergency_vehicle_event,
)

T = InfractionType
LOC = (1.0, 2.0, 0.0)


def _completed(events, **kwargs):
    return build_route_record(0, route_id_for(0), 250.0, 100.0, events, completed=True, **kwargs)


# ---- one test per infraction type ------------------------------------------------------------------------

FIXED_FACTOR_EVENTS = {
    "collisions_pedestrian": (lambda: collision_event("walker.pedestrian.0001", 7, LOC), 0.5),
    "collisions_vehicle": (lambda: collision_event("vehicle.tesla.model3", 201, LOC), 0.6),
    "collisions_layout": (lambda: collision_event("static.prop.trafficcone01", 0, LOC), 0.65),
    "red_light": (lambda: red_light_event(971, LOC), 0.7),
    "stop_infraction": (lambda: stop_event(12, LOC), 0.8),
    "scenario_timeouts": (scenario_timeout_event, 0.7),
    "yield_emergency_vehicle_infractions": (yield_emergency_vehicle_event, 0.7),
}


@pytest.mark.parametrize("key", sorted(FIXED_FACTOR_EVENTS))
def test_fixed_factor_infraction_scales_driving_score(key):
    make, factor = FIXED_FACTOR_EVENTS[key]
    record = _completed([make()])
    assert record["infractions"][key] and record["num_infractions"] == 1
    assert record["scores"] == {"score_route": 100, "score_penalty": factor, "score_composed": 100 * factor}
    assert record["status"] == "Completed"
    # Two events of the same kind multiply (LB 2.0).
    assert _completed([make(), make()])["scores"]["score_penalty"] == round(factor * factor, 6)


def test_outside_route_lanes_factor_is_share_of_completed_route_outside():
    event = outside_route_lanes_event(wrong_distance=30.0, travelled_distance=120.0)
    assert event.percentage == 25.0
    assert event.message == "Agent went outside its route lanes for about 30.0 meters (25.0% of the completed route)"
    record = _completed([event])
    assert record["scores"]["score_penalty"] == 0.75 and record["scores"]["score_composed"] == 75.0
    assert outside_lanes_metres(record["infractions"]["outside_route_lanes"][0]) == 30.0


def test_min_speed_factor_per_failing_checkpoint_and_bench2drive_switch():
    assert min_speed_checkpoint_value(4.0, 5.0) == 80.0
    assert min_speed_checkpoint_value(4.0, None) == 100.0  # no background traffic
    events = [min_speed_event(80.0), min_speed_event(50.0)]
    record = _completed(events)
    assert record["scores"]["score_penalty"] == round((1 - 0.3 * 0.2) * (1 - 0.3 * 0.5), 6)
    assert record["infractions"]["min_speed_infractions"][0] == "Average speed is 80.0% of the surrounding traffic's one"
    # Bench2Drive sets the min-speed entry to 'unused': recorded, no penalty, but no longer Perfect.
    b2d = _completed(events, min_speed_penalty=False)
    assert b2d["scores"]["score_penalty"] == 1.0 and b2d["status"] == "Completed"


@pytest.mark.parametrize("event, status", [
    (route_deviation_event(LOC), "Failed - Agent deviated from the route"),
    (vehicle_blocked_event(LOC), "Failed - Agent got blocked"),
    (route_timeout_event(), "Failed - Agent timed out"),
])
def test_route_ending_infraction_has_no_factor_and_fails_the_route(event, status):
    record = build_route_record(3, route_id_for(3), 500.0, 42.5, [event])
    assert record["scores"] == {"score_route": 42.5, "score_penalty": 1.0, "score_composed": 42.5}
    assert record["status"] == status
    assert record["infractions"][event.type.key] == [event.message] and record["num_infractions"] == 1


def test_event_messages_match_scenario_runner():
    assert collision_event("vehicle.diamondback.century", 1123, (72.0491, 326.2789, 0.0012)).message == (
        "Agent collided against object with type=vehicle.diamondback.century and id=1123 at (x=72.049, y=326.279, z=0.001)")
    assert red_light_event(971, (341.25, 209.1, 0.104)).message == "Agent ran a red light 971 at (x=341.25, y=209.1, z=0.104)"
    assert vehicle_blocked_event((8.541, 326.009, 0.001)).message == "Agent got blocked at (x=8.541, y=326.009, z=0.001)"
    assert route_timeout_event().message == "Route timeout."
    with pytest.raises(ValueError, match="percentage"):
        Event(T.MIN_SPEED_INFRACTION)


def test_route_deviation_message_names_where_the_agent_left_the_route():
    event = route_deviation_event((154.3217, -20.5, 0.0449), frame=31)
    assert event.message == "Agent deviated from the route at (x=154.322, y=-20.5, z=0.045)"
    assert event.location == (154.3217, -20.5, 0.0449) and event.frame == 31


def test_collision_classification():
    assert classify_collision("static.prop.streetbarrier") is T.COLLISION_STATIC
    assert classify_collision("traffic.traffic_light") is T.COLLISION_STATIC
    assert classify_collision("vehicle.audi.a2") is T.COLLISION_VEHICLE
    assert classify_collision("walker.pedestrian.0003") is T.COLLISION_PEDESTRIAN
    assert classify_collision("static.sidewalk") is None and collision_event("sensor.camera", 3, LOC) is None


# ---- status rules and route completion ---------------------------------------------------------------------

def test_status_rules():
    assert _completed([])["status"] == "Perfect"
    assert _completed([red_light_event(1, LOC)])["status"] == "Completed"
    failed = build_route_record(0, "r", 100.0, 60.0, [])
    assert failed["status"] == "Failed"
    crashed = build_route_record(0, "r", 100.0, 60.0, [], external_failure="Simulation crashed")
    assert crashed["status"] == "Failed - Simulation crashed"
    # The reason set last wins: external, then route timeout, then route-ending events in criteria order.
    both = build_route_record(0, "r", 100.0, 60.0, [vehicle_blocked_event(LOC), route_timeout_event()],
                              external_failure="Agent crashed")
    assert both["status"] == "Failed - Agent got blocked"
    assert both["infractions"]["route_timeout"] == ["Route timeout."]
    assert build_route_record(0, "r", 100.0, 60.0, [route_timeout_event()],
                              external_failure="Agent crashed")["status"] == "Failed - Agent timed out"
    # Reaching the goal wins over any failure reason.
    assert build_route_record(0, "r", 100.0, 100.0, [], external_failure="Agent crashed")["status"] == "Perfect"


def test_route_completion_is_100_when_completed():
    assert route_completion_percent(248.7, 250.0) == 99.48
    assert is_route_completed(99.48, 4.0) and not is_route_completed(99.0, 4.0) and not is_route_completed(99.5, 10.0)
    record = build_route_record(0, "r", 250.0, 99.48, [], completed=True)
    assert record["scores"]["score_route"] == 100 and record["status"] == "Perfect"
    assert build_route_record(0, "r", 250.0, 99.48, [])["status"] == "Failed"


def test_route_length_and_timeouts():
    assert route_length([[0, 0], [3, 4], [3, 10]]) == 11.0
    # CARLA's locations are float32: 100000.3 is stored as 100000.296875, so this hop is 0.296875 m, not 0.3.
    assert route_length([[100000.0, 5.0, 0.0], [100000.3, 5.0, 0.0]]) == 0.296875
    assert route_timeout_lb2(1000.0, 10.0) == 300.0 + 1000.0
    assert route_timeout_lb10(1000.0) == 805


# ---- formulas: LB 2.1 vs 2.0 (and 1.0) on the same events ---------------------------------------------------

ROUTE0_EVENTS = [collision_event("vehicle.tesla.model3", 201, LOC), red_light_event(971, LOC),
                 outside_route_lanes_event(12.5, 250.0), min_speed_event(80.0)]
ROUTE1_EVENTS = [collision_event("walker.pedestrian.0001", 7, LOC), vehicle_blocked_event(LOC)]


def test_lb21_vs_lb20_penalty_on_same_events():
    assert infraction_penalty(ROUTE0_EVENTS) == pytest.approx(0.6 * 0.7 * 0.95 * (1 - 0.3 * 0.2))
    assert infraction_penalty(ROUTE0_EVENTS, ScoringFormula.LB21) == pytest.approx(0.95 / (1 + 0.7 + 0.4 + 0.08))
    assert infraction_penalty(ROUTE0_EVENTS, ScoringFormula.LB10) == pytest.approx(0.399)  # no min-speed term
    lb20, lb21 = (_completed(ROUTE0_EVENTS, formula=f) for f in (ScoringFormula.LB20, ScoringFormula.LB21))
    assert (lb20["scores"]["score_penalty"], lb20["scores"]["score_composed"]) == (0.37506, 37.506)
    assert (lb21["scores"]["score_penalty"], lb21["scores"]["score_composed"]) == (0.43578, 43.577982)
    assert lb20["status"] == lb21["status"] == "Completed" and lb20["num_infractions"] == 4
    two_ped = [collision_event("walker.x", 1, LOC), collision_event("walker.y", 2, (50.0, 0.0, 0.0))]
    assert infraction_penalty(two_ped) == 0.25
    assert infraction_penalty(two_ped, ScoringFormula.LB21) == pytest.approx(1 / 3)


# ---- global aggregation: the §1.7 worked example ------------------------------------------------------------

def _worked_example(formula):
    return [
        build_route_record(0, route_id_for(0), 250.0, 100.0, ROUTE0_EVENTS, completed=True, formula=formula),
        build_route_record(1, route_id_for(1), 1000.0, 40.0, ROUTE1_EVENTS, formula=formula),
    ]


@pytest.mark.parametrize("formula, mean, std", [
    (ScoringFormula.LB20, {"score_composed": 28.753, "score_route": 70.0, "score_penalty": 0.43753},
     {"score_composed": 12.379, "score_route": 42.426, "score_penalty": 0.088}),
    (ScoringFormula.LB21, {"score_composed": 31.788991, "score_route": 70.0, "score_penalty": 0.46789},
     {"score_composed": 16.672, "score_route": 42.426, "score_penalty": 0.045}),
])
def test_global_record_matches_worked_example(formula, mean, std):
    records = _worked_example(formula)
    route1 = records[1]
    assert (route1["scores"]["score_penalty"], route1["scores"]["score_composed"]) == (0.5, 20.0)
    assert route1["status"] == "Failed - Agent got blocked"
    glob = build_global_record(records, total_routes=2)
    assert glob["scores_mean"] == mean and glob["scores_std_dev"] == std
    assert km_driven(records) == pytest.approx(0.65)
    per_km = {key: 1.538 for key in ("collisions_pedestrian", "collisions_vehicle", "red_light",
                                     "min_speed_infractions", "vehicle_blocked")}
    per_km["outside_route_lanes"] = 0.013  # km, not divided by km driven
    assert glob["infractions"] == {key: per_km.get(key, 0.0) for key in INFRACTION_KEYS}
    assert glob["status"] == "Failed"
    assert glob["meta"] == {"total_length": 1250.0, "duration_game": -2, "duration_system": -2,
                            "exceptions": [["RouteScenario_1_rep0", 1, "Failed - Agent got blocked"]]}


def test_mean_divides_by_planned_routes_and_std_is_sample():
    records = _worked_example(ScoringFormula.LB20)
    glob = build_global_record(records, total_routes=4)  # two routes never ran: they count as 0
    assert glob["scores_mean"]["score_composed"] == round((37.506 + 20.0) / 4, 6)
    m = round((37.506 + 20.0) / 4, 6)  # the LB sums squares over the records present only, / (N - 1)
    assert glob["scores_std_dev"]["score_composed"] == round(math.sqrt(((37.506 - m) ** 2 + (20.0 - m) ** 2) / 3), 3)
    single = build_global_record(records[:1], total_routes=1)
    assert single["scores_std_dev"] == {"score_composed": 0, "score_route": 0, "score_penalty": 0}
    assert single["status"] == "Completed"
    assert build_global_record([_completed([])], 1)["status"] == "Perfect"


def test_km_driven_is_floored():
    record = build_route_record(0, "r", 800.0, 0.0, [collision_event("vehicle.a", 1, LOC)])
    assert km_driven([record]) == 0.001
    assert build_global_record([record], 1)["infractions"]["collisions_vehicle"] == 1000.0


# ---- results JSON -------------------------------------------------------------------------------------------

def test_results_json_layout():
    results = build_results(_worked_example(ScoringFormula.LB20), 2, sensors=["carla_camera", "carla_gnss"])
    assert list(results) == ["_checkpoint", "entry_status", "eligible", "sensors", "values", "labels"]
    assert list(results["_checkpoint"]) == ["global_record", "progress", "records"]
    assert results["_checkpoint"]["progress"] == [2, 2]
    assert (results["entry_status"], results["eligible"]) == ("Finished", True)
    record = results["_checkpoint"]["records"][0]
    assert list(record) == ["index", "route_id", "status", "num_infractions", "infractions", "scores", "meta"]
    assert list(record["infractions"]) == list(INFRACTION_KEYS) and len(INFRACTION_KEYS) == 12
    assert list(record["scores"]) == ["score_route", "score_penalty", "score_composed"]
    assert list(record["meta"]) == ["route_length", "duration_game", "duration_system"]
    glob = results["_checkpoint"]["global_record"]
    assert list(glob) == ["index", "route_id", "status", "infractions", "scores_mean", "scores_std_dev", "meta"]
    assert list(glob["meta"]) == ["total_length", "duration_game", "duration_system", "exceptions"]
    assert results["labels"] == list(LABELS) and len(LABELS) == 15
    assert results["values"] == ["28.753", "70.0", "0.43753", "1.538", "1.538", "0.0", "1.538", "0.0", "0.013",
                                 "0.0", "0.0", "1.538", "0.0", "0.0", "1.538"]


def test_entry_status_rules():
    crashed = build_route_record(1, route_id_for(1), 100.0, 10.0, [], external_failure="Simulation crashed")
    res = build_results([_completed([]), crashed], 3, sensors=["carla_camera"], progress=[2, 3])
    assert (res["entry_status"], res["eligible"]) == ("Crashed", False)  # crashed runs skip the progress check
    rejected = build_route_record(0, "r", 100.0, 0.0, [], external_failure="Agent's sensors were invalid")
    assert build_results([rejected], 1, sensors=["carla_camera"])["entry_status"] == "Rejected"
    assert build_results([_completed([])], 2, sensors=["carla_camera"])["entry_status"] == "Invalid"  # progress short
    assert build_results([_completed([])], 1)["entry_status"] == "Invalid"  # no sensors
    started = dict(started_route_record(route_id_for(0)), index=0)
    assert build_results([started], 1, sensors=["carla_camera"])["entry_status"] == "Invalid"
    # In-progress records (index -1) are left out of the file.
    res = build_results([_completed([]), started_route_record(route_id_for(1))], 2, sensors=["c"], progress=[1, 2])
    assert len(res["_checkpoint"]["records"]) == 1


def test_write_read_round_trip(tmp_path):
    results = build_results(_worked_example(ScoringFormula.LB21), 2, sensors=["carla_camera"])
    path = write_results(tmp_path / "out" / "simulation_results.json", results)
    assert read_results(path) == results
    assert path.read_text().startswith('{\n    "_checkpoint"')  # indent 4, LB key order
    assert [p.name for p in path.parent.iterdir()] == ["simulation_results.json"]  # no temporary left
    # Aggregating the records read back gives the same global record.
    again = read_results(path)
    assert build_global_record(again["_checkpoint"]["records"], 2) == results["_checkpoint"]["global_record"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResultsFileError, match="not valid JSON"):
        read_results(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"_checkpoint": {}}))
    with pytest.raises(ResultsFileError, match="missing keys"):
        read_results(tmp_path / "partial.json")


def test_resume_and_upsert():
    records = _worked_example(ScoringFormula.LB20)
    results = build_results(records[:1], 2, sensors=["c"], progress=[1, 2], validate=False)
    ids = [route_id_for(0), route_id_for(1)]
    assert resume_index(results, ids) == 1
    assert resume_index(results, ids[::-1]) == 0 and resume_index(results, ids + ["x"]) == 0
    assert resume_index(dict(results, entry_status="Crashed"), ids) == 0
    upsert_record(results, records[1])
    upsert_record(results, records[1])  # a re-run route overwrites its record
    assert [r["index"] for r in results["_checkpoint"]["records"]] == [0, 1]
    with pytest.raises(ValueError, match="gap"):
        upsert_record(results, dict(records[1], index=5))


def test_resume_check_is_the_leaderboards_rule_and_says_why_a_file_does_not_fit():
    """RouteIndexer.validate_and_resume: ids in run order with _rep<k>, progress [k, N], minus one after a crash."""
    ids = [route_id_for(route, rep) for route in (0, 1) for rep in (0, 1)]
    records = [started_route_record(route_id, index) for index, route_id in enumerate(ids[:2])]
    results = build_results(records, 4, sensors=["c"], progress=[2, 4], validate=False)
    results.update(entry_status="Started", eligible=False)
    assert resume_check(results, ids) == (2, "")
    assert resume_check(dict(results, entry_status="Crashed"), ids) == (1, "")
    assert resume_check(results, ids[:3]) == (0, "it plans 4 routes, this run 3")
    assert resume_check(results, [route_id_for(0, 0), route_id_for(1, 0), *ids[2:]]) == (
        0, "record 1 is 'RouteScenario_0_rep1' where this run has 'RouteScenario_1_rep0'")
    assert resume_check(dict(results, entry_status="Invalid"), ids) == (0, "its entry_status is Invalid")
    assert resume_check({"_checkpoint": {"progress": [2, 4]}}, ids) == (0, "it has no entry_status")
    assert resume_check(dict(results, _checkpoint={"records": []}), ids) == (0, "it has no _checkpoint.progress")
    # Progress ahead of the records (a file cut short): the Leaderboard continues one before the last record.
    short = dict(results, _checkpoint=dict(results["_checkpoint"], progress=[3, 4]))
    assert resume_check(short, ids) == (1, "")


def test_bench2drive_summary():
    ok_slow = _completed([min_speed_event(50.0)], min_speed_penalty=False)
    hit = _completed([collision_event("vehicle.a", 1, LOC)])
    summary = bench2drive_summary([ok_slow, hit], total_routes=4)
    assert summary == {"driving_score": (100.0 + 60.0) / 4, "success_rate": 0.25}


def test_all_lists_exactly_the_names_the_module_re_exports():
    import metrics.driving_score as module

    # MutantDict: the type mutmut's trampolines add to every module they rewrite (scripts/mutation.py).
    public = {name for name in vars(module) if not name.startswith("_")} - {"MutantDict"}
    assert len(module.__all__) == len(set(module.__all__))
    assert set(module.__all__) == public
