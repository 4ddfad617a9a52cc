"""Scene generation: populate a family layout with traffic, run the traffic behaviours, record a 10 Hz log."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import shapely

from scenarios.commands import driving_commands
from scenarios.generator.families import BUILDERS, EgoRoute, Layout
from sim.geometry import PACIFICA, VehicleParameters
from sim.map import RoadMap
from sim.scene import STEP_S, Scene
from sim.state import AgentTracks, AgentType, ego_state
from sim.traffic import AgentPaths, CrosswalkWalkers, IDMTraffic, Obstacles, light_status_table

FAMILIES = tuple(BUILDERS)
GENERATOR_VERSION = 1

# Box sizes (length, width, height) per agent kind.
CAR_SIZE = (4.6, 1.9, 1.6)
CYCLIST_SIZE = (1.8, 0.7, 1.7)
PEDESTRIAN_SIZE = (0.6, 0.6, 1.75)
CONE_SIZE = (0.4, 0.4, 0.7)
LANE_WANDER_M = 0.15  # a generated car keeps this far at most off its lane's centerline (a fixed offset per car)

COMMAND_TEXT = {
    "straight": "go straight through the next intersection",
    "left": "turn left at the next intersection",
    "right": "turn right at the next intersection",
    "follow": "follow the current lane",
    "merge": "merge onto the highway",
}


@dataclass(frozen=True)
class GeneratorConfig:
    """What a generated scene looks like. `num_vehicles=None` draws a family-typical count."""

    history_s: float = 1.5
    future_s: float = 8.0
    warmup_s: float = 4.0
    num_vehicles: int | None = None
    max_pedestrians: int = 6
    cyclist_fraction: float = 0.1
    vehicle: VehicleParameters = PACIFICA

    @property
    def current_index(self) -> int:
        return int(round(self.history_s / STEP_S))

    @property
    def num_steps(self) -> int:
        return self.current_index + int(round(self.future_s / STEP_S)) + 1


def scene_token(family: str, seed: int) -> str:
    """16 hex characters, like a NAVSIM token; stable for (family, seed)."""
    return hashlib.sha256(f"w0sim/{family}/{seed}".encode()).hexdigest()[:16]


def _random_chain(road_map: RoadMap, start: str, rng: np.random.Generator, min_length: float) -> list[str]:
    """Lanes from `start` through random successors until `min_length` metres or a dead end."""
    chain, total = [start], road_map.lane(start).length
    while total < min_length and road_map.lane(chain[-1]).successors:
        nxt = road_map.lane(chain[-1]).successors
        chain.append(nxt[int(rng.integers(len(nxt)))])
        total += road_map.lane(chain[-1]).length
    return chain


def _extend_route(road_map: RoadMap, route: EgoRoute, min_length: float) -> list[str]:
    chain = list(route.lanes)
    total = sum(road_map.lane(l).length for l in chain)
    while total < min_length and road_map.lane(chain[-1]).successors:
        chain.append(road_map.lane(chain[-1]).successors[0])
        total += road_map.lane(chain[-1]).length
    return chain


@dataclass
class _Population:
    chains: list[list[str]]
    start_s: np.ndarray
    speed: np.ndarray
    desired: np.ndarray
    size: np.ndarray  # (N, 3)
    kind: np.ndarray
    lateral: np.ndarray


def _populate_vehicles(layout: Layout, route: EgoRoute, ego_chain: list[str], count: int, config: GeneratorConfig,
                       rng: np.random.Generator, traffic_rng: np.random.Generator | None = None) -> _Population:
    """Ego first (its speeds drawn from `rng`), then vehicles and cyclists spread over non-connector lanes without
    overlaps (drawn from `traffic_rng`, default `rng`)."""
    road_map = layout.road_map
    horizon = 30.0 * (config.warmup_s + config.history_s + config.future_s)
    ego_limit = road_map.lane(ego_chain[0]).speed_limit
    ego_speed = float(rng.uniform(0.5, 0.9) * ego_limit)
    # The route's start_s is where the ego is at the current frame; start earlier to cover warm-up and history.
    ego_s = max(route.start_s - ego_speed * (config.warmup_s + config.history_s), 0.0)
    chains, start_s, speed, desired, size, kind, lateral = [ego_chain], [ego_s], [ego_speed], [], [], [], []
    desired.append(ego_limit * float(rng.uniform(0.85, 1.0)))
    size.append((config.vehicle.length, config.vehicle.width, config.vehicle.height))
    kind.append(AgentType.VEHICLE)
    lateral.append(0.0)
    occupied: dict[str, list[tuple[float, float]]] = {ego_chain[0]: [(ego_s - 12.0, ego_s + 12.0)]}
    lanes = [l for l in road_map.lanes if not l.is_connector]
    rng = rng if traffic_rng is None else traffic_rng
    attempts = 0
    while len(chains) - 1 < count and attempts < 40 * max(count, 1):
        attempts += 1
        lane = lanes[int(rng.integers(len(lanes)))]
        if lane.length < 12.0:
            continue
        s = float(rng.uniform(3.0, lane.length - 3.0))
        if any(a <= s <= b for a, b in occupied.get(lane.id, [])):
            continue
        is_cyclist = rng.random() < config.cyclist_fraction and not lane.successors == () and lane.speed_limit < 20
        box = CYCLIST_SIZE if is_cyclist else CAR_SIZE
        occupied.setdefault(lane.id, []).append((s - box[0] - 3.0, s + box[0] + 3.0))
        chains.append(_random_chain(road_map, lane.id, rng, horizon))
        start_s.append(s)
        top = float(rng.uniform(4.0, 6.0)) if is_cyclist else lane.speed_limit * float(rng.uniform(0.7, 1.05))
        speed.append(top * float(rng.uniform(0.3, 1.0)))
        desired.append(top)
        size.append(box)
        kind.append(AgentType.BICYCLE if is_cyclist else AgentType.VEHICLE)
        # Cars wander within their lane, as logged ones do: a car exactly on the ego's line would put NAVSIM's
        # ahead test (arccos of a cosine rounded to 1) on the last bit of the positions.
        lateral.append(-(1.75 - 0.7) if is_cyclist else float(rng.uniform(-LANE_WANDER_M, LANE_WANDER_M)))
    return _Population(chains, np.array(start_s), np.array(speed), np.array(desired), np.array(size, dtype=np.float64),
                       np.array(kind, dtype=np.int8), np.array(lateral))


def _pedestrians(layout: Layout, config: GeneratorConfig, rng: np.random.Generator) -> CrosswalkWalkers:
    """Walkers on crosswalk paths, spread across the crossing's width so they do not overlap."""
    rows = []
    for path in layout.crosswalk_paths:
        lanes_across = rng.permutation([-1.2, -0.4, 0.4, 1.2])
        for k in range(int(rng.integers(0, 3))):
            if len(rows) >= config.max_pedestrians:
                break
            d = (path[1] - path[0]) / np.linalg.norm(path[1] - path[0])
            shifted = path + lanes_across[k] * np.array([-d[1], d[0]])  # across the crossing, fixed per walker
            a, b = (shifted, shifted[::-1])[int(rng.integers(2))]
            rows.append((*a, *b, rng.uniform(1.0, 1.6), rng.uniform(0.0, config.warmup_s + config.future_s)))
    rows = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return CrosswalkWalkers(rows[:, 0:2], rows[:, 2:4], rows[:, 4], rows[:, 5])


