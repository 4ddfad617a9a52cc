"""Infraction penalty per route under the Leaderboard 1.0, 2.0 (default) and 2.1 formulas, and the driving score."""
from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from metrics.leaderboard.events import Event, InfractionType


class ScoringFormula(str, Enum):
    """Which Leaderboard computes the penalty. 2.0 = branch ``master`` / ``leaderboard-2.0`` (and Bench2Drive)."""

    LB10 = "1.0"
    LB20 = "2.0"
    LB21 = "2.1"


T = InfractionType

#: LB 2.0 ``PENALTY_VALUE_DICT``: one factor multiplied in per event.
PENALTY_FACTORS_LB20: dict[InfractionType, float] = {
    T.COLLISION_PEDESTRIAN: 0.5,
    T.COLLISION_VEHICLE: 0.6,
    T.COLLISION_STATIC: 0.65,
    T.TRAFFIC_LIGHT_INFRACTION: 0.7,
    T.STOP_INFRACTION: 0.8,
    T.SCENARIO_TIMEOUT: 0.7,
    T.YIELD_TO_EMERGENCY_VEHICLE: 0.7,
}
#: LB 1.0 factors (no scenario timeout, yield or min speed terms).
PENALTY_FACTORS_LB10: dict[InfractionType, float] = {
    T.COLLISION_PEDESTRIAN: 0.5,
    T.COLLISION_VEHICLE: 0.6,
    T.COLLISION_STATIC: 0.65,
    T.TRAFFIC_LIGHT_INFRACTION: 0.7,
    T.STOP_INFRACTION: 0.8,
}
#: LB 2.0 ``PENALTY_PERC_DICT``: [value, type]; 'increases' -> 1 - (1-v) p/100, 'decreases' -> 1 - (1-v)(1 - p/100).
PENALTY_PERC_LB20: dict[InfractionType, tuple[float, str]] = {
    T.OUTSIDE_ROUTE_LANES_INFRACTION: (0.0, "increases"),
    T.MIN_SPEED_INFRACTION: (0.7, "decreases"),
}
#: LB 2.1 additive weights; min speed weighs MIN_SPEED_WEIGHT_LB21 x (1 - p/100) per failing checkpoint.
PENALTY_WEIGHTS_LB21: dict[InfractionType, float] = {
    T.COLLISION_PEDESTRIAN: 1.0,
    T.COLLISION_VEHICLE: 0.7,
    T.COLLISION_STATIC: 0.6,
    T.TRAFFIC_LIGHT_INFRACTION: 0.4,
    T.STOP_INFRACTION: 0.25,
    T.SCENARIO_TIMEOUT: 0.4,
    T.YIELD_TO_EMERGENCY_VEHICLE: 0.4,
}
MIN_SPEED_WEIGHT_LB21 = 0.4

#: Events that end the route and carry no penalty term (they only cap route completion).
ROUTE_ENDING: frozenset[InfractionType] = frozenset({T.ROUTE_DEVIATION, T.VEHICLE_BLOCKED, T.ROUTE_TIMEOUT})


def _percentage(event: Event) -> float:
    return float(event.percentage)  # Event validates presence for the two percentage types


def _perc_factor(event: Event) -> float:
    value, kind = PENALTY_PERC_LB20[event.type]
    p = _percentage(event)
    if kind == "decreases":
        return 1 - (1 - value) * (1 - p / 100)
    return 1 - (1 - value) * p / 100


def event_factor(event: Event, formula: ScoringFormula = ScoringFormula.LB20, *, min_speed_penalty: bool = True) -> float:
    """The multiplicative factor of one event under LB 1.0 / 2.0 (1.0 when the event carries no penalty).

    ``min_speed_penalty=False`` is Bench2Drive's ``'unused'`` min-speed entry.
    """
    formula = ScoringFormula(formula)
    if formula is ScoringFormula.LB21:
        raise ValueError("LB 2.1 adds weights instead of multiplying factors: use event_weight_lb21")
    kind = event.type
    if kind is T.OUTSIDE_ROUTE_LANES_INFRACTION:
        return _perc_factor(event)
    if formula is ScoringFormula.LB10:
        return PENALTY_FACTORS_LB10.get(kind, 1.0)
    if kind is T.MIN_SPEED_INFRACTION:
        return _perc_factor(event) if min_speed_penalty else 1.0
    return PENALTY_FACTORS_LB20.get(kind, 1.0)


def event_weight_lb21(event: Event, *, min_speed_penalty: bool = True) -> float:
    """The additive LB 2.1 weight of one event (0 for outside lanes, which stays a factor, and route-ending events)."""
    if event.type is T.MIN_SPEED_INFRACTION:
        return MIN_SPEED_WEIGHT_LB21 * (1 - _percentage(event) / 100) if min_speed_penalty else 0.0
    return PENALTY_WEIGHTS_LB21.get(event.type, 0.0)


def infraction_penalty(events: Iterable[Event], formula: ScoringFormula = ScoringFormula.LB20, *,
                       min_speed_penalty: bool = True) -> float:
    """Unrounded ``score_penalty`` of a route's events, multiplied in event order as the Leaderboard does.

    LB 1.0/2.0: product of the per-event factors. LB 2.1: product of the outside-lanes factors divided
    by (1 + sum of the weights).
    """
    formula = ScoringFormula(formula)
    events = list(events)
    if formula is ScoringFormula.LB21:
        outside = 1.0
        weights = 0.0
        for event in events:
            if event.type is T.OUTSIDE_ROUTE_LANES_INFRACTION:
                outside *= _perc_factor(event)
            else:
                weights += event_weight_lb21(event, min_speed_penalty=min_speed_penalty)
        return outside / (1 + weights)
    penalty = 1.0
    for event in events:
        penalty *= event_factor(event, formula, min_speed_penalty=min_speed_penalty)
    return penalty


def driving_score(score_route: float, score_penalty: float) -> float:
    """``score_composed`` = max(route completion x penalty, 0), unrounded."""
    return max(score_route * score_penalty, 0.0)
