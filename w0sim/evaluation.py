"""`w0sim eval` as a function: an agent on a split, one-shot or closed loop, with its summary and rollout videos."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agents.base import AgentError, WorldModelAgent
from agents.registry import AgentSpec
from scenarios.splits import resolve_split, split_kind
from sim.envs.backends.carla.settings import CarlaSettings
from w0sim.latency import check_plan_delay, latency_markdown
from w0sim.runner import RunError, atomic_write, check_workers, output_folder, read_rows


@dataclass
class Evaluation:
    """What a run produced: the summary (markdown, also in summary.md), the scores file, the failed scenes or routes
    (token and a one-line reason), how many scenes or routes the run has (`total`, counted in `unit`) and the
    rollout videos."""

    summary: str
    scores_file: Path
    failures: list[tuple[str, str]]
    videos: list[Path] = field(default_factory=list)
    total: int = 0
    unit: str = "scenes"


def evaluate(split: str, spec: AgentSpec, out_dir: str | Path, *, closed_loop: bool | None = None,
             pdm_version: str = "v1.1", limit: int | None = None, workers: int | None = None,
             ray_address: str | None = None, split_options: dict | None = None, videos: int = 0,
             progress: Callable[[int, int], None] | None = None, human_filter: bool = True,
             repetitions: int = 1, plan_delay_s: float = 0.0, carla: CarlaSettings | None = None) -> Evaluation:
    """Evaluate `spec` on the first `limit` scenes of `split`: closed loop (Leaderboard results.json) or one-shot
    (NAVSIM scores.csv), by default as `split_kind` says; `videos`: rollout videos of the first K scenes (one-shot,
    agents with a world model); `human_filter`: NAVSIM's v2.2 human penalty filter (on, as NAVSIM's default);
    `repetitions`: closed loop, each route driven that many times (`route_plan`); `plan_delay_s`: closed loop, each
    plan driven that long after its decision (`w0sim.latency.PlanDelay`); `carla`: closed loop, the routes driven on
    that CARLA server (`sim.envs.backends.carla.settings.CarlaSettings`). The summary ends with the policy's time
    per decision (`latency_markdown`). An interrupted run resumes where
    it stopped; a closed-loop run also resumes from a Leaderboard results.json in `out_dir` (`results_to_adopt`).
    `out_dir` is locked for the run and records its manifest: a folder of a run with other settings (agent,
    checkpoint, split, version, options) is refused with a RunError naming each difference; a different `limit`
    or `repetitions` resumes it (finished scenes are reused by id)."""
    from w0sim.one_shot import check_version

    out_dir = Path(out_dir)
    split_options = split_options or {}
    check_version(pdm_version)
    check_workers(workers)
    if limit is not None and limit < 1:
        raise RunError(f"--limit must be at least 1, got {limit}")
    check_split_options(split, split_options)
    closed_loop = split_kind(split) == "closed_loop" if closed_loop is None else closed_loop
    if repetitions < 1:
        raise RunError(f"--repetitions must be at least 1, got {repetitions}")
    if repetitions != 1 and not closed_loop:
        raise RunError(f"--repetitions {repetitions}: repetitions are closed-loop route runs, and {split} is scored "
                       "one-shot here (use a closed-loop split or --closed-loop)")
    if plan_delay_s and not closed_loop:
        raise RunError(f"--plan-delay {plan_delay_s:g}: a plan delay applies to closed-loop routes; {split} is scored "
                       "one-shot here (one decision per scene)")
    check_plan_delay(plan_delay_s)
    if carla is not None and not closed_loop:
        raise RunError(f"--backend carla drives closed-loop routes; {split} is scored one-shot here (NAVSIM's "
                       "non-reactive scoring needs no simulator)")
    if videos < 0:
        raise RunError(f"--videos must be at least 0, got {videos}")
    if videos:
        if closed_loop:
            raise AgentError("--videos renders one-shot rollouts; it does not apply to a closed-loop run")
        if not isinstance(spec.build(), WorldModelAgent):
            raise AgentError(f"--videos needs an agent with a world model; {spec.name} has none")
    if closed_loop:
        from w0sim.closed_loop import (
            check_carla_run,
            check_carla_server,
            closed_loop_manifest,
            evaluate_routes,
            route_failures,
            route_plan,
            routes_markdown,
        )

        if carla is not None:  # before the output folder is made: a run that cannot start writes nothing
            check_carla_run(workers, ray_address)
            check_carla_server(carla)
        plan = route_plan(split, limit, repetitions, split_options)
        manifest = closed_loop_manifest(spec, split, limit, repetitions, split_options, plan_delay_s=plan_delay_s,
                                        carla=carla)
        with output_folder(out_dir, manifest):
            results = evaluate_routes(split, spec, out_dir, limit, workers, progress, split_options, ray_address,
                                      repetitions, plan_delay_s, carla)
            families = {ref.token: ref.family or "scene files" for ref in plan}
            rows = read_rows(out_dir / "rows.jsonl")
            text = routes_markdown(results, spec.name, split, families) + _latency(
                [rows.get(ref.token, {}) for ref in plan])
            atomic_write(out_dir / "summary.md", text)
            failures = route_failures(out_dir, plan)
        return Evaluation(text, out_dir / "results.json", failures, [], len(plan), "routes")

    from w0sim.one_shot import evaluate_split, one_shot_manifest, summarize, summary_markdown

    with output_folder(out_dir, one_shot_manifest(spec, split, pdm_version, limit, human_filter, split_options)):
        rows = evaluate_split(split, spec, out_dir, pdm_version, limit, workers, progress, ray_address, split_options,
                              human_filter)
        text = summary_markdown(summarize(rows), spec.name, split, pdm_version) + _latency(rows)
        atomic_write(out_dir / "summary.md", text)
        failures = [(row["token"], row["reason"]) for row in rows if not row["valid"]]
        made = (_rollout_videos(split, spec, out_dir, pdm_version, min(videos, limit or videos), split_options)
                if videos else [])
    return Evaluation(text, out_dir / "scores.csv", failures, made, len(rows), "scenes")


def _latency(rows: list[dict]) -> str:
    line = latency_markdown([row.get("latency") or {} for row in rows])
    return "\n" + line if line else ""


#: The split options and the splits they apply to.
SPLIT_OPTIONS = {"navsim_logs": "navsim:", "nuplan_maps": "navsim:", "sensor_blobs": "navsim:", "scene_filter": "navsim:",
                 "town_dir": "carla:"}


def check_split_options(split: str, split_options: dict) -> None:
    """A RunError for a split option given to a split it does not apply to (it would be ignored without a word)."""
    for name, value in split_options.items():
        applies = SPLIT_OPTIONS.get(name)
        if value is not None and applies is not None and not split.startswith(applies):
            raise RunError(f"--{name.replace('_', '-')} applies to {applies}NAME splits only, not to {split!r}")


def _rollout_videos(split: str, spec: AgentSpec, out_dir: Path, pdm_version: str, count: int,
                    split_options: dict) -> list[Path]:
    from w0sim.rollout_video import render_rollout
    from w0sim.runner import initialized

    agent = initialized(spec.build())  # one torch thread, as the workers that scored the scenes: the same plan
    return [render_rollout(agent, ref.load(), out_dir / "videos" / f"{ref.token}.mp4", pdm_version,
                           spec.options.seed).video
            for ref in resolve_split(split, count, **split_options)]


__all__ = ["SPLIT_OPTIONS", "Evaluation", "check_split_options", "evaluate"]
