"""Per-route record in the Leaderboard 2.x layout: scores, infraction messages, status rules and meta."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metrics.leaderboard.criteria import ROUND_DIGITS, ROUND_DIGITS_SCORE
from metrics.leaderboard.events import (
    FAILURE_BLOCKED,
    FAILURE_DEVIATED,
    FAILURE_TIMED_OUT,
    INFRACTION_KEYS,
    STATUS_COMPLETED,
    STATUS_PERFECT,
    STATUS_STARTED,
    Event,
    InfractionType,
    failed_status,
)
from metrics.leaderboard.penalty import ScoringFormula, driving_score, infraction_penalty


@dataclass(frozen=True)
class RouteScores:
    """A record's ``scores``, each rounded to 6 digits (composed from the unrounded penalty)."""

    score_route: float
    score_penalty: float
    score_composed: float

    def to_json(self) -> dict[str, float]:
        return {"score_route": self.score_route, "score_penalty": self.score_penalty,
                "score_composed": self.score_composed}


def route_id_for(route: int | str, repetition: int = 0) -> str:
    """The Leaderboard's route id, ``RouteScenario_<id>_rep<r>``."""
    return f"RouteScenario_{route}_rep{repetition}"


def route_scores(route_completion: float, events: Iterable[Event], *, completed: bool = False,
                 formula: ScoringFormula = ScoringFormula.LB20, min_speed_penalty: bool = True) -> RouteScores:
    """Scores of one route. ``completed`` = RouteCompletionTest succeeded, which sets the completion to 100."""
    score_route = 100 if completed else route_completion  # the criterion stores the int 100 on success
    penalty = infraction_penalty(events, formula, min_speed_penalty=min_speed_penalty)
    return RouteScores(round(score_route, ROUND_DIGITS_SCORE), round(penalty, ROUND_DIGITS_SCORE),
                       round(driving_score(score_route, penalty), ROUND_DIGITS_SCORE))


def failure_reason(events: Iterable[Event], external_failure: str = "") -> str:
    """The reason after "Failed - ", set as the Leaderboard sets it, the last one set winning.

    Order of setting: the external failure (crash, sensors, agent set-up/runtime), then the route
    timeout ("Agent timed out"), then each route-ending event in the given (criteria) order.
    """
    events = list(events)
    reason = external_failure
    if any(e.type is InfractionType.ROUTE_TIMEOUT for e in events):
        reason = FAILURE_TIMED_OUT
    for event in events:
        if event.type is InfractionType.ROUTE_DEVIATION:
            reason = FAILURE_DEVIATED
        elif event.type is InfractionType.VEHICLE_BLOCKED:
            reason = FAILURE_BLOCKED
    return reason


def route_status(score_route: float, num_infractions: int, reason: str = "") -> str:
    """Status rule: completion >= 100 -> Perfect (no infraction at all) or Completed; else Failed[ - reason]."""
    if score_route >= 100:
        return STATUS_COMPLETED if num_infractions > 0 else STATUS_PERFECT
    return failed_status(reason)


def infraction_messages(events: Iterable[Event]) -> dict[str, list[str]]:
    """The record's ``infractions``: every key present; the route-timeout message first, as the LB adds it first."""
    events = list(events)
    messages: dict[str, list[str]] = {key: [] for key in INFRACTION_KEYS}
    if any(e.type is InfractionType.ROUTE_TIMEOUT for e in events):
        # The LB records at most one route timeout, from its timeout node's flag.
        messages[InfractionType.ROUTE_TIMEOUT.key].append(
            next(e.message for e in events if e.type is InfractionType.ROUTE_TIMEOUT))
    for event in events:
        if event.type is not InfractionType.ROUTE_TIMEOUT:
            messages[event.type.key].append(event.message)
    return messages


def build_route_record(index: int, route_id: str, route_length: float, route_completion: float,
                       events: Iterable[Event] = (), *, completed: bool = False,
                       duration_game: float = -1, duration_system: float = -1, external_failure: str = "",
                       formula: ScoringFormula = ScoringFormula.LB20, min_speed_penalty: bool = True,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One finished route as the Leaderboard 2.x writes it into ``_checkpoint.records``.

    route_length: dense route length (m); route_completion: final RouteCompletionTest value (0-100);
    events: the criteria's events in criteria order; completed: the completion criterion succeeded
    (completion becomes 100); external_failure: a reason from ``FAILURE_MESSAGES`` (e.g. a crash).
    extra: keys some harnesses add (Bench2Drive: scenario_name, weather_id, save_name, town_name), put
    after ``route_id``. formula picks the penalty only: the record keeps the 2.x layout and rounding
    whatever the formula (LB 1.0 wrote 9 infraction keys, no num_infractions, unrounded scores).
    """
    events = list(events)
    scores = route_scores(route_completion, events, completed=completed, formula=formula,
                          min_speed_penalty=min_speed_penalty)
    infractions = infraction_messages(events)
    num_infractions = sum(len(v) for v in infractions.values())
    record: dict[str, Any] = {"index": index, "route_id": route_id}
    record.update(extra or {})
    record.update({
        "status": route_status(scores.score_route, num_infractions, failure_reason(events, external_failure)),
        "num_infractions": num_infractions,
        "infractions": infractions,
        "scores": scores.to_json(),
        "meta": {
            "route_length": round(route_length, ROUND_DIGITS),
            "duration_game": round(duration_game, ROUND_DIGITS),
            "duration_system": round(duration_system, ROUND_DIGITS),
        },
    })
    return record


def started_route_record(route_id: str, index: int = -1) -> dict[str, Any]:
    """The placeholder the Leaderboard creates before a route runs (status Started, zero scores).

    Index -1 means "in progress": such records are left out of the written file.
    """
    return {
        "index": index, "route_id": route_id, "status": STATUS_STARTED, "num_infractions": 0,
        "infractions": {key: [] for key in INFRACTION_KEYS},
        "scores": {"score_route": 0, "score_penalty": 0, "score_composed": 0},
        "meta": {"route_length": 0, "duration_game": 0, "duration_system": 0},
    }
