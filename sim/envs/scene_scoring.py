"""NAVSIM-style scoring of a scene's current frame: the metric cache (PDM-Closed reference, map, log-replayed
observation) built once per scene, then PDMS v1.1 or EPDMS v2.2 for any trajectory.

The cache reads only what a NAVSIM log holds (`scenarios.log_frames`): the 2 Hz frames, objects
interpolated between them, and the logged ego state, as NAVSIM's metric cache does. NAVSIM's metric caching plans
a log's tokens in turn with one PDM-Closed planner, which keeps what the ego overlapped at each earlier token's
current frame and leaves it out of later plans; a scene of a NAVSIM split names its earlier windows
(`scenarios.splits.EARLIER_WINDOWS_KEY`), and its cache carries their tokens in the same way.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from agents.human import logged_poses
from agents.navsim_pdm_closed import NavsimPDMClosedConfig, NavsimPDMClosedPlanner
from metrics.observation import Observation, red_mask_from_2hz
from metrics.pdm import OBSERVATION_STEPS, VERSIONS, PDMRows, ScoringContext, final_score
from metrics.pdm_agent import PDMReference, score_agent
from scenarios.log_frames import FRAME_STRIDE, interpolate_tracks, window_steps
from scenarios.navsim_logs import load_log_scene
from scenarios.splits import EARLIER_WINDOWS_KEY
from sim.scene import STEP_S, Scene
from sim.state import TrafficLightStatus, TrajectorySampling
from sim.world_view import WorldView

HISTORY_FRAMES = 4  # v2.2 history comfort: the logged frames at -1.5, -1.0, -0.5 and 0 s
HUMAN_SAMPLING = TrajectorySampling(num_poses=8, interval=0.5)  # the logged future the v2.2 human filter scores


class SceneScorer:
    """The metric cache of one scene's current frame, and the scorer over it."""

    def __init__(self, scene: Scene, version: str = "v1.1", human_filter: bool = True):
        """`human_filter` (v2.2): NAVSIM's human penalty filter, on by default as in NAVSIM's scorer config: a
        column the logged human trajectory scores 0 on is set to 1 for the agent."""
        if version not in VERSIONS:
            raise ValueError(f"unknown PDM score version {version!r}; expected one of {VERSIONS}")
        self.scene, self.version = scene, version
        world = WorldView.from_log(scene)  # the metric cache reads what the log holds
        planner = NavsimPDMClosedPlanner(NavsimPDMClosedConfig(version=version))
        self.carried_collided = carried_collided(scene)
        self.pdm_closed = planner.plan_view(world, scene.metadata.get("route_roadblocks"), self.carried_collided)
        self.reference = PDMReference.from_global_poses(world.ego_state, self.pdm_closed.poses)
        self.human_poses = None
        if version == "v2.2" and human_filter:
            self.human_poses = logged_poses(scene.ego_log, scene.current_index, world.ego_state, HUMAN_SAMPLING)
        # Same map, route lanes and centerline PDM-Closed was ranked on; the objects are the log's, not a forecast.
        plan = self.pdm_closed
        history = self._history() if version == "v2.2" else None
        self.context = ScoringContext(plan.scoring_map, self._observation(plan.route_lane_ids), plan.centerline.poses,
                                      history)

    def _history(self) -> np.ndarray | None:
        """v2.2 history comfort's past states, from the logged frames of the last 1.5 s (None without history)."""
        scene, now = self.scene, self.scene.current_index
        steps = now - FRAME_STRIDE * np.arange(HISTORY_FRAMES - 1, -1, -1)
        steps = steps[steps >= 0]
        if len(steps) < 2:
            return None
        past = np.zeros((len(steps), 8))
        past[:, :7] = scene.ego_log[steps, :7]
        past[:, 7] = np.round((steps - now) * STEP_S * 1e6)
        return ScoringContext.history_from_past_states(past)

    def _observation(self, route_lanes: list[str]) -> Observation:
        """Log replay: every object's logged frames over the horizon, interpolated to 10 Hz (spec §3.5)."""
        scene, steps = self.scene, OBSERVATION_STEPS[self.version]
        frames = window_steps(scene.current_index, (steps - 1) // FRAME_STRIDE + 1, scene.num_steps)
        tracks = scene.agents
        logged = {name: getattr(tracks, name)[frames] for name in ("x", "y", "heading", "vx", "vy")}
        values, valid = interpolate_tracks(logged, tracks.valid[frames], hold_single=True)
        observation = Observation(values["x"], values["y"], values["heading"], values["vx"], values["vy"], valid,
                                  tracks.length, tracks.width, tracks.agent_type, list(tracks.track_ids))
        if self.version == "v1.1":
            return observation
        # v2.2 traffic-light compliance: the route's connectors, red where the log's frame says so.
        lanes = [lane for lane in route_lanes if scene.map.lane(lane).traffic_light in scene.light_ids]
        if not lanes:
            return observation
        columns = [scene.light_ids.index(scene.map.lane(lane).traffic_light) for lane in lanes]
        red = red_mask_from_2hz(scene.light_status[frames][:, columns] == TrafficLightStatus.RED, steps)
        polygons = [scene.map.lane_polygons[scene.map.lane_index[lane]] for lane in lanes]
        return observation.with_red_lights(lanes, polygons, red)

    def score(self, local_poses, interval: float) -> tuple[PDMRows, float]:
        """The agent's row (or a failed row with its reason) and its reported score (0 for a failed row)."""
        rows = score_agent(local_poses, interval, self.reference, self.context, self.version, self.human_poses,
                           HUMAN_SAMPLING.interval)
        score = float(final_score(rows)[0]) if rows.valid[0] else 0.0
        return rows, score


def carried_collided(scene: Scene) -> frozenset[str]:
    """The tokens NAVSIM's caching planner holds when it reaches this scene: what the ego overlapped at the current
    frames of the log's earlier windows in the split (none for a scene that names none)."""
    earlier = scene.metadata.get(EARLIER_WINDOWS_KEY)
    if not earlier:
        return frozenset()
    log = Path(earlier["log"])
    if not log.is_file():  # e.g. a scene file saved from a NAVSIM split, read where its log is not
        raise ValueError(f"scene {scene.token}: its metric cache needs the earlier tokens of NAVSIM log {log} "
                         f"(metadata {EARLIER_WINDOWS_KEY!r}), and that file is not there")
    mtime_ns = log.stat().st_mtime_ns
    return frozenset().union(*(_collided_at(str(log), mtime_ns, str(earlier["nuplan_maps"]), int(start))
                               for start in earlier["starts"]))


@lru_cache(maxsize=4096)  # a log's windows are asked for again by each of its later scenes
def _collided_at(log: str, mtime_ns: int, nuplan_maps: str, start: int) -> frozenset[str]:
    scene = load_log_scene(log, start, nuplan_maps)
    return NavsimPDMClosedPlanner().collided_now(WorldView.from_log(scene), scene.metadata.get("route_roadblocks"))

