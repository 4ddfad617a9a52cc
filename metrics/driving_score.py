"""CARLA Leaderboard driving score: route completion x infraction penalty, records and results JSON, as pure functions.

The Leaderboard 2.0 formula (branch ``master``, also Bench2Drive's) is the default; 2.1's additive
weights and 1.0's factors are options of ``infraction_penalty`` / ``build_route_record``. The
implementation lives in ``metrics/leaderboard/``; this module is the one place to import from.

Typical use::

    events = [collision_event("vehicle.tesla.model3", 201, (1.0, 2.0, 0.0)), red_light_event(971, (3, 4, 0))]
    record = build_route_record(0, route_id_for(0), route_length=250.0, route_completion=100.0, events=events,
                                completed=True)
    results = build_results([record], total_routes=1, sensors=["carla_camera"])
    write_results("simulation_results.json", results)
"""
from metrics.leaderboard.criteria import (
    BLOCKED_MAX_TIME_S,
    BLOCKED_MAX_TIME_S_BENCH2DRIVE,
    BLOCKED_MIN_SPEED_MPS,
    MIN_SPEED_CHECKPOINTS,
    ROUND_DIGITS,
    ROUND_DIGITS_SCORE,
    ROUTE_DEVIATION_MAX_M,
    is_route_completed,
    min_speed_checkpoint_value,
    route_completion_percent,
    route_length,
    route_timeout_lb2,
    route_timeout_lb10,
)
from metrics.leaderboard.events import (
    FAILURE_AGENT_CRASHED,
    FAILURE_AGENT_SETUP,
    FAILURE_BLOCKED,
    FAILURE_DEVIATED,
    FAILURE_MESSAGES,
    FAILURE_SENSORS_INVALID,
    FAILURE_SIMULATION_CRASHED,
    FAILURE_TICK_RUNTIME,
    FAILURE_TIMED_OUT,
    INFRACTION_KEYS,
    INFRACTION_KEYS_LB10,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_PERFECT,
    STATUS_STARTED,
    Event,
    InfractionType,
    classify_collision,
    collision_event,
    failed_status,
    min_speed_event,
    outside_route_lanes_event,
    red_light_event,
    route_deviation_event,
    route_timeout_event,
    scenario_timeout_event,
    stop_event,
    vehicle_blocked_event,
    yield_emergency_vehicle_event,
)
from metrics.leaderboard.global_record import (
    ELIGIBLE_VALUES,
    ENTRY_STATUS_VALUES,
    LABELS,
    bench2drive_summary,
    build_global_record,
    entry_status_for,
    global_status,
    infraction_amount,
    km_driven,
    outside_lanes_metres,
    values_and_labels,
)
from metrics.leaderboard.penalty import (
    PENALTY_FACTORS_LB10,
    PENALTY_FACTORS_LB20,
    PENALTY_PERC_LB20,
    PENALTY_WEIGHTS_LB21,
    ROUTE_ENDING,
    ScoringFormula,
    driving_score,
    event_factor,
    event_weight_lb21,
    infraction_penalty,
)
from metrics.leaderboard.results_io import (
    ResultsFileError,
    build_results,
    empty_results,
    read_results,
    resume_check,
    resume_index,
    upsert_record,
    validation_error,
    write_results,
)
from metrics.leaderboard.route_record import (
    RouteScores,
    build_route_record,
    failure_reason,
    infraction_messages,
    route_id_for,
    route_scores,
    route_status,
    started_route_record,
)

__all__ = [
    # criteria
    "BLOCKED_MAX_TIME_S", "BLOCKED_MAX_TIME_S_BENCH2DRIVE", "BLOCKED_MIN_SPEED_MPS", "MIN_SPEED_CHECKPOINTS",
    "ROUTE_DEVIATION_MAX_M", "ROUND_DIGITS", "ROUND_DIGITS_SCORE", "is_route_completed",
    "min_speed_checkpoint_value", "route_completion_percent", "route_length", "route_timeout_lb2",
    "route_timeout_lb10",
    # events
    "FAILURE_AGENT_CRASHED", "FAILURE_AGENT_SETUP", "FAILURE_BLOCKED", "FAILURE_DEVIATED", "FAILURE_MESSAGES",
    "FAILURE_SENSORS_INVALID", "FAILURE_SIMULATION_CRASHED", "FAILURE_TICK_RUNTIME", "FAILURE_TIMED_OUT",
    "INFRACTION_KEYS", "INFRACTION_KEYS_LB10", "STATUS_COMPLETED", "STATUS_FAILED", "STATUS_PERFECT",
    "STATUS_STARTED", "Event", "InfractionType", "classify_collision", "collision_event", "failed_status",
    "min_speed_event", "outside_route_lanes_event", "red_light_event", "route_deviation_event",
    "route_timeout_event", "scenario_timeout_event", "stop_event", "vehicle_blocked_event",
    "yield_emergency_vehicle_event",
    # global_record
    "ELIGIBLE_VALUES", "ENTRY_STATUS_VALUES", "LABELS", "bench2drive_summary", "build_global_record",
    "entry_status_for", "global_status", "infraction_amount", "km_driven", "outside_lanes_metres",
    "values_and_labels",
    # penalty
    "PENALTY_FACTORS_LB10", "PENALTY_FACTORS_LB20", "PENALTY_PERC_LB20", "PENALTY_WEIGHTS_LB21", "ROUTE_ENDING",
    "ScoringFormula", "driving_score", "event_factor", "event_weight_lb21", "infraction_penalty",
    # results_io
    "ResultsFileError", "build_results", "empty_results", "read_results", "resume_check", "resume_index", "upsert_record",
    "validation_error", "write_results",
    # route_record
    "RouteScores", "build_route_record", "failure_reason", "infraction_messages", "route_id_for", "route_scores",
    "route_status", "started_route_record",
]
