"""NAVSIM's own PDMS / EPDMS per token for constant velocity, human and NAVSIM's PDM-Closed: run by a reference venv's python.

Standalone (never imported by w0sim's tests): it needs NAVSIM (one tag) and nuplan-devkit, installed by
`scripts/navsim_reference_env.sh`. It only calls their public APIs, as NAVSIM's metric caching and
`run_pdm_score` scripts do:

    python tests/reference/navsim_harness.py LOGS MAPS v1.1 OUT.json [--scene-filter YAML] [--tokens T1,T2]
        [--no-human-filter]

For every scene of SceneLoader(LOGS, SceneFilter(4 history, 10 future frames, has_route=True; frame interval, logs
and tokens from the scene filter YAML `w0sim scenes export-navsim` writes, if given)): NAVSIM's metric
cache (one MetricCacheProcessor on each NavSimScenario in the loader's order, as NAVSIM's `cache_scenarios` runs a
worker's logs: its PDM-Closed planner keeps what the ego overlapped at earlier tokens), then `pdm_score` of
ConstantVelocityAgent, HumanAgent and the
cache's PDM-Closed trajectory (40 poses at 0.1 s in the ego frame, as NAVSIM's Trajectory holds them; the poses
are written out so that w0sim scores the very same ones). v2.2 adds NAVSIM's one-stage two-frame extended
comfort and final score. OUT.json: {"version", "tokens": {token: {"scores": {agent: {column: value}},
"pdm_closed_poses", "pdm_closed_interval", "seconds": {...}}}, "errors": {token: text}, "error": text or null}.
"""
from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import pickle
import sys
import tempfile
import time
import traceback
from pathlib import Path

V11_COLUMNS = ("no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound",
               "comfort", "driving_direction_compliance", "score")
V22_COLUMNS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
               "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
               "history_comfort", "two_frame_extended_comfort", "score")
AGENTS = ("constant_velocity", "human", "pdm_closed")
PDM_CLOSED_POSES, PDM_CLOSED_INTERVAL = 40, 0.1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logs", type=Path, help="folder of NAVSIM log pickles")
    parser.add_argument("maps", type=Path, help="nuPlan maps root (nuplan-maps-v1.0.json, <location>/<version>/map.gpkg)")
    parser.add_argument("version", choices=("v1.1", "v2.2"), help="the NAVSIM tag this python has installed")
    parser.add_argument("out", type=Path, help="JSON to write")
    parser.add_argument("--scene-filter", type=Path, default=None,
                        help="a scene filter YAML (NAVSIM's SceneFilter fields): its frame_interval, log_names, tokens")
    parser.add_argument("--tokens", default=None, help="comma-separated tokens (default: every scene)")
    parser.add_argument("--human-filter", action=argparse.BooleanOptionalAction, default=True,
                        help="v2.2: NAVSIM's human penalty filter (on in NAVSIM's pdm_scorer.yaml)")
    return parser.parse_args(argv)


def number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["NUPLAN_MAPS_ROOT"] = str(args.maps.resolve())
    result = {"version": args.version, "human_filter": args.human_filter if args.version == "v2.2" else None,
              "tokens": {}, "errors": {}, "error": None}
    try:
        run(args, result)
    except Exception:  # loading failed before any token: say so in the JSON, the suite prints it
        result["error"] = traceback.format_exc()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{len(result['tokens'])} tokens scored, {len(result['errors'])} failed"
          + (f"; ERROR: {result['error'].strip().splitlines()[-1]}" if result["error"] else ""), file=sys.stderr)
    return 1 if result["error"] else 0


