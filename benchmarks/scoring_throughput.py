"""Scoring time per scene on one core: one agent trajectory with a cached PDM-Closed reference, and the full
pipeline (running PDM-Closed first), on the golden scene and on a generated intersection with 50 agents; and the
same intersection exported as a NAVSIM log and scored at every 2 Hz frame (7 windows) in log order, as a `navsim:`
split scores it: each window's cache carries what the ego overlapped at the log's earlier windows, each of which is
loaded and checked once (`navsim_log_ms_per_window`), beside the same windows with that carry-over taken out
(`navsim_log_ms_per_window_no_carry`).

Prints progress to stderr, then one JSON object on the last stdout line (milliseconds, medians).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from agents.navsim_pdm_closed import NavsimPDMClosedPlanner
from metrics.golden_scene import golden_objects, golden_road_map, initial_state, pdm_reference, scoring_context
from metrics.pdm_agent import PDMReference, score_agent
from scenarios.generator import GeneratorConfig, generate_scene
from scenarios.navsim_log_writer import NavsimExport
from scenarios.splits import EARLIER_WINDOWS_KEY, navsim_split
from sim.envs import scene_scoring
from sim.envs.scene_scoring import SceneScorer
from sim.world_view import WorldView

SHARED = Path(os.environ.get("W0SIM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
GOLDEN = SHARED / "fixtures/navsim_golden/golden_v1_1.json"
AGENT_POSES = np.stack([np.arange(1, 9) * 0.5 * 10.0, np.zeros(8), np.zeros(8)], -1)  # 10 m/s straight


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_ms(run, repeats: int = 60) -> float:
    run()  # warm caches (sample grids, tracker tables)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 3)


def main() -> None:
    result = {}
    if GOLDEN.exists():
        golden = json.loads(GOLDEN.read_text())
        scene = golden["scene"]
        context, reference = scoring_context(golden), pdm_reference(golden)
        result["golden_cached_ms_per_scene"] = median_ms(lambda: score_agent(AGENT_POSES, 0.5, reference, context))
        road_map, objects, ego = golden_road_map(scene), golden_objects(scene), initial_state(scene)
        route = ["2001", "3001", "2011"]  # the route lanes the ego drives through

        def full_golden() -> None:
            world = WorldView(road_map, route, ego, objects, None, 0.5, [], np.zeros(0, np.int8), ego[None], 0)
            plan = NavsimPDMClosedPlanner().plan_view(world)
            score_agent(AGENT_POSES, 0.5, PDMReference.from_global_poses(ego, plan.poses), context)

        result["golden_full_ms_per_scene"] = median_ms(full_golden, repeats=20)
    else:
        log(f"golden fixture {GOLDEN} is absent: golden figures skipped (set W0SIM_SHARED)")
    log(f"golden: {result}")
    busy = generate_scene("intersection", 11, GeneratorConfig(num_vehicles=50, warmup_s=0.0))
    scorer = SceneScorer(busy)
    result["intersection50_cached_ms_per_scene"] = median_ms(lambda: scorer.score(AGENT_POSES, 0.5))
    result["intersection50_full_ms_per_scene"] = median_ms(lambda: SceneScorer(busy).score(AGENT_POSES, 0.5), repeats=20)
    log(f"intersection with {busy.agents.num_tracks} tracks: {result}")
    result |= navsim_log_windows(busy)
    log(f"its NAVSIM log's windows: {result}")
    print(json.dumps(result))


def navsim_log_windows(scene) -> dict:
    """Per window, loading and scoring a log's windows in order, with and without the metric-cache carry-over."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with NavsimExport(root / "logs", root / "maps") as writer:
            writer.add(scene)
        (root / "every_frame.yaml").write_text("frame_interval: 1\n")
        refs = navsim_split("log", root / "logs", root / "maps", scene_filter=root / "every_frame.yaml")
        scenes = [ref.load() for ref in refs]
        alone = [replace(s, metadata={k: v for k, v in s.metadata.items() if k != EARLIER_WINDOWS_KEY}) for s in scenes]

        def in_order(windows) -> float:
            scene_scoring._collided_at.cache_clear()  # each earlier window is loaded and checked once per pass
            start = time.perf_counter()
            for window in windows:
                SceneScorer(window).score(AGENT_POSES, 0.5)
            return time.perf_counter() - start

        in_order(scenes), in_order(alone)  # warm caches
        # Passes alternate, so that a change in the machine's load falls on both alike.
        passes = [(in_order(scenes), in_order(alone)) for _ in range(20)]
        per_window = lambda times: round(1e3 * statistics.median(times) / len(scenes), 3)  # noqa: E731
        return {"navsim_log_windows": len(scenes), "navsim_log_ms_per_window": per_window([a for a, _ in passes]),
                "navsim_log_ms_per_window_no_carry": per_window([b for _, b in passes])}


if __name__ == "__main__":
    main()