def _ego_states(x, y, heading, v, acc, vehicle: VehicleParameters) -> np.ndarray:
    """(T, 11) rear-axle ego states from box-centre poses; yaw rate and steering from differences."""
    rear_x = x - vehicle.rear_axle_to_center * np.cos(heading)
    rear_y = y - vehicle.rear_axle_to_center * np.sin(heading)
    yaw_rate = np.gradient(np.unwrap(heading), STEP_S)
    steering = np.arctan(vehicle.wheel_base * yaw_rate / np.maximum(v, 0.5))
    states = np.stack([ego_state(rear_x[t], rear_y[t], heading[t], v[t], 0.0, acc[t], v[t] * yaw_rate[t], steering[t])
                       for t in range(len(x))])
    states[:, 9] = yaw_rate
    states[:, 10] = np.gradient(yaw_rate, STEP_S)
    states[:, 8] = np.gradient(steering, STEP_S)
    return states


def _default_vehicle_count(family: str, rng: np.random.Generator) -> int:
    low, high = {"straight": (4, 14), "curve": (3, 10), "intersection": (8, 24), "t_junction": (6, 18), "merge": (6, 18)}[family]
    return int(rng.integers(low, high + 1))


def generate_scene(family: str, seed: int, config: GeneratorConfig = GeneratorConfig(), repetition: int = 0) -> Scene:
    """One scene of `family`, fully determined by (family, seed, config, repetition).

    `repetition` k > 0 (a closed-loop run's repetition k of this route) keeps the map, the ego's route (the lanes of
    repetition 0) and the ego's speeds, and draws the other road users, the walkers, the cones and the signal
    phase offsets anew from (family, seed, k); repetition 0 is the scene itself."""
    if family not in BUILDERS:
        raise ValueError(f"unknown scene family {family!r}; expected one of {FAMILIES}")
    if repetition < 0:
        raise ValueError(f"repetition must be >= 0, got {repetition}")
    rng = np.random.default_rng([GENERATOR_VERSION, FAMILIES.index(family), seed])
    layout = BUILDERS[family](rng)
    road_map = layout.road_map
    route = layout.ego_routes[int(rng.integers(len(layout.ego_routes)))]
    ego_chain = _extend_route(road_map, route, 400.0)
    count = config.num_vehicles if config.num_vehicles is not None else _default_vehicle_count(family, rng)
    plans = layout.signal_plans
    # Repetition 0 draws everything from one stream; repetition k the traffic from its own (the ego's draws stay).
    traffic_rng = rng
    if repetition:
        traffic_rng = np.random.default_rng([GENERATOR_VERSION, FAMILIES.index(family), seed, repetition])
        if config.num_vehicles is None:
            count = _default_vehicle_count(family, traffic_rng)
        plans = [replace(plan, offset_s=float(traffic_rng.uniform(0.0, plan.cycle_s))) for plan in plans]
    pop = _populate_vehicles(layout, route, ego_chain, count, config, rng, traffic_rng)
    paths = AgentPaths.build(road_map, pop.chains, pop.lateral)
    warmup = int(round(config.warmup_s / STEP_S))
    steps = config.num_steps
    times = (np.arange(warmup + steps)) * STEP_S
    light_ids, light_table = light_status_table(plans, times)
    walkers = _pedestrians(layout, config, traffic_rng)
    parked = _spots_clear_of_crosswalks(layout)
    cones = np.array(_cones(layout, traffic_rng), dtype=np.float64).reshape(-1, 3)
    static_xyh = np.concatenate([parked, cones])
    static_size = np.array([CAR_SIZE] * len(parked) + [CONE_SIZE] * len(cones), dtype=np.float64).reshape(-1, 3)
    statics = Obstacles(static_xyh[:, 0], static_xyh[:, 1], static_xyh[:, 2], np.zeros(len(static_xyh)),
                        static_size[:, 0], static_size[:, 1])
    traffic = IDMTraffic(road_map, paths, s=pop.start_s.copy(), v=pop.speed.copy(), desired_speed=pop.desired,
                         length=pop.size[:, 0], width=pop.size[:, 1], light_ids=light_ids, static_obstacles=statics)

    n_v, n_p, n_s, n_c = traffic.count, walkers.count, len(parked), len(cones)
    rec = np.zeros((steps, n_v, 5))  # x, y, heading, speed, acceleration
    rec_valid = np.zeros((steps, n_v), dtype=bool)
    rec_walk = np.zeros((steps, n_p, 4))
    for k in range(warmup + steps):
        walk = np.stack(walkers.state())
        obstacles = Obstacles(*walk, length=np.full(n_p, PEDESTRIAN_SIZE[0]), width=np.full(n_p, PEDESTRIAN_SIZE[1]))
        acc = traffic.accelerations(obstacles, light_table[k])
        x, y, h = traffic.poses()
        if k >= warmup:
            rec[k - warmup] = np.stack([x, y, h, traffic.v, acc], -1)
            rec_valid[k - warmup] = traffic.active
            rec_walk[k - warmup] = walk.T
        walkers.step(STEP_S, times[k], np.stack([x, y], -1)[traffic.active], traffic.v[traffic.active])
        traffic.step(STEP_S, accelerations=acc)

    ego = rec[:, 0]
    ego_log = _ego_states(ego[:, 0], ego[:, 1], ego[:, 2], ego[:, 3], ego[:, 4], config.vehicle)
    others = rec[:, 1:]
    n_agents = n_v - 1 + n_p + n_s + n_c
    tracks = AgentTracks.empty(steps, n_agents)
    sl = slice(0, n_v - 1)
    tracks.x[:, sl], tracks.y[:, sl], tracks.heading[:, sl] = others[..., 0], others[..., 1], others[..., 2]
    tracks.vx[:, sl] = others[..., 3] * np.cos(others[..., 2])
    tracks.vy[:, sl] = others[..., 3] * np.sin(others[..., 2])
    tracks.valid[:, sl] = rec_valid[:, 1:]
    sp = slice(n_v - 1, n_v - 1 + n_p)
    tracks.x[:, sp], tracks.y[:, sp], tracks.heading[:, sp] = rec_walk[..., 0], rec_walk[..., 1], rec_walk[..., 2]
    tracks.vx[:, sp] = rec_walk[..., 3] * np.cos(rec_walk[..., 2])
    tracks.vy[:, sp] = rec_walk[..., 3] * np.sin(rec_walk[..., 2])
    tracks.valid[:, sp] = True
    ss = slice(n_v - 1 + n_p, n_agents)
    tracks.x[:, ss], tracks.y[:, ss], tracks.heading[:, ss] = static_xyh[:, 0], static_xyh[:, 1], static_xyh[:, 2]
    tracks.valid[:, ss] = True
    sizes = np.concatenate([pop.size[1:], np.tile(PEDESTRIAN_SIZE, (n_p, 1)), static_size]).reshape(-1, 3)
    tracks.length[:], tracks.width[:], tracks.height[:] = sizes[:, 0], sizes[:, 1], sizes[:, 2]
    tracks.agent_type[:] = np.concatenate([pop.kind[1:], np.full(n_p, AgentType.PEDESTRIAN),
                                           np.full(n_s, AgentType.VEHICLE), np.full(n_c, AgentType.TRAFFIC_CONE)])
    tracks.track_ids = ([f"veh_{i}" for i in range(1, n_v)] + [f"ped_{i}" for i in range(n_p)]
                        + [f"parked_{i}" for i in range(n_s)] + [f"cone_{i}" for i in range(n_c)])
    # Zero the entries of tracks that do not exist (left the map), as the format promises.
    for arr in (tracks.x, tracks.y, tracks.heading, tracks.vx, tracks.vy):
        arr[~tracks.valid] = 0.0

    # The route is trimmed by how far the ego drove in repetition 0: every repetition has the same route.
    route_lanes = (_route_lanes_driven(road_map, ego_chain, ego_log) if not repetition
                   else generate_scene(family, seed, config).route)
    commands = driving_commands(road_map.route_polyline(ego_chain), ego_log)
    return Scene(
        token=scene_token(family, seed), map=road_map, ego_log=ego_log, agents=tracks, route=route_lanes,
        current_index=config.current_index, light_ids=light_ids, light_status=light_table[warmup:],
        driving_command=commands, command_text=COMMAND_TEXT[route.maneuver],
        metadata={"source": "generator", "family": family, "seed": seed, "generator_version": GENERATOR_VERSION,
                  "maneuver": route.maneuver, "log_name": f"w0sim_{family}",
                  # Lets a closed-loop run continue the lights past the end of the log.
                  "signal_plans": [plan.as_dict() for plan in plans],
                  "signal_time_offset_s": warmup * STEP_S, **({"repetition": repetition} if repetition else {})},
    )


