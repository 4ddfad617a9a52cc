"""Leaderboard 2.x traffic events: infraction types with their record keys, the criteria's messages, status strings."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class InfractionType(str, Enum):
    """One Leaderboard infraction (scenario_runner's TrafficEventType name); the value is its record key.

    Member order is the order of the keys in a Leaderboard 2.x route record's ``infractions``
    (``PENALTY_NAME_DICT`` order, then ``route_timeout``).
    """

    COLLISION_STATIC = "collisions_layout"
    COLLISION_PEDESTRIAN = "collisions_pedestrian"
    COLLISION_VEHICLE = "collisions_vehicle"
    TRAFFIC_LIGHT_INFRACTION = "red_light"
    STOP_INFRACTION = "stop_infraction"
    OUTSIDE_ROUTE_LANES_INFRACTION = "outside_route_lanes"
    MIN_SPEED_INFRACTION = "min_speed_infractions"
    YIELD_TO_EMERGENCY_VEHICLE = "yield_emergency_vehicle_infractions"
    SCENARIO_TIMEOUT = "scenario_timeouts"
    ROUTE_DEVIATION = "route_dev"
    VEHICLE_BLOCKED = "vehicle_blocked"
    ROUTE_TIMEOUT = "route_timeout"

    @property
    def key(self) -> str:
        """The key of this infraction in a record's ``infractions``."""
        return self.value


#: The 12 infraction keys of a 2.x record, in the Leaderboard's order.
INFRACTION_KEYS: tuple[str, ...] = tuple(t.value for t in InfractionType)
#: Leaderboard 1.0 records carry only these 9 keys (no min speed, yield, scenario timeouts).
INFRACTION_KEYS_LB10: tuple[str, ...] = (
    "collisions_pedestrian", "collisions_vehicle", "collisions_layout", "red_light", "stop_infraction",
    "outside_route_lanes", "route_dev", "route_timeout", "vehicle_blocked",
)

# Route statuses (record "status" and global "status").
STATUS_STARTED = "Started"
STATUS_PERFECT = "Perfect"
STATUS_COMPLETED = "Completed"
STATUS_FAILED = "Failed"

# Failure reasons the statistics manager appends as "Failed - <reason>".
FAILURE_TIMED_OUT = "Agent timed out"
FAILURE_DEVIATED = "Agent deviated from the route"
FAILURE_BLOCKED = "Agent got blocked"
FAILURE_SIMULATION_CRASHED = "Simulation crashed"
FAILURE_SENSORS_INVALID = "Agent's sensors were invalid"
FAILURE_AGENT_SETUP = "Agent couldn't be set up"
FAILURE_AGENT_CRASHED = "Agent crashed"
FAILURE_TICK_RUNTIME = "TickRuntime"  # Bench2Drive only: the 4000-tick cap per route

#: LB ``FAILURE_MESSAGES``: external failure -> (entry status it implies, status reason).
FAILURE_MESSAGES: dict[str, tuple[str, str]] = {
    "Simulation": ("Crashed", FAILURE_SIMULATION_CRASHED),
    "Sensors": ("Rejected", FAILURE_SENSORS_INVALID),
    "Agent_init": ("Started", FAILURE_AGENT_SETUP),
    "Agent_runtime": ("Started", FAILURE_AGENT_CRASHED),
}

ROUTE_TIMEOUT_MESSAGE = "Route timeout."


def failed_status(reason: str = "") -> str:
    """``"Failed"`` or ``"Failed - <reason>"`` as the Leaderboard writes it."""
    return f"{STATUS_FAILED} - {reason}" if reason else STATUS_FAILED


Location = tuple[float, float, float]


@dataclass(frozen=True)
class Event:
    """One traffic event raised by a criterion during a route.

    ``percentage`` is the event's ``get_dict()['percentage']``: for outside-route-lanes the share of
    the completed route driven outside the route lanes, for min speed the ego's mean speed as a
    percentage of the surrounding traffic's (one event per failing checkpoint). ``distance`` is the
    outside-route-lanes distance in metres. ``message`` is what the record stores; when empty the
    Leaderboard's message is built from the other fields (placeholder actor ids, location (0, 0, 0)
    when absent): prefer the factories below, which take the ids.
    """

    type: InfractionType
    message: str = ""
    percentage: float | None = None
    distance: float | None = None
    frame: int | None = None
    location: Location | None = None

    def __post_init__(self) -> None:
        kind = InfractionType(self.type)
        object.__setattr__(self, "type", kind)
        if kind in (InfractionType.OUTSIDE_ROUTE_LANES_INFRACTION, InfractionType.MIN_SPEED_INFRACTION) \
                and self.percentage is None:
            raise ValueError(f"{kind.name} event needs 'percentage' (it sets the penalty)")
        if kind is InfractionType.OUTSIDE_ROUTE_LANES_INFRACTION and self.distance is None and not self.message:
            raise ValueError("OUTSIDE_ROUTE_LANES_INFRACTION event needs 'distance' (metres) or a message carrying it")
        if not self.message:
            object.__setattr__(self, "message", _default_message(self))


def _at(location: Location | None) -> str:
    # Criteria print locations rounded to 3 digits with str(): "at (x=341.25, y=209.1, z=0.104)".
    x, y, z = (round(float(v), 3) for v in (location or (0.0, 0.0, 0.0)))
    return f"at (x={x}, y={y}, z={z})"


def _default_message(event: Event) -> str:
    kind = event.type
    if kind is InfractionType.OUTSIDE_ROUTE_LANES_INFRACTION:
        return (f"Agent went outside its route lanes for about {round(float(event.distance), 3)} meters "
                f"({round(float(event.percentage), 2)}% of the completed route)")
    if kind is InfractionType.MIN_SPEED_INFRACTION:
        return f"Average speed is {event.percentage}% of the surrounding traffic's one"
    fixed = {
        InfractionType.YIELD_TO_EMERGENCY_VEHICLE: "Agent failed to yield to an emergency vehicle",
        InfractionType.SCENARIO_TIMEOUT: "Agent timed out a scenario",
        InfractionType.ROUTE_TIMEOUT: ROUTE_TIMEOUT_MESSAGE,
    }
    if kind in fixed:
        return fixed[kind]
    prefix = {
        InfractionType.COLLISION_STATIC: "Agent collided against object with type=static and id=0",
        InfractionType.COLLISION_PEDESTRIAN: "Agent collided against object with type=walker and id=-1",
        InfractionType.COLLISION_VEHICLE: "Agent collided against object with type=vehicle and id=-1",
        InfractionType.TRAFFIC_LIGHT_INFRACTION: "Agent ran a red light -1",
        InfractionType.STOP_INFRACTION: "Agent ran a stop with id=-1",
        InfractionType.ROUTE_DEVIATION: "Agent deviated from the route",
        InfractionType.VEHICLE_BLOCKED: "Agent got blocked",
    }[kind]
    return f"{prefix} {_at(event.location)}"


# ---- Factories with the exact scenario_runner (leaderboard-2.x) messages -------------------------------------

def classify_collision(other_type_id: str) -> InfractionType | None:
    """CollisionTest's class of the other actor by ``type_id``; None when the Leaderboard ignores it."""
    if ("static" in other_type_id or "traffic" in other_type_id) and "sidewalk" not in other_type_id:
        return InfractionType.COLLISION_STATIC
    if "vehicle" in other_type_id:
        return InfractionType.COLLISION_VEHICLE
    if "walker" in other_type_id:
        return InfractionType.COLLISION_PEDESTRIAN
    return None


def collision_event(other_type_id: str, other_id: int, location: Location, frame: int | None = None) -> Event | None:
    """A collision event classified like CollisionTest; None for actors the Leaderboard ignores."""
    kind = classify_collision(other_type_id)
    if kind is None:
        return None
    message = f"Agent collided against object with type={other_type_id} and id={other_id} {_at(location)}"
    return Event(kind, message, frame=frame, location=tuple(location))


def red_light_event(light_id: int, light_location: Location, frame: int | None = None) -> Event:
    """RunningRedLightTest's event (the location is the traffic light's)."""
    return Event(InfractionType.TRAFFIC_LIGHT_INFRACTION, f"Agent ran a red light {light_id} {_at(light_location)}",
                 frame=frame, location=tuple(light_location))


def stop_event(stop_id: int, stop_location: Location, frame: int | None = None) -> Event:
    """RunningStopTest's event (the location is the stop sign's)."""
    return Event(InfractionType.STOP_INFRACTION, f"Agent ran a stop with id={stop_id} {_at(stop_location)}",
                 frame=frame, location=tuple(stop_location))


def outside_route_lanes_event(wrong_distance: float, travelled_distance: float, frame: int | None = None) -> Event:
    """OutsideRouteLanesTest's single event: metres outside the route lanes over metres travelled along the route."""
    if travelled_distance <= 0:
        raise ValueError(f"travelled_distance must be > 0 m, got {travelled_distance}")
    percentage = wrong_distance / travelled_distance * 100
    return Event(InfractionType.OUTSIDE_ROUTE_LANES_INFRACTION, percentage=percentage, distance=wrong_distance,
                 frame=frame)


def min_speed_event(checkpoint_value: float, frame: int | None = None) -> Event:
    """MinimumSpeedRouteTest's event for one failing checkpoint (value from ``min_speed_checkpoint_value``)."""
    return Event(InfractionType.MIN_SPEED_INFRACTION, percentage=checkpoint_value, frame=frame)


def yield_emergency_vehicle_event(frame: int | None = None) -> Event:
    """YieldToEmergencyVehicleTest's failure event."""
    return Event(InfractionType.YIELD_TO_EMERGENCY_VEHICLE, frame=frame)


def scenario_timeout_event(frame: int | None = None) -> Event:
    """ScenarioTimeoutTest's event (a blocking scenario's 240 s ran out)."""
    return Event(InfractionType.SCENARIO_TIMEOUT, frame=frame)


def route_deviation_event(location: Location, frame: int | None = None) -> Event:
    """InRouteTest's event; it ends the route."""
    return Event(InfractionType.ROUTE_DEVIATION, f"Agent deviated from the route {_at(location)}",
                 frame=frame, location=tuple(location))


def vehicle_blocked_event(location: Location, frame: int | None = None) -> Event:
    """ActorBlockedTest's event; it ends the route."""
    return Event(InfractionType.VEHICLE_BLOCKED, f"Agent got blocked {_at(location)}", frame=frame,
                 location=tuple(location))


def route_timeout_event(frame: int | None = None) -> Event:
    """The route timeout (not a criterion in the Leaderboard: its timeout node's flag); it ends the route."""
    return Event(InfractionType.ROUTE_TIMEOUT, ROUTE_TIMEOUT_MESSAGE, frame=frame)
