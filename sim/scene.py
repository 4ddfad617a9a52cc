"""The Scene value: a map, the ego's 10 Hz log, traffic, lights, route and driving command, and the time step."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim import limits
from sim.map import RoadMap
from sim.state import AgentTracks, AgentType, StateIndex, TrafficLightStatus

STEP_S = 0.1  # every log in w0sim is sampled at 10 Hz

DRIVING_COMMANDS = ("left", "straight", "right", "unknown")  # NAVSIM's one-hot order


class SceneValidationError(ValueError):
    """A scene breaks the scene invariants or a plausibility limit of `sim.limits`; names the field and the bound."""


@dataclass
class Scene:
    """One driving scene: everything needed to replay, simulate, render and score it.

    `ego_log` (T, 11) and `agents` (T, N) share the 10 Hz time axis; step `current_index` is the
    "current frame" an agent plans from (earlier steps are history). `light_status` (T, L) holds a
    `TrafficLightStatus` per light id; `driving_command` (T,) indexes DRIVING_COMMANDS. `route_points`
    (M, 3) x, y, z is the dense route an episode must complete where a route file defines it (a Leaderboard
    route, densified as the Leaderboard does); without it, the route is the `route` lanes' centerline.
    """

    token: str
    map: RoadMap
    ego_log: np.ndarray
    agents: AgentTracks
    route: list[str]
    current_index: int
    light_ids: list[str] = field(default_factory=list)
    light_status: np.ndarray | None = None
    driving_command: np.ndarray | None = None
    command_text: str = ""
    metadata: dict = field(default_factory=dict)
    route_points: np.ndarray | None = None

    def __post_init__(self) -> None:
        steps = np.shape(self.ego_log)[0] if np.ndim(self.ego_log) else 0
        if self.light_status is None:
            self.light_status = np.full((steps, len(self.light_ids)), TrafficLightStatus.UNKNOWN, np.int8)
        if self.driving_command is None:
            self.driving_command = np.full(steps, DRIVING_COMMANDS.index("unknown"), np.int8)
        validate_scene(self)

    @property
    def num_steps(self) -> int:
        return self.ego_log.shape[0]

    @property
    def initial_ego_state(self) -> np.ndarray:
        return self.ego_log[self.current_index]

    @property
    def family(self) -> str:
        return self.metadata.get("family", self.metadata.get("source", "unknown"))

    def light_status_at(self, step: int) -> dict[str, int]:
        return dict(zip(self.light_ids, self.light_status[step].tolist()))


# --- validation -------------------------------------------------------------------------------


def _fail(scene: Scene, message: str) -> None:
    raise SceneValidationError(f"scene {scene.token}: {message}")


def _require_array(scene: Scene, name: str, value, kinds: str, shape: tuple) -> np.ndarray:
    """`value` as an ndarray of one of the dtype kinds (numpy's 'b', 'i', 'u', 'f') and the shape (None: any size)."""
    if not isinstance(value, np.ndarray):
        _fail(scene, f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        expected = {"b": "bool", "i": "integer", "u": "integer", "f": "float"}
        _fail(scene, f"{name} has dtype {value.dtype}, expected {' or '.join(sorted({expected[k] for k in kinds}))}")
    if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        wanted = ", ".join("*" if want is None else str(want) for want in shape)
        _fail(scene, f"{name} has shape {value.shape}, expected ({wanted}{',' if len(shape) == 1 else ''})")
    return value


def _require_bounded(scene: Scene, name: str, values: np.ndarray, bound: float, unit: str) -> None:
    """Finite values with magnitude at most `bound`."""
    if not np.isfinite(values).all():
        where = np.argwhere(~np.isfinite(values))[0].tolist()
        _fail(scene, f"{name} holds non-finite values (NaN or inf), first at {where}")
    if values.size and np.abs(values).max() > bound:
        where = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
        _fail(scene, f"{name} holds {values[where]:.6g} {unit} at {list(map(int, where))}, beyond the bound "
                     f"+-{bound:g} {unit}")


def _require_codes(scene: Scene, name: str, values: np.ndarray, codes: range, meaning: str) -> None:
    if values.size and (values.min() < codes.start or values.max() >= codes.stop):
        bad = values[(values < codes.start) | (values >= codes.stop)][0]
        _fail(scene, f"{name} holds {int(bad)}, outside {codes.start}..{codes.stop - 1} ({meaning})")


def _distance_to_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) distance of points (N, 2) to the axis-aligned box (xmin, ymin, xmax, ymax); 0 inside."""
    dx = np.maximum(np.maximum(box[0] - points[:, 0], points[:, 0] - box[2]), 0.0)
    dy = np.maximum(np.maximum(box[1] - points[:, 1], points[:, 1] - box[3]), 0.0)
    return np.hypot(dx, dy)


def _require_near_map(scene: Scene, name: str, points: np.ndarray, box: np.ndarray, what: str) -> None:
    if len(points) == 0:
        return
    distance = _distance_to_box(points, box)
    worst = int(np.argmax(distance))
    if distance[worst] > limits.MAX_OFF_MAP_M:
        _fail(scene, f"{name} point ({points[worst, 0]:.6g}, {points[worst, 1]:.6g}) is {distance[worst]:.6g} m "
                     f"from the bounding box of the map's {what}, beyond the bound {limits.MAX_OFF_MAP_M:g} m")


def _map_boxes(road_map: RoadMap) -> tuple[np.ndarray, np.ndarray]:
    """(bounding box of the lanes, of the whole map: lanes, areas and stop signs), each (xmin, ymin, xmax, ymax)."""
    lane_points = np.concatenate([np.concatenate([lane.centerline, lane.left_boundary, lane.right_boundary])
                                  for lane in road_map.lanes]) if road_map.lanes else np.zeros((0, 2))
    other = [shapely.get_coordinates(a.polygon) for a in road_map.areas]
    other += [shapely.get_coordinates(sign.trigger) for sign in road_map.stop_signs]
    every = np.concatenate([lane_points, *other]) if other else lane_points

    def box(points: np.ndarray) -> np.ndarray:
        return np.concatenate([points.min(axis=0), points.max(axis=0)]) if len(points) else np.full(4, np.nan)

    return box(lane_points), box(every)


def validate_scene(scene: Scene) -> None:
    """Check a scene's invariants and plausibility limits (`sim.limits`); SceneValidationError naming the field.

    The one check of the Scene value: the constructor runs it, so scenes from files, NAVSIM logs, CARLA routes and
    the generator all pass it. Shapes and dtypes come first, then finiteness and absolute bounds, then relative
    positions (ego, agents and route near the map; the map no larger than MAX_SCENE_EXTENT_M).
    """
    if not isinstance(scene.token, str):
        _fail(scene, f"token must be a string, got {type(scene.token).__name__}")
    if not isinstance(scene.map, RoadMap):
        _fail(scene, f"map must be a RoadMap, got {type(scene.map).__name__}")
    if not isinstance(scene.agents, AgentTracks):
        _fail(scene, f"agents must be AgentTracks, got {type(scene.agents).__name__}")
    ego = _require_array(scene, "ego_log", scene.ego_log, "f", (None, len(StateIndex)))
    steps = ego.shape[0]
    if not 1 <= steps <= limits.MAX_STEPS:
        _fail(scene, f"ego_log has {steps} steps, expected 1..{limits.MAX_STEPS}")
    agents = scene.agents
    if agents.num_steps != steps:
        _fail(scene, f"agents have {agents.num_steps} steps, ego log {steps}")
    tracks = agents.num_tracks
    if tracks > limits.MAX_TRACKS or steps * tracks > limits.MAX_TRACK_SAMPLES:
        _fail(scene, f"{tracks} agents over {steps} steps, beyond the bounds {limits.MAX_TRACKS} agents and "
                     f"{limits.MAX_TRACK_SAMPLES} agent-steps")
    if isinstance(scene.current_index, (bool, np.bool_)) or not isinstance(scene.current_index, (int, np.integer)):
        _fail(scene, f"current_index must be an integer, got {scene.current_index!r}")
    if not 0 <= scene.current_index < steps:
        _fail(scene, f"current_index {scene.current_index} outside 0..{steps - 1}")
    light_ids = scene.light_ids
    if not all(isinstance(i, str) for i in light_ids) or len(set(light_ids)) != len(light_ids):
        _fail(scene, "light_ids must be distinct strings")
    lights = _require_array(scene, "light_status", scene.light_status, "iu", (steps, len(light_ids)))
    _require_codes(scene, "light_status", lights, range(len(TrafficLightStatus)),
                   ", ".join(f"{s.value} {s.name}" for s in TrafficLightStatus))
    command = _require_array(scene, "driving_command", scene.driving_command, "iu", (steps,))
    _require_codes(scene, "driving_command", command, range(len(DRIVING_COMMANDS)),
                   ", ".join(f"{i} {name}" for i, name in enumerate(DRIVING_COMMANDS)))
    for lane_id in scene.route:
        scene.map.lane(lane_id)
    if not scene.route:
        _fail(scene, "route names no lane")

    # Ego log: every column finite and plausible.
    _require_bounded(scene, "ego_log x / y", ego[:, StateIndex.X : StateIndex.Y + 1], limits.MAX_ABS_COORDINATE_M, "m")
    _require_bounded(scene, "ego_log heading", ego[:, StateIndex.HEADING], limits.MAX_ABS_HEADING_RAD, "rad")
    velocity = ego[:, StateIndex.VELOCITY_X : StateIndex.VELOCITY_Y + 1]
    _require_bounded(scene, "ego_log velocity", velocity, limits.MAX_SPEED_MPS, "m/s")
    _require_bounded(scene, "ego_log dynamics (acceleration, steering, yaw rate)",
                     ego[:, StateIndex.ACCELERATION_X :], limits.MAX_ABS_DYNAMICS, "(SI units)")
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    if speed.size and speed.max() > limits.MAX_SPEED_MPS:
        _fail(scene, f"ego_log speed {speed.max():.6g} m/s at step {int(np.argmax(speed))}, beyond the bound "
                     f"{limits.MAX_SPEED_MPS:g} m/s")

    # Agents: dtypes and shapes (AgentTracks checked that the shapes agree), then values.
    for name in ("x", "y", "heading", "vx", "vy"):
        _require_array(scene, f"agents.{name}", getattr(agents, name), "f", (steps, tracks))
    valid = _require_array(scene, "agents.valid", agents.valid, "b", (steps, tracks))
    for name in ("length", "width", "height"):
        size = _require_array(scene, f"agents.{name}", getattr(agents, name), "f", (tracks,))
        _require_bounded(scene, f"agents.{name}", size, limits.MAX_AGENT_SIZE_M, "m")
        if size.size and size.min() < 0:
            _fail(scene, f"agents.{name} holds {size.min():.6g} m, a negative size")
    types = _require_array(scene, "agents.agent_type", agents.agent_type, "iu", (tracks,))
    _require_codes(scene, "agents.agent_type", types, range(len(AgentType)),
                   ", ".join(f"{t.value} {t.name}" for t in AgentType))
    if len(agents.track_ids) != tracks or not all(isinstance(t, str) for t in agents.track_ids):
        _fail(scene, "agents.track_ids must be one string per agent")
    for name in ("x", "y"):
        _require_bounded(scene, f"agents.{name}", getattr(agents, name), limits.MAX_ABS_COORDINATE_M, "m")
    _require_bounded(scene, "agents.heading", agents.heading, limits.MAX_ABS_HEADING_RAD, "rad")
    for name in ("vx", "vy"):
        _require_bounded(scene, f"agents.{name}", getattr(agents, name), limits.MAX_SPEED_MPS, "m/s")
    agent_speed = np.where(valid, np.hypot(agents.vx, agents.vy), 0.0)
    if agent_speed.size and agent_speed.max() > limits.MAX_SPEED_MPS:
        step, track = np.unravel_index(int(np.argmax(agent_speed)), agent_speed.shape)
        _fail(scene, f"agent {agents.track_ids[track]!r} speed {agent_speed[step, track]:.6g} m/s at step {step}, "
                     f"beyond the bound {limits.MAX_SPEED_MPS:g} m/s")

    # Route points.
    route_points = scene.route_points
    if route_points is not None:
        route_points = _require_array(scene, "route_points", route_points, "f", (None, 3))
        if len(route_points) < 2:
            _fail(scene, f"route_points must be (M >= 2, 3), got {route_points.shape}")
        _require_bounded(scene, "route_points", route_points, limits.MAX_ABS_COORDINATE_M, "m")

    _validate_metadata(scene)

    # Relative positions: a map of plausible size, with the ego, the agents and the route on or near it.
    lane_box, map_box = _map_boxes(scene.map)
    extent = float(np.hypot(map_box[2] - map_box[0], map_box[3] - map_box[1]))
    if extent > limits.MAX_SCENE_EXTENT_M:
        _fail(scene, f"map {scene.map.name!r} spans {extent:.6g} m (bounding box diagonal of its lanes, areas and "
                     f"stop signs), beyond the bound {limits.MAX_SCENE_EXTENT_M:g} m")
    _require_near_map(scene, "ego_log", ego[:, :2], lane_box, "lanes")
    _require_near_map(scene, "agents (valid)", np.stack([agents.x[valid], agents.y[valid]], -1), map_box,
                      "lanes, areas and stop signs")
    if route_points is not None:
        _require_near_map(scene, "route_points", route_points[:, :2], map_box, "lanes, areas and stop signs")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_str_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _validate_metadata(scene: Scene) -> None:
    """The metadata entries the simulator and the scorer read: their types, and signal plans that drive the lights."""
    meta = scene.metadata
    if not isinstance(meta, dict):
        _fail(scene, f"metadata must be a dict, got {type(meta).__name__}")
    for key in ("family", "source"):
        if key in meta and not isinstance(meta[key], str):
            _fail(scene, f"metadata.{key} must be a string, got {meta[key]!r}")
    if "route_roadblocks" in meta and not _is_str_list(meta["route_roadblocks"]):
        _fail(scene, "metadata.route_roadblocks must be a list of roadblock ids (strings)")
    images = meta.get("camera_images", {})
    if not isinstance(images, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in images.items()):
        _fail(scene, "metadata.camera_images must map log steps (strings) to image paths (strings)")
    offset = meta.get("signal_time_offset_s", 0.0)
    if not _is_number(offset) or not abs(offset) <= limits.MAX_SIGNAL_TIME_S:
        _fail(scene, f"metadata.signal_time_offset_s {offset!r} is not a number within +-{limits.MAX_SIGNAL_TIME_S:g} s")
    plans = meta.get("signal_plans", [])
    if not isinstance(plans, list):
        _fail(scene, "metadata.signal_plans must be a list")
    plan_lights: list[str] = []
    for k, plan in enumerate(plans):
        where = f"metadata.signal_plans[{k}]"
        keys = ("light_ids", "phases", "green_s", "yellow_s", "all_red_s", "offset_s")
        if not isinstance(plan, dict) or any(key not in plan for key in keys):
            _fail(scene, f"{where} must be a dict with {', '.join(keys)}")
        if not _is_str_list(plan["light_ids"]) or not isinstance(plan["phases"], list) or not plan["phases"]:
            _fail(scene, f"{where}: light_ids must be strings and phases a non-empty list")
        for phase in plan["phases"]:
            if not _is_str_list(phase) or any(member not in plan["light_ids"] for member in phase):
                _fail(scene, f"{where}: a phase names a light that is not in the plan's light_ids")
        for key in ("green_s", "yellow_s", "all_red_s", "offset_s"):
            value = plan[key]
            low = -limits.MAX_SIGNAL_TIME_S if key == "offset_s" else 0.0
            if not _is_number(value) or not low <= value <= limits.MAX_SIGNAL_TIME_S:
                _fail(scene, f"{where}.{key} {value!r} is not a number within {low:g}..{limits.MAX_SIGNAL_TIME_S:g} s")
        if plan["green_s"] + plan["yellow_s"] + plan["all_red_s"] <= 0:
            _fail(scene, f"{where}: a phase must last longer than 0 s")
        plan_lights += list(plan["light_ids"])
    if plans and plan_lights != list(scene.light_ids):
        _fail(scene, "metadata.signal_plans' light ids (in order) must be the scene's light_ids, whose states they "
                     "continue after the log")
