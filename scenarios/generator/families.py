"""Road-network families of the procedural generator: straight, curve, 4-way, T-junction, highway merge.

Each builder takes a seeded Generator and returns a `Layout`: the RoadMap, its signal plans, the
routes an ego may take (with a NAVSIM-style maneuver), crosswalk paths for pedestrians and parking
spots for static objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from scenarios.generator.roads import LANE_WIDTH, MapBuilder, arc, join, offset, rectangle, straight
from sim.geometry import principal_value
from sim.map import RoadMap
from sim.traffic import SignalPlan

URBAN_LIMIT = 13.9  # 50 km/h
TURN_LIMIT = 8.0
HIGHWAY_LIMIT = 27.8  # 100 km/h
RAMP_LIMIT = 19.4  # 70 km/h


@dataclass(frozen=True)
class EgoRoute:
    """A route an ego can drive: lane ids, the maneuver it makes, and where on the first lane to start."""

    lanes: tuple[str, ...]
    maneuver: str  # "straight", "left", "right", "follow", "merge"
    start_s: float  # arc length on lanes[0] at the current frame


@dataclass
class Layout:
    road_map: RoadMap
    signal_plans: list[SignalPlan] = field(default_factory=list)
    ego_routes: list[EgoRoute] = field(default_factory=list)
    crosswalk_paths: list[np.ndarray] = field(default_factory=list)  # (2, 2) start/end per crosswalk
    parking_spots: list[tuple[float, float, float]] = field(default_factory=list)  # x, y, heading


def _parking_strip(builder: MapBuilder, name: str, reference: np.ndarray, n_lanes: int, spots: list, rng) -> None:
    """A carpark strip along the right edge of a road, with parallel-parking spots every ~7 m."""
    inner, outer = offset(reference, -n_lanes * LANE_WIDTH), offset(reference, -(n_lanes * LANE_WIDTH + 2.5))
    builder.add_area(f"{name}_parking", "carpark", shapely.Polygon(np.concatenate([inner, outer[::-1]])).buffer(0))
    mid = offset(reference, -(n_lanes * LANE_WIDTH + 1.25))
    seg = np.linalg.norm(np.diff(mid, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    for s in np.arange(10.0, cum[-1] - 10.0, 7.0):
        if rng.random() < 0.45:
            i = min(np.searchsorted(cum, s), len(mid) - 1)
            d = mid[min(i + 1, len(mid) - 1)] - mid[max(i - 1, 0)]
            spots.append((float(np.interp(s, cum, mid[:, 0])), float(np.interp(s, cum, mid[:, 1])),
                          float(np.arctan2(d[1], d[0]))))


def _midblock_crosswalk(builder: MapBuilder, name: str, reference: np.ndarray, half_width: float, at: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(reference, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    i = min(int(np.searchsorted(cum, at)), len(reference) - 2)
    p = reference[i]
    h = float(np.arctan2(*(reference[i + 1] - reference[i])[::-1]))
    builder.add_area(f"{name}_crosswalk", "crosswalk", rectangle(p, h, 4.0, 2 * half_width))
    normal = np.array([-np.sin(h), np.cos(h)])
    return np.array([p - normal * (half_width + 1.5), p + normal * (half_width + 1.5)])


def build_straight(rng: np.random.Generator) -> Layout:
    builder = MapBuilder("straight")
    nf, nb = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    length = 260.0
    ref = straight(np.zeros(2), 0.0, length)
    road = builder.add_road("road", ref, nf, nb, URBAN_LIMIT)
    layout = Layout(road_map=None)
    _parking_strip(builder, "road", ref, nf, layout.parking_spots, rng)
    if rng.random() < 0.5:
        layout.crosswalk_paths.append(_midblock_crosswalk(builder, "road", ref, max(nf, nb) * LANE_WIDTH, rng.uniform(120, 170)))
    for lane_id in road.forward:
        layout.ego_routes.append(EgoRoute((lane_id,), "follow", float(rng.uniform(50, 90))))
    layout.road_map = builder.build()
    return layout


def build_curve(rng: np.random.Generator) -> Layout:
    builder = MapBuilder("curve")
    nf, nb = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    radius = float(rng.uniform(35, 150))
    sweep = float(rng.choice([-1, 1]) * rng.uniform(np.radians(30), np.radians(100)))
    a = straight(np.zeros(2), 0.0, 70.0)
    b = arc(a[-1], 0.0, radius, sweep)
    c = straight(b[-1], sweep, 90.0)
    ref = join(a, b, c)
    road = builder.add_road("road", ref, nf, nb, URBAN_LIMIT)
    layout = Layout(road_map=None)
    if rng.random() < 0.5:
        _parking_strip(builder, "road", a, nf, layout.parking_spots, rng)
    for lane_id in road.forward:
        layout.ego_routes.append(EgoRoute((lane_id,), "follow", float(rng.uniform(25, 55))))
    layout.road_map = builder.build()
    return layout


def _junction(rng: np.random.Generator, name: str, arm_angles: list[float]) -> Layout:
    """A signalised junction with arms at the given outward headings (radians, CCW)."""
    builder = MapBuilder(name)
    n_in = {a: int(rng.integers(1, 3)) for a in range(len(arm_angles))}
    n_out = {a: int(rng.integers(1, 3)) for a in range(len(arm_angles))}
    half = max(max(n_in.values()), max(n_out.values())) * LANE_WIDTH + 6.0
    arm_length = float(rng.uniform(70, 100))
    arms = {}
    for a, angle in enumerate(arm_angles):
        direction = np.array([np.cos(angle), np.sin(angle)])
        ref = straight(direction * half, angle, arm_length)
        arms[a] = builder.add_road(f"arm{a}", ref, n_out[a], n_in[a], URBAN_LIMIT)
    layout = Layout(road_map=None)
    lights, movements = [], {}
    for a, angle in enumerate(arm_angles):
        for b, other in enumerate(arm_angles):
            if a == b:
                continue
            # Turn angle from heading into the junction (angle + pi) to heading out along arm b.
            turn = principal_value(other - (angle + np.pi))
            kind = "straight" if abs(turn) < np.radians(30) else ("left" if turn > 0 else "right")
            if kind == "straight":
                pairs = [(k, min(k, n_out[b] - 1)) for k in range(n_in[a])]
            elif kind == "left":
                pairs = [(0, 0)]
            else:
                pairs = [(n_in[a] - 1, n_out[b] - 1)]
            light = f"tl_{name}_{a}_{'l' if kind == 'left' else 'sr'}"
            if light not in lights:
                lights.append(light)
            for k_in, k_out in pairs:
                cid = builder.connect(arms[a].backward[k_in], arms[b].forward[k_out], f"{name}_conn_{a}_{b}", light,
                                      speed_limit=URBAN_LIMIT if kind == "straight" else TURN_LIMIT)
                movements.setdefault((a, kind), []).append((arms[a].backward[k_in], cid, arms[b].forward[k_out]))
    # Junction box and crosswalks at each arm's mouth.
    connectors = [shapely.Polygon(np.concatenate([d["left"], d["right"][::-1]]))
                  for d in builder.lanes.values() if d["is_connector"]]
    box = shapely.union_all([shapely.convex_hull(shapely.union_all(connectors)), shapely.box(-half, -half, half, half)])
    builder.add_area(f"{name}_junction", "intersection", box)
    for a, angle in enumerate(arm_angles):
        width = (n_in[a] + n_out[a]) * LANE_WIDTH
        center_offset = (n_in[a] - n_out[a]) * LANE_WIDTH / 2  # road is asymmetric around its reference
        direction, normal = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
        center = direction * (half - 2.5) + normal * center_offset
        builder.add_area(f"{name}_crosswalk_{a}", "crosswalk", rectangle(center, angle, 4.0, width))
        layout.crosswalk_paths.append(np.array([center - normal * (width / 2 + 1.5), center + normal * (width / 2 + 1.5)]))
        stop_centre = direction * (half + 0.5) + normal * (n_in[a] * LANE_WIDTH / 2)
        builder.add_area(f"{name}_stop_{a}", "stop_polygon", rectangle(stop_centre, angle, 1.0, n_in[a] * LANE_WIDTH))
    # Phases: per opposing pair (or single arm), straight+right then protected left.
    groups = _phase_groups(arm_angles)
    phases = []
    for group in groups:
        for suffix in ("sr", "l"):
            members = tuple(lid for a in group for lid in [f"tl_{name}_{a}_{suffix}"] if lid in lights)
            if members:
                phases.append(members)
    layout.signal_plans.append(SignalPlan(tuple(lights), tuple(phases), green_s=float(rng.uniform(8, 14)),
                                          offset_s=float(rng.uniform(0, 60))))
    for (a, kind), chains in movements.items():
        for entry, connector, exit_lane in chains:
            layout.ego_routes.append(EgoRoute((entry, connector, exit_lane), kind, float(arm_length - rng.uniform(25, 50))))
    layout.road_map = builder.build()
    return layout


def _phase_groups(arm_angles: list[float]) -> list[list[int]]:
    """Arms grouped with their opposite arm (straight-through partners) to share a phase."""
    remaining, groups = list(range(len(arm_angles))), []
    while remaining:
        a = remaining.pop(0)
        partner = next((b for b in remaining if abs(principal_value(arm_angles[b] - arm_angles[a] - np.pi)) < 0.5), None)
        if partner is not None:
            remaining.remove(partner)
        groups.append([a] if partner is None else [a, partner])
    return groups


def build_intersection(rng: np.random.Generator) -> Layout:
    jitter = rng.uniform(-0.12, 0.12, size=4)
    return _junction(rng, "intersection", [k * np.pi / 2 + jitter[k] for k in range(4)])


def build_t_junction(rng: np.random.Generator) -> Layout:
    missing = int(rng.integers(0, 4))
    return _junction(rng, "tjunction", [k * np.pi / 2 for k in range(4) if k != missing])


def build_merge(rng: np.random.Generator) -> Layout:
    """A one-way highway with an on-ramp, shaped as nuPlan maps are: the main road's n lanes and the ramp (which
    runs on as an acceleration lane beside them) are roadblocks that end where the merge begins; lane connectors,
    one per main lane plus the merge from the acceleration lane, lead through the merge area (an intersection
    polygon, as nuPlan puts every lane connector in one) onto the n lanes of the road beyond."""
    builder = MapBuilder("merge")
    n = int(rng.integers(2, 4))
    merge_length = float(rng.uniform(35, 50))
    up = straight(np.array([-160.0, 0.0]), 0.0, 160.0)
    acc = straight(np.zeros(2), 0.0, 110.0)
    down = straight(np.array([110.0 + merge_length, 0.0]), 0.0, 160.0)
    main = builder.add_road("main_a", join(up, acc), n, 0, HIGHWAY_LIMIT, sidewalks=False)
    main_c = builder.add_road("main_c", down, n, 0, HIGHWAY_LIMIT, sidewalks=False)
    # Ramp: comes in from the right and runs on, where the main road's lanes are, as the acceleration lane.
    acc_line = offset(acc, -(n + 0.5) * LANE_WIDTH)
    angle = float(rng.uniform(np.radians(12), np.radians(25)))
    ramp_a = straight(np.zeros(2), angle, 60.0)
    ramp_b = arc(ramp_a[-1], angle, 60.0, -angle)
    ramp_ref = join(ramp_a, ramp_b)
    ramp_ref = ramp_ref + (acc_line[0] - ramp_ref[-1])[None, :]  # end exactly where the acceleration lane starts
    ramp_id = builder.add_lane("ramp", join(ramp_ref, acc_line), RAMP_LIMIT, "ramp")
    acc_strip = shapely.Polygon(np.concatenate([offset(acc, -n * LANE_WIDTH), offset(acc, -(n + 1) * LANE_WIDTH)[::-1]]))
    builder.add_area("ramp", "roadblock", shapely.union_all([
        shapely.buffer(shapely.LineString(ramp_ref), LANE_WIDTH / 2, cap_style="flat"), acc_strip]))
    for k in range(n):
        builder.connect(main.forward[k], main_c.forward[k], "main_bc")
    merge = builder.connect(ramp_id, main_c.forward[n - 1], "main_bc")
    gap_area = shapely.box(110.0, -n * LANE_WIDTH, 110.0 + merge_length, 0.0)
    builder.add_area("main_bc", "intersection", shapely.union_all([gap_area, shapely.Polygon(np.concatenate(
        [builder.lanes[merge]["left"], builder.lanes[merge]["right"][::-1]]))]))
    layout = Layout(road_map=None)
    layout.ego_routes.append(EgoRoute((ramp_id, merge, main_c.forward[n - 1]), "merge", float(rng.uniform(10, 40))))
    for k in range(n):
        layout.ego_routes.append(EgoRoute((main.forward[k], f"{main.forward[k]}__{main_c.forward[k]}",
                                           main_c.forward[k]), "follow", float(rng.uniform(60, 110))))
    layout.road_map = builder.build()
    return layout


BUILDERS = {
    "straight": build_straight,
    "curve": build_curve,
    "intersection": build_intersection,
    "t_junction": build_t_junction,
    "merge": build_merge,
}
