"""CARLA's route-planner algorithm: the A* search against networkx's (which CARLA's planner calls) on graphs full of
equal-cost paths, and the graph's lane-change edges and turn labels on a real town and on a hand-made junction."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from scenarios.carla_route_planner import NoRouteError, RoadOption, astar_path


def _random_graph(rng: np.random.Generator, nodes: int):
    """A directed graph like the planner's: integer hop counts, zero-cost lane changes, rounded node positions."""
    positions = rng.integers(0, 4, (nodes, 3)).astype(float)  # a small grid: many nodes equally far from the target
    positions[:, 2] = 0
    edges = {}
    for a in range(nodes):
        for b in rng.choice(nodes, size=rng.integers(1, 4), replace=False):
            if a != b:
                edges.setdefault(a, {})[int(b)] = int(rng.choice([0, 1, 2, 3, 3, 4]))
    return positions, edges


def test_astar_returns_networkx_paths_including_its_choice_among_equal_costs():
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(7)
    compared = ties = 0
    for _ in range(300):
        positions, edges = _random_graph(rng, int(rng.integers(5, 40)))
        graph = nx.DiGraph()
        graph.add_nodes_from(range(len(positions)))
        for a, out in edges.items():
            for b, length in out.items():
                graph.add_edge(a, b, length=length)
        heuristic = lambda a, b: np.linalg.norm(positions[a] - positions[b])  # noqa: E731
        steps = lambda node: ((b, length) for b, length in edges.get(node, {}).items())  # noqa: E731
        source, target = (int(v) for v in rng.choice(len(positions), 2, replace=False))
        try:
            expected = nx.astar_path(graph, source, target, heuristic=heuristic, weight="length")
        except nx.NetworkXNoPath:
            with pytest.raises(NoRouteError):
                astar_path(steps, heuristic, source, target)
            continue
        assert astar_path(steps, heuristic, source, target) == expected
        compared += 1
        best = nx.shortest_path_length(graph, source, target, weight="length")
        ties += len(list(nx.all_shortest_paths(graph, source, target, weight="length"))) > 1 and best > 0
    assert compared > 150 and ties > 15  # the comparison covered many graphs with several shortest paths


def test_a_town04_route_changes_lanes_and_labels_its_junction_turns():
    """Devtest route 2 (Town04, highway and town): lane-change edges are taken, and junctions get LEFT / RIGHT /
    STRAIGHT labels, as the Leaderboard's route carries them."""
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns (pip install 'w0sim[carla]')")
    from scenarios.leaderboard import densify, read_routes, town_for
    from tests.conftest import require_fixture

    route = read_routes(require_fixture("carla/routes/routes_devtest.xml"))[2]
    dense = densify(town_for(str(require_fixture("carla/maps/Town04.xodr").parent), route.town), route)
    options = set(dense.road_options.tolist())
    assert {RoadOption.CHANGELANELEFT, RoadOption.CHANGELANERIGHT} & options
    assert {RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT} & options and RoadOption.LANEFOLLOW in options


class _Location:
    def __init__(self, x: float):
        self.x, self.y, self.z = x, 0.0, 0.0

    def distance(self, other) -> float:
        return abs(self.x - other.x)


class _Waypoint:
    """A waypoint whose lane runs away from its segment's exit (a map CARLA's planner would walk forever)."""

    def __init__(self, x: float):
        self.transform = type("Transform", (), {"location": _Location(x)})()
        self.road_id, self.section_id, self.lane_id = 7, 0, -1

    def next(self, hop: float):
        return [_Waypoint(self.transform.location.x + hop)]


def test_a_lane_segment_that_never_meets_its_exit_is_an_error_not_an_endless_walk():
    pytest.importorskip("carla", reason="the planner module imports the carla client")
    from scenarios.carla_route_planner import GlobalRoutePlanner

    carla_map = type("Map", (), {"get_topology": lambda self: [(_Waypoint(0.0), _Waypoint(-10.0))]})()
    with pytest.raises(NoRouteError, match="road 7 section 0 lane -1 does not reach its exit"):
        GlobalRoutePlanner(carla_map)


class _Point:
    def __init__(self, x: float, y: float, z: float = 0.0):
        self.x, self.y, self.z = x, y, z

    def distance(self, other) -> float:
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))


