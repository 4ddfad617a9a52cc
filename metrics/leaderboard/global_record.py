"""Global record over route records as Leaderboard 2.x computes it: score means and std devs, infractions per km, status."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from metrics.leaderboard.criteria import ROUND_DIGITS, ROUND_DIGITS_SCORE
from metrics.leaderboard.events import (
    FAILURE_SENSORS_INVALID,
    FAILURE_SIMULATION_CRASHED,
    INFRACTION_KEYS,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_PERFECT,
    InfractionType,
)

Record = Mapping[str, Any]
SCORE_KEYS: tuple[str, ...] = ("score_composed", "score_route", "score_penalty")
OUTSIDE_KEY = InfractionType.OUTSIDE_ROUTE_LANES_INFRACTION.key
MIN_KM_DRIVEN = 0.001

#: ``values`` / ``labels`` order of the results file: (label, where the value comes from).
VALUE_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("Avg. driving score", "scores_mean", "score_composed"),
    ("Avg. route completion", "scores_mean", "score_route"),
    ("Avg. infraction penalty", "scores_mean", "score_penalty"),
    ("Collisions with pedestrians", "infractions", "collisions_pedestrian"),
    ("Collisions with vehicles", "infractions", "collisions_vehicle"),
    ("Collisions with layout", "infractions", "collisions_layout"),
    ("Red lights infractions", "infractions", "red_light"),
    ("Stop sign infractions", "infractions", "stop_infraction"),
    ("Off-road infractions", "infractions", "outside_route_lanes"),
    ("Route deviations", "infractions", "route_dev"),
    ("Route timeouts", "infractions", "route_timeout"),
    ("Agent blocked", "infractions", "vehicle_blocked"),
    ("Yield emergency vehicles infractions", "infractions", "yield_emergency_vehicle_infractions"),
    ("Scenario timeouts", "infractions", "scenario_timeouts"),
    ("Min speed infractions", "infractions", "min_speed_infractions"),
)
LABELS: tuple[str, ...] = tuple(label for label, _, _ in VALUE_SOURCES)

ENTRY_STATUS_VALUES: tuple[str, ...] = ("Started", "Finished", "Rejected", "Crashed", "Invalid")
ELIGIBLE_VALUES: dict[str, bool] = {"Started": False, "Finished": True, "Rejected": False, "Crashed": False,
                                    "Invalid": False}


def outside_lanes_metres(message: str) -> float:
    """Metres parsed from an outside-route-lanes message: token 8, as the Leaderboard reads it."""
    try:
        return float(message.split(" ")[8])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not a Leaderboard outside-route-lanes message (token 8 is not metres): {message!r}") from exc


def infraction_amount(record: Record, key: str) -> int | float:
    """A route's contribution to ``infractions[key]``: a count, or km outside the route lanes (first message)."""
    messages = record["infractions"].get(key, [])
    if key == OUTSIDE_KEY:
        return outside_lanes_metres(messages[0]) / 1000 if messages else 0
    return len(messages)


def km_driven(records: Sequence[Record]) -> float:
    """Sum of route_length/1000 x score_route/100, at least 0.001 km (the Leaderboard's km rule)."""
    km = 0
    for record in records:
        km += record["meta"]["route_length"] / 1000 * record["scores"]["score_route"] / 100
    return max(km, MIN_KM_DRIVEN)


def global_status(records: Sequence[Record]) -> tuple[str, list[list[Any]]]:
    """Perfect > Completed > Failed, the worst route wins; also the failed routes as [route_id, index, status]."""
    status = STATUS_PERFECT
    exceptions: list[list[Any]] = []
    for record in records:
        route_result = STATUS_FAILED if STATUS_FAILED in record["status"] else record["status"]
        if route_result == STATUS_FAILED:
            exceptions.append([record["route_id"], record["index"], record["status"]])
            status = STATUS_FAILED
        elif status == STATUS_PERFECT and route_result != STATUS_PERFECT:
            status = route_result
    return status, exceptions


def build_global_record(records: Sequence[Record], total_routes: int) -> dict[str, Any]:
    """``_checkpoint.global_record`` from the route records, N = total routes planned.

    Means divide by N (routes not run count as 0). Std devs are sample std devs around the rounded
    means, summed over the records present and divided by N - 1 (0 for N = 1), rounded to 3 digits.
    Counts are divided by the km driven; outside_route_lanes stays in km.
    """
    if total_routes < 1:
        raise ValueError(f"total_routes must be >= 1, got {total_routes}")
    means: dict[str, Any] = {key: 0 for key in SCORE_KEYS}
    meta: dict[str, Any] = {"total_length": 0, "duration_game": 0, "duration_system": 0}
    for record in records:
        for key in SCORE_KEYS:
            means[key] += record["scores"][key] / total_routes  # accumulated per route, as the LB does
        meta["total_length"] += record["meta"]["route_length"]
        meta["duration_game"] += record["meta"]["duration_game"]
        meta["duration_system"] += record["meta"]["duration_system"]
    means = {key: round(value, ROUND_DIGITS_SCORE) for key, value in means.items()}
    status, exceptions = global_status(records)
    meta["exceptions"] = exceptions

    std_dev: dict[str, Any] = {key: 0 for key in SCORE_KEYS}
    if total_routes > 1:
        for record in records:
            for key in SCORE_KEYS:
                std_dev[key] += math.pow(record["scores"][key] - means[key], 2)
        std_dev = {key: round(math.sqrt(value / float(total_routes - 1)), ROUND_DIGITS)
                   for key, value in std_dev.items()}

    km = km_driven(records)
    infractions: dict[str, Any] = {key: 0 for key in INFRACTION_KEYS}
    for record in records:
        for key in INFRACTION_KEYS:
            infractions[key] += infraction_amount(record, key)
    for key in INFRACTION_KEYS:
        if key != OUTSIDE_KEY:  # already km, not a count
            infractions[key] /= km
        infractions[key] = round(infractions[key], ROUND_DIGITS)

    return {"index": -1, "route_id": -1, "status": status, "infractions": infractions,
            "scores_mean": means, "scores_std_dev": std_dev, "meta": meta}


def values_and_labels(global_record: Record) -> tuple[list[str], list[str]]:
    """The results file's 15 ``values`` (str() of the global numbers) and ``labels``, in matching order."""
    values = [str(global_record[section][key]) for _, section, key in VALUE_SOURCES]
    return values, list(LABELS)


def entry_status_for(records: Sequence[Record]) -> str:
    """Finished, or Crashed / Rejected when a route says so (the last such route wins, as in the LB loop)."""
    entry_status = "Finished"
    for record in records:
        if FAILURE_SIMULATION_CRASHED in record["status"]:
            entry_status = "Crashed"
        elif FAILURE_SENSORS_INVALID in record["status"]:
            entry_status = "Rejected"
    return entry_status


def bench2drive_summary(records: Sequence[Record], total_routes: int = 220) -> dict[str, float]:
    """Bench2Drive's Driving Score and Success Rate (both over the planned routes, in percent / fraction).

    Success: status Completed or Perfect and no infraction except min-speed ones.
    """
    score = sum(r["scores"]["score_composed"] for r in records) / total_routes
    successes = sum(
        1 for r in records
        if r["status"] in (STATUS_COMPLETED, STATUS_PERFECT)
        and all(not msgs for key, msgs in r["infractions"].items()
                if key != InfractionType.MIN_SPEED_INFRACTION.key)
    )
    return {"driving_score": score, "success_rate": successes / total_routes}
