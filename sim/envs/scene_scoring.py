"""NAVSIM-style scoring of a scene's current frame: the metric cache (PDM-Closed reference, map, log-replayed
observation) built once per scene, then PDMS v1.1 or EPDMS v2.2 for any trajectory."""
from __future__ import annotations

import numpy as np

from agents.forecast import braking_rates
from agents.pdm_closed import PDMClosedConfig, PDMClosedPlanner
from agents.pdm_proposals import route_from_ego
from metrics.observation import Observation
from metrics.pdm import OBSERVATION_STEPS, VERSIONS, PDMRows, ScoringContext, final_score
from metrics.pdm_agent import PDMReference, score_agent
from scenarios.scene import Scene
from sim.state import TrafficLightStatus

HISTORY_STEPS = 15  # v2.2 history comfort looks 1.5 s back


class SceneScorer:
    """The metric cache of one scene's current frame, and the scorer over it."""

    def __init__(self, scene: Scene, version: str = "v1.1"):
        if version not in VERSIONS:
            raise ValueError(f"unknown PDM score version {version!r}; expected one of {VERSIONS}")
        self.scene, self.version = scene, version
        now, ego = scene.current_index, scene.initial_ego_state
        planner = PDMClosedPlanner(PDMClosedConfig(version=version))
        self.pdm_closed = planner.plan(scene.map, scene.route, ego, scene.agents.at(now), scene.light_ids,
                                       scene.light_status[now], braking_rates(scene.agents, now))
        self.reference = PDMReference.from_global_poses(ego, self.pdm_closed.poses)
        chain = route_from_ego(scene.map, scene.route, ego)
        # Same map and centerline PDM-Closed was ranked on; the objects are the log's, not a forecast.
        planned = self.pdm_closed.context
        history = scene.ego_log[max(now - HISTORY_STEPS, 0) : now] if version == "v2.2" else None
        self.context = ScoringContext(planned.scoring_map, self._observation(chain), planned.centerline_xy, history)

    def _observation(self, chain: list[str]) -> Observation:
        """The logged future of every object (log replay), padded with its last frame if the log is short."""
        scene, steps = self.scene, OBSERVATION_STEPS[self.version]
        frames = np.minimum(scene.current_index + np.arange(steps), scene.num_steps - 1)
        tracks = scene.agents
        observation = Observation(tracks.x[frames], tracks.y[frames], tracks.heading[frames], tracks.vx[frames],
                                  tracks.vy[frames], tracks.valid[frames], tracks.length, tracks.width,
                                  tracks.agent_type, list(tracks.track_ids))
        if self.version == "v1.1":
            return observation
        # v2.2 traffic-light compliance: the route's connectors, red where the log says so.
        lanes = [lane for lane in chain if scene.map.lane(lane).traffic_light in scene.light_ids]
        if not lanes:
            return observation
        columns = [scene.light_ids.index(scene.map.lane(lane).traffic_light) for lane in lanes]
        red = scene.light_status[frames][:, columns] == TrafficLightStatus.RED
        polygons = [scene.map.lane_polygons[scene.map.lane_index[lane]] for lane in lanes]
        return observation.with_red_lights(lanes, polygons, red)

    def score(self, local_poses, interval: float) -> tuple[PDMRows, float]:
        """The agent's row (or a failed row with its reason) and its reported score (0 for a failed row)."""
        rows = score_agent(local_poses, interval, self.reference, self.context, self.version)
        score = float(final_score(rows)[0]) if rows.valid[0] else 0.0
        return rows, score
