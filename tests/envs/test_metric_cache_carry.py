"""NAVSIM's metric caching plans a log's tokens in turn with one PDM-Closed planner that keeps the tokens the ego
overlapped at earlier tokens: a scene of a NAVSIM split carries its earlier windows' overlaps into its cache."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.navsim_pdm_closed import NavsimPDMClosedPlanner
from scenarios.navsim_log_writer import NavsimExport
from scenarios.splits import EARLIER_WINDOWS_KEY, navsim_split
from sim.envs.scene_scoring import SceneScorer, carried_collided
from sim.world_view import WorldView
from tests.ghost_scene import AHEAD_M, FRONT_OVERHANG, GHOST, ghost_scene


@pytest.fixture(scope="module")
def log_split(tmp_path_factory):
    """The ghost scene's log; windows every frame (0.5 s apart): the first's current frame is the scene's."""
    root = tmp_path_factory.mktemp("carry")
    with NavsimExport(root / "logs", root / "maps") as writer:
        writer.add(ghost_scene())
    (root / "every_frame.yaml").write_text("frame_interval: 1\n")
    refs = navsim_split("carry", root / "logs", root / "maps", scene_filter=root / "every_frame.yaml")
    return {"refs": refs, "ghost": GHOST}  # the log's w0sim key keeps the track ids (NAVSIM reads hex tokens)


def test_a_log_window_names_the_splits_earlier_windows_of_its_log(log_split):
    refs = log_split["refs"]
    assert len(refs) > 2 and len({ref.navsim_log for ref in refs}) == 1
    assert [ref.earlier_windows for ref in refs[:3]] == [(), (refs[0].window_start,),
                                                        (refs[0].window_start, refs[1].window_start)]
    assert EARLIER_WINDOWS_KEY not in refs[0].load().metadata
    assert refs[2].load().metadata[EARLIER_WINDOWS_KEY]["starts"] == [refs[0].window_start, refs[1].window_start]


def test_what_the_ego_overlapped_at_an_earlier_token_is_left_out_of_pdm_closed_later(log_split):
    first, second = (ref.load() for ref in log_split["refs"][:2])
    ghost = log_split["ghost"]
    assert carried_collided(first) == frozenset()
    assert ghost in NavsimPDMClosedPlanner().collided_now(WorldView.from_log(first), first.metadata["route_roadblocks"])
    scorer = SceneScorer(second)
    assert scorer.carried_collided == {ghost}

    world = WorldView.from_log(second)
    roadblocks = second.metadata["route_roadblocks"]
    fresh = NavsimPDMClosedPlanner().plan_view(world, roadblocks)
    keep = [k for k, token in enumerate(world.agents.track_ids) if token != ghost]
    agents = world.agents
    without = replace(agents, **{name: getattr(agents, name)[keep] for name in
                                 ("x", "y", "heading", "vx", "vy", "valid", "length", "width", "height", "agent_type")},
                      track_ids=[agents.track_ids[k] for k in keep])
    ghost_free = NavsimPDMClosedPlanner().plan_view(replace(world, agents=without), roadblocks)
    # A fresh planner stops short of the stopped car; the caching planner drives as if it were not there.
    travelled = lambda plan: float(np.hypot(*(plan.poses[-1, :2] - plan.poses[0, :2])))  # noqa: E731
    assert travelled(fresh) < AHEAD_M - FRONT_OVERHANG
    np.testing.assert_array_equal(scorer.pdm_closed.poses, ghost_free.poses)
    assert travelled(scorer.pdm_closed) > travelled(fresh) + 5.0


def test_a_scene_whose_earlier_log_is_gone_is_refused_naming_the_log(log_split, tmp_path):
    second = log_split["refs"][1].load()
    moved = {**second.metadata[EARLIER_WINDOWS_KEY], "log": str(tmp_path / "gone.pkl")}
    with pytest.raises(ValueError, match="gone.pkl.*not there"):
        SceneScorer(replace(second, metadata={**second.metadata, EARLIER_WINDOWS_KEY: moved}))