class _Lane:
    """A one-lane road from `start` to `end` (x, y), its heading turning evenly from `headings[0]` to `headings[1]`
    degrees (positions on the chord: only the ends' headings and places matter to the planner's turn labels)."""

    def __init__(self, road_id: int, start: tuple, end: tuple, headings: tuple, junction: bool):
        self.road_id, self.start, self.end, self.headings, self.junction = road_id, start, end, headings, junction
        self.length = math.dist(start, end)

    def at(self, s: float) -> _LaneWaypoint:
        return _LaneWaypoint(self, s)


class _LaneWaypoint:
    section_id, lane_id, left_lane_marking, right_lane_marking = 0, -1, None, None

    def __init__(self, lane: _Lane, s: float):
        t = s / lane.length
        heading = math.radians(lane.headings[0] + t * (lane.headings[1] - lane.headings[0]))
        forward = _Point(math.cos(heading), math.sin(heading))
        location = _Point(*(a + t * (b - a) for a, b in zip(lane.start, lane.end)))
        self.transform = SimpleNamespace(location=location, rotation=SimpleNamespace(get_forward_vector=lambda: forward))
        self.lane, self.s, self.road_id, self.is_junction = lane, s, lane.road_id, lane.junction

    def next(self, hop: float):
        return [self.lane.at(self.s + hop)] if self.s + hop <= self.lane.length else []


class _JunctionMap:
    """Road 1 runs along +x into a junction at (0, 150); from there road 2 goes straight on, road 3 bends 40 degrees
    towards +y and road 4 bends 90 degrees towards -y. In CARLA's frame +y lies to the right of +x."""

    Y = 150.0
    LANES = [_Lane(1, (-30.0, Y), (0.0, Y), (0.0, 0.0), junction=False),
             _Lane(2, (0.0, Y), (20.0, Y), (0.0, 0.0), junction=True),
             _Lane(3, (0.0, Y), (20 * math.cos(math.radians(20)), Y + 20 * math.sin(math.radians(20))), (0.0, 40.0),
                   junction=True),  # a 40 degree arc: its chord points 20 degrees off the entry heading
             _Lane(4, (0.0, Y), (10.0, Y - 10.0), (0.0, -90.0), junction=True)]

    def get_topology(self):
        return [(lane.at(0.0), lane.at(lane.length)) for lane in self.LANES]

    def get_waypoint(self, location):
        samples = [lane.at(min(k * 0.5, lane.length)) for lane in self.LANES for k in range(int(lane.length * 2) + 2)]
        return min(samples, key=lambda waypoint: waypoint.transform.location.distance(location))


@pytest.mark.parametrize("road, expected", [(2, RoadOption.STRAIGHT), (3, RoadOption.RIGHT), (4, RoadOption.LEFT)])
def test_junction_crossings_are_labelled_straight_left_or_right_against_the_other_exits(road, expected):
    """CARLA's turn decision: STRAIGHT within 35 degrees of the entry heading, else LEFT / RIGHT by the exit's side
    relative to the junction's other exits (their entry-to-exit chords). The 40 degree bend of road 3 is the
    rightmost exit (straight road 2 and left-bending road 4 both lie to its left), so it is RIGHT; road 4 is LEFT."""
    pytest.importorskip("carla", reason="the planner module imports the carla client")
    from scenarios.carla_route_planner import GlobalRoutePlanner, TurnDecisions

    carla_map = _JunctionMap()
    lane = carla_map.LANES[road - 1]
    origin, destination = carla_map.LANES[0].at(0.0).transform.location, lane.at(lane.length).transform.location
    trace = GlobalRoutePlanner(carla_map).trace(origin, destination, TurnDecisions())
    options = {road_id: {option for waypoint, option in trace if waypoint.road_id == road_id} for road_id in (1, road)}
    assert options == {1: {RoadOption.LANEFOLLOW}, road: {expected}}


def test_a_route_gone_from_its_file_since_the_split_was_resolved_is_named(tmp_path):
    from scenarios.leaderboard import RouteFileError
    from scenarios.splits import SceneRef

    routes = tmp_path / "routes.xml"
    routes.write_text("<routes><route id='0' town='Town01'><waypoint x='1' y='2' z='0'/><waypoint x='90' y='2' z='0'/>"
                      "</route></routes>")
    ref = SceneRef("RouteScenario_5", "Town01", 0, route_file=routes, route_id="5", town_dir=tmp_path)
    with pytest.raises(RouteFileError, match="route 5 is not in the file any more"):
        ref.load()
