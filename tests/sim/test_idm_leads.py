"""IDM lane leads for many agents (issue 15: 5,000 agents took 113 s in `scenes check`): the sorted-lane search gives
bit for bit the (N, N) search's leads, ties included, at a cost that follows nearby pairs instead of N^2."""
import dataclasses
import time

import numpy as np
import pytest

from scenarios.generator import generate_scene
from sim.state import TrafficLightStatus
from sim.traffic import AgentPaths, IDMParameters, IDMTraffic


def random_traffic(family: str, count: int, seed: int, dense: bool, duplicates: int = 0) -> IDMTraffic:
    """`count` agents on random lane chains of a generated map (random starts, speeds and lengths); the last
    `duplicates` copy earlier agents exactly (same path, place and size: equal gaps to break ties on)."""
    scene = generate_scene(family, 0)
    road_map = scene.map
    rng = np.random.default_rng(seed)
    chains, s = [], []
    for _ in range(count - duplicates):
        chain = [road_map.lanes[rng.integers(len(road_map.lanes))].id]
        while len(chain) < 4 and road_map.lane(chain[-1]).successors:
            successors = road_map.lane(chain[-1]).successors
            chain.append(successors[rng.integers(len(successors))])
        chains.append(chain)
        s.append(rng.uniform(0.0, road_map.lane(chain[0]).length))
    copies = rng.integers(0, count - duplicates, duplicates)
    chains += [chains[k] for k in copies]
    s = np.array(s + [s[k] for k in copies])
    length = rng.uniform(2.0, 12.0, count - duplicates)
    length = np.concatenate([length, length[copies]])
    params = IDMParameters(dense_lead_search_max=10**9 if dense else 0)
    return IDMTraffic(road_map, AgentPaths.build(road_map, chains), s=s, v=rng.uniform(0.0, 15.0, count),
                      desired_speed=rng.uniform(5.0, 15.0, count), length=length, width=np.full(count, 2.0),
                      light_ids=list(scene.light_ids), params=params)


@pytest.mark.parametrize("family, seed", [("intersection", 0), ("merge", 1), ("t_junction", 2)])
def test_sparse_search_matches_the_dense_one_bit_for_bit(family, seed):
    dense = random_traffic(family, 140, seed, dense=True, duplicates=12)
    sparse = random_traffic(family, 140, seed, dense=False, duplicates=12)
    assert dense._dense_leads and not sparse._dense_leads
    rng = np.random.default_rng(seed)
    statuses = rng.integers(0, len(TrafficLightStatus), (60, len(dense.light_ids))).astype(np.int8)
    found = 0
    for step in range(60):
        lane_now = dense.paths.lane_at(dense.s)
        gap_d, v_d = dense._lane_leads(lane_now)
        gap_s, v_s = sparse._lane_leads(lane_now)
        assert np.array_equal(gap_d, gap_s) and np.array_equal(v_d, v_s), step
        found += int(np.isfinite(gap_d).sum())
        dense.step(0.1, light_status=statuses[step])
        sparse.step(0.1, light_status=statuses[step])
        assert np.array_equal(dense.s, sparse.s) and np.array_equal(dense.v, sparse.v), step
        assert np.array_equal(dense.active, sparse.active)
    assert found > 60 * 20  # the comparison is about agents that do have leads


def test_five_thousand_agents_search_quickly():
    traffic = random_traffic("intersection", 5000, 3, dense=False)
    lane_now = traffic.paths.lane_at(traffic.s)
    start = time.perf_counter()
    for _ in range(5):
        gap, v_lead = traffic._lane_leads(lane_now)
    elapsed = (time.perf_counter() - start) / 5
    assert np.isfinite(gap).sum() > 4000 and (v_lead >= 0).all()
    # The (N, N) search needs ~1.5 s and 200 MB per call here; the sorted one ~20 ms (a loaded machine: 50x that).
    assert elapsed < 1.0, elapsed
    assert not hasattr(traffic, "_half_length_sum")  # no (N, N) matrix is ever built


def test_small_traffic_keeps_the_dense_search():
    traffic = random_traffic("merge", 30, 0, dense=False)
    small = dataclasses.replace(traffic.params, dense_lead_search_max=64)
    assert IDMTraffic(traffic.road_map, traffic.paths, s=traffic.s, v=traffic.v, desired_speed=traffic.desired_speed,
                      length=traffic.length, width=traffic.width, params=small)._dense_leads
