"""CARLA's route-planner algorithm: the A* search against networkx's (which CARLA's planner calls) on graphs full of
equal-cost paths, and the graph's lane-change edges and turn labels on a real town."""
from __future__ import annotations

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


def test_a_route_gone_from_its_file_since_the_split_was_resolved_is_named(tmp_path):
    from scenarios.leaderboard import RouteFileError
    from scenarios.splits import SceneRef

    routes = tmp_path / "routes.xml"
    routes.write_text("<routes><route id='0' town='Town01'><waypoint x='1' y='2' z='0'/><waypoint x='90' y='2' z='0'/>"
                      "</route></routes>")
    ref = SceneRef("RouteScenario_5", "Town01", 0, route_file=routes, route_id="5", town_dir=tmp_path)
    with pytest.raises(RouteFileError, match="route 5 is not in the file any more"):
        ref.load()