def run(args: argparse.Namespace, result: dict) -> None:
    import navsim.common.dataclasses as navsim_dataclasses

    navsim_dataclasses.NUPLAN_MAPS_ROOT = os.environ["NUPLAN_MAPS_ROOT"]  # read at import (spec: reference_suites.md)
    import numpy as np
    from navsim.agents.constant_velocity_agent import ConstantVelocityAgent
    from navsim.agents.human_agent import HumanAgent
    from navsim.common.dataclasses import SceneFilter, SensorConfig, Trajectory
    from navsim.common.dataloader import SceneLoader
    from navsim.evaluate.pdm_score import pdm_score
    from navsim.planning.metric_caching.metric_cache_processor import MetricCacheProcessor
    from navsim.planning.scenario_builder.navsim_scenario import NavSimScenario
    from navsim.planning.simulation.planner.pdm_planner.scoring.pdm_scorer import PDMScorer, PDMScorerConfig
    from navsim.planning.simulation.planner.pdm_planner.simulation.pdm_simulator import PDMSimulator
    from nuplan.common.actor_state.state_representation import TimePoint
    from nuplan.common.geometry.convert import absolute_to_relative_poses
    from nuplan.planning.simulation.trajectory.trajectory_sampling import TrajectorySampling

    v22 = args.version == "v2.2"
    sampling = TrajectorySampling(num_poses=40, interval_length=0.1)  # default_scoring_parameters / default_common
    simulator = PDMSimulator(sampling)
    scorer = PDMScorer(sampling, PDMScorerConfig(human_penalty_filter=args.human_filter) if v22 else PDMScorerConfig())
    traffic = None
    if v22:  # the one-stage script's non-reactive default (log_replay_traffic_agents.yaml)
        from navsim.traffic_agents_policies.log_replay_traffic_agents import LogReplayTrafficAgents

        traffic = LogReplayTrafficAgents(sampling)
    selection = {}
    if args.scene_filter is not None:
        import yaml

        fields = yaml.safe_load(args.scene_filter.read_text())
        selection = {k: fields.get(k) for k in ("frame_interval", "log_names", "tokens")}
    if args.tokens:
        selection["tokens"] = args.tokens.split(",")
    scene_filter = SceneFilter(num_history_frames=4, num_future_frames=10, has_route=True, **selection)
    sensors = SensorConfig.build_no_sensors()
    if v22:
        loader = SceneLoader(data_path=args.logs, original_sensor_path=None, scene_filter=scene_filter, sensor_config=sensors)
    else:
        loader = SceneLoader(data_path=args.logs, sensor_blobs_path=None, scene_filter=scene_filter, sensor_config=sensors)
    agents = {"constant_velocity": ConstantVelocityAgent(), "human": HumanAgent()}
    for agent in agents.values():
        agent.initialize()
    cache_dir = Path(tempfile.mkdtemp(prefix="navsim_metric_cache_"))
    # One processor for every token, as `cache_scenarios` makes one per worker for the tokens of its logs.
    processor = MetricCacheProcessor(str(cache_dir), True, sampling) if v22 else MetricCacheProcessor(str(cache_dir), True)
    rows_v22 = {name: [] for name in AGENTS}
    for token in loader.tokens:
        try:
            seconds = {}
            start = time.perf_counter()
            scene = loader.get_scene_from_token(token)
            scenario = NavSimScenario(scene, map_root=os.environ["NUPLAN_MAPS_ROOT"], map_version="nuplan-maps-v1.0")
            if v22:
                cache = processor.compute_metric_cache(scenario)
            else:  # v1.1 writes the cache (an lzma pickle) and returns its path
                entry = processor.compute_metric_cache(scenario)
                with lzma.open(entry.file_name, "rb") as f:
                    cache = pickle.load(f)
            seconds["metric_cache"] = time.perf_counter() - start
            # NAVSIM's PDM-Closed: the cached (global) trajectory in the ego frame, 40 poses at 0.1 s.
            t0 = cache.ego_state.time_point.time_us
            states = [cache.trajectory.get_state_at_time(TimePoint(t0 + int(round((i + 1) * PDM_CLOSED_INTERVAL * 1e6))))
                      for i in range(PDM_CLOSED_POSES)]
            local = absolute_to_relative_poses([cache.ego_state.rear_axle] + [s.rear_axle for s in states])[1:]
            poses = np.array([[p.x, p.y, p.heading] for p in local], dtype=np.float32)
            trajectories = {
                "constant_velocity": agents["constant_velocity"].compute_trajectory(loader.get_agent_input_from_token(token)),
                "human": agents["human"].compute_trajectory(loader.get_agent_input_from_token(token), scene),
                "pdm_closed": Trajectory(poses, TrajectorySampling(num_poses=PDM_CLOSED_POSES,
                                                                   interval_length=PDM_CLOSED_INTERVAL)),
            }
            entry = {"scores": {}, "pdm_closed_poses": poses.astype(float).tolist(),
                     "pdm_closed_interval": PDM_CLOSED_INTERVAL, "seconds": seconds}
            token_rows = {}
            for name, trajectory in trajectories.items():
                start = time.perf_counter()
                if v22:
                    row, simulated = pdm_score(cache, trajectory, sampling, simulator, scorer, traffic)
                    row["valid"], row["token"], row["log_name"] = True, token, cache.log_name
                    row["frame_type"], row["start_time"] = cache.scene_type, cache.timepoint.time_s
                    row["ego_simulated_states"] = [simulated]
                    token_rows[name] = row
                else:
                    scores = pdm_score(cache, trajectory, sampling, simulator, scorer)
                    entry["scores"][name] = {c: number(getattr(scores, c)) for c in V11_COLUMNS}
                seconds[name] = time.perf_counter() - start
            result["tokens"][token] = entry
            for name, row in token_rows.items():  # v2.2: scored by every agent, aggregated below
                rows_v22[name].append(row)
        except Exception:
            result["errors"][token] = traceback.format_exc()
    if v22:
        finish_v22(rows_v22, sampling, result)


def finish_v22(rows: dict, sampling, result: dict) -> None:
    """NAVSIM's one-stage aggregation per agent: the two-frame extended comfort of adjacent frames, then the score."""
    import pandas as pd
    from navsim.planning.script.run_pdm_score_one_stage import (
        compute_final_scores,
        create_scene_aggregators,
        infer_start_adjacent_mapping,
    )

    for name, agent_rows in rows.items():
        if not agent_rows:
            continue
        start = time.perf_counter()
        frame = pd.concat(agent_rows)
        mapping = infer_start_adjacent_mapping(frame)
        if mapping:
            frame = create_scene_aggregators(mapping, frame, sampling)
        else:  # no two adjacent frames (one scene per log): NAVSIM's concat of no updates raises; EC stays NaN
            frame = frame.assign(two_frame_extended_comfort=float("nan")).drop(columns=["ego_simulated_states"])
        frame = compute_final_scores(frame)
        seconds = (time.perf_counter() - start) / len(frame)
        for _, row in frame.iterrows():
            entry = result["tokens"][row["token"]]
            entry["scores"][name] = {c: number(row[c]) for c in V22_COLUMNS}
            entry["seconds"][name] += seconds


if __name__ == "__main__":
    sys.exit(main())