def _route_lanes_driven(road_map: RoadMap, chain: list[str], ego_log: np.ndarray) -> list[str]:
    """The ego's route: its lane chain, trimmed to what lies within ~150 m beyond the log's end."""
    keep, total = [], 0.0
    travelled = float(np.sum(np.hypot(*np.diff(ego_log[:, :2], axis=0).T)))
    for lane_id in chain:
        keep.append(lane_id)
        total += road_map.lane(lane_id).length
        if total > travelled + 150.0:
            break
    return keep


def _spots_clear_of_crosswalks(layout: Layout, clearance: float = 6.0) -> np.ndarray:
    """(S, 3) parking spots, without those where walkers step onto the road."""
    spots = np.array(layout.parking_spots, dtype=np.float64).reshape(-1, 3)
    if not layout.crosswalk_paths or not len(spots):
        return spots
    paths = shapely.linestrings(np.stack(layout.crosswalk_paths))
    dist = shapely.distance(shapely.points(spots[:, :2])[:, None], paths[None, :]).min(axis=1)
    return spots[dist > clearance]


def _cones(layout: Layout, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """A few traffic cones at the edge of parking strips (static objects, NC weight 0.5 in NAVSIM)."""
    cones = []
    for x, y, h in layout.parking_spots:
        if rng.random() < 0.08:
            cones.append((x + 3.0 * np.cos(h), y + 3.0 * np.sin(h), h))
    return cones


def scene_specs(count: int, seed: int = 0, families: tuple[str, ...] = FAMILIES) -> list[tuple[str, int]]:
    """(family, scene seed) of `count` scenes cycling through `families`; scene i has seed `seed * 1_000_003 + i`."""
    return [(families[i % len(families)], seed * 1_000_003 + i) for i in range(count)]


def generate_scenes(count: int, seed: int = 0, families: tuple[str, ...] = FAMILIES,
                    config: GeneratorConfig = GeneratorConfig()):
    """The scenes of `scene_specs`, one at a time."""
    for family, scene_seed in scene_specs(count, seed, families):
        yield generate_scene(family, scene_seed, config)
