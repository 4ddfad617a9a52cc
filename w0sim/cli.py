"""The `w0sim` command line: evaluation, scoring, scenes, data collection, training, videos and experiments."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperCommand


class _Command(TyperCommand):
    """A command listed in its group's help with its docstring's whole first sentence (click cuts it to one line)."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=10_000)


class _Typer(typer.Typer):
    """Plain help (click's), not rich's: rich's option tables cut help text mid-word at 80 columns (pipes, CI logs),
    click wraps it whole."""

    def __init__(self, **kwargs):
        super().__init__(rich_markup_mode=None, no_args_is_help=True, **kwargs)

    def command(self, *args, **kwargs):
        return super().command(*args, cls=_Command, **kwargs)


app = _Typer(help="w0sim: closed-loop simulation and evaluation of end-to-end driving policies.", add_completion=False)
scenes_app = _Typer(help="Generate and inspect scene files.")
app.add_typer(scenes_app, name="scenes")
console = Console(emoji=False)  # "navsim:x:" in a message stays as it is


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console)


@contextlib.contextmanager
def _progress_report(description: str):
    """A `progress(done, total)` callback for a library function, whose bar appears at its first call (the total
    known): a run refused before it starts, or resumed with nothing left to do, shows no empty bar."""
    progress = _progress()
    task = None

    def report(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(description, total=total)
        progress.update(task, completed=done, total=total)

    try:
        yield report
    finally:
        if task is not None:  # stopping a bar never started prints an empty line
            progress.stop()


def _error(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


UNEXPECTED = "(an unexpected error, a w0sim bug"


def _clean_errors(command):
    """A command whose errors reach the user as one line and exit code 2, not as a traceback: the library's own
    errors (their messages say what and where), errors of the machine (files, memory, a worker process that died)
    and, as "unexpected" errors (a w0sim bug), anything else. W0SIM_TRACEBACK=1 lets the traceback through."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # usage errors and exits: typer's own
            raise
        except Exception as err:
            if os.environ.get("W0SIM_TRACEBACK"):
                raise
            _error(_error_line(err))
            raise typer.Exit(2) from None

    return wrapper


def _error_line(err: Exception) -> str:
    from concurrent.futures.process import BrokenProcessPool

    message = " ".join(str(err).split()) or "(no message)"
    if isinstance(err, BrokenProcessPool):
        return f"a worker process died: {message}"
    if isinstance(err, OSError):
        return f"{type(err).__name__}: {message}"
    if isinstance(err, MemoryError):
        return f"out of memory (MemoryError: {message})"
    if type(err).__module__.split(".")[0] in ("agents", "metrics", "policies", "scenarios", "sim", "training", "w0sim"):
        return message if str(err).strip() else f"{type(err).__name__}: {message}"  # w0sim's own errors
    return (f"{type(err).__name__}: {message} {UNEXPECTED}: please report it with the command; W0SIM_TRACEBACK=1 "
            "shows where it happened)")


SEED_MAX = 2**32 - 1


def _seed_option(default: int = 0, help: str = "Seed (0 to 2**32 - 1).") -> typer.Option:
    return typer.Option(default, "--seed", min=0, max=SEED_MAX, help=help)


def _backbone_lr_scale_option(default: float | None) -> typer.Option:
    """--backbone-lr-scale, as `train` and the scaling experiment take it."""
    return typer.Option(default, "--backbone-lr-scale", min=0.0, help="Stage 2: the backbone's learning rate as a "
                        "fraction of the expert's (default 1, as the official scripts; 0 freezes it, as the shipped "
                        "checkpoint and the published scaling runs were trained).")


def _check_workers(value):
    """--workers: 1 to `max_workers()` (4 per CPU core, at most 256); None: all cores."""
    return _workers_in_range(value, allow_zero=False)


def _check_workers_or_zero(value):
    """--workers: 0 (all cores) or 1 to `max_workers()`."""
    return _workers_in_range(value, allow_zero=True)


def _workers_in_range(value: Optional[int], allow_zero: bool) -> Optional[int]:
    from w0sim.runner import max_workers

    if value is None or (allow_zero and value == 0):
        return value
    if not 1 <= value <= max_workers():
        raise typer.BadParameter(f"{value} is not between 1 and {max_workers()} (4 per CPU core, at most 256; this "
                                 f"machine has {os.cpu_count()} cores)")
    return value


def _check_pdm_version(value):
    from metrics.pdm import VERSIONS

    if value not in VERSIONS:
        raise typer.BadParameter(f"{value!r} is not a PDM score version; choose one of {', '.join(VERSIONS)} "
                                 "(v1.1: PDMS, v2.2: EPDMS)")
    return value


def _check_out_folder(out: Path, option: str = "--out") -> None:
    """A usage error (exit 2) when an output folder option names an existing file."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; give a folder (new, or one to resume)", param_hint=option)


@scenes_app.command("generate")
@_clean_errors
def scenes_generate(
    count: int = typer.Option(..., "--count", min=1, max=1_000_000, help="Number of scenes."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    seed: int = _seed_option(help="Base seed, 0 to 2**32 - 1; scene i of a run uses seed*1000003 + i."),
    families: Optional[str] = typer.Option(None, "--families", help="Comma-separated families (default: all)."),
) -> None:
    """Generate COUNT scenes, cycling through the families, one .npz file each (existing files are kept)."""
    from scenarios.generator import FAMILIES, generate_scene, scene_specs
    from scenarios.scene import save_scene

    chosen = tuple(f.strip() for f in families.split(",")) if families else FAMILIES
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        raise typer.BadParameter(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}", param_hint="--families")
    _check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    with _progress() as progress:
        task = progress.add_task("generating scenes", total=count)
        for i, (family, scene_seed) in enumerate(scene_specs(count, seed, chosen)):
            path = out / f"{i:05d}_{family}_{scene_seed}.npz"
            if path.exists():  # resuming an interrupted run
                skipped += 1
            else:
                save_scene(generate_scene(family, scene_seed), path)
                written += 1
            progress.advance(task)
    console.print(f"wrote {written} scenes to {out}" + (f" ({skipped} already there)" if skipped else ""))


@scenes_app.command("show")
@_clean_errors
def scenes_show(
    file: Path = typer.Argument(..., help="A scene file."),
    png: Optional[Path] = typer.Option(None, "--png", help="Where to write the BEV image (default: FILE.png)."),
) -> None:
    """Print a scene's summary and write a bird's-eye-view png of its map, traffic and route."""
    import cv2

    from scenarios.scene import SceneFormatError, load_scene
    from scenarios.summary import scene_summary
    from sim.render.bev import render_map_overview

    try:
        scene = load_scene(file)
    except SceneFormatError as exc:
        _error(str(exc))
        raise typer.Exit(2) from None
    console.print_json(json.dumps(scene_summary(scene)))
    image = render_map_overview(scene.map, agents=scene.agents.at(scene.current_index),
                                ego_pose=scene.initial_ego_state[:3], route_lane_ids=scene.route)
    target = png or file.with_suffix(".png")
    if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        _error(f"cannot write the BEV image {target} (does its folder exist? is the suffix an image format?)")
        raise typer.Exit(2)
    console.print(f"BEV image: {target}")


@scenes_app.command("export-navsim")
@_clean_errors
def scenes_export_navsim(
    out: Path = typer.Option(..., "--out", help="Output folder: navsim_logs/NAME/*.pkl, maps/ (nuPlan GeoPackages) "
                             "and, with --images, sensor_blobs/NAME/."),
    split: str = typer.Option("builtin:navtest", "--split", help="builtin:NAME or a directory of scene files."),
    limit: int = typer.Option(10, "--limit", min=1, help="The first N scenes of the split."),
    name: str = typer.Option("navtest", "--name", help="NAVSIM split name to write the logs under."),
    map_location: str = typer.Option("us-nv-las-vegas-strip", "--map-location",
                                     help="The nuPlan city whose map holds every scene: sg-one-north, us-ma-boston, "
                                          "us-nv-las-vegas-strip or us-pa-pittsburgh-hazelwood."),
    images: bool = typer.Option(False, "--images/--no-images", help="Also write CAM_F0 jpgs (sensor blobs)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT's navsim_logs/, maps/, sensor_blobs/, scene_filters/ "
                                   "(a maps root holds one export; without this flag they must be empty or absent)."),
) -> None:
    """Write scenes as NAVSIM log pickles and their maps as one nuPlan maps root that NAVSIM and nuPlan load as they
    are: every scene in one city's map, each in its own slot (the other cities' maps empty), ready for
    `w0sim eval --split navsim:NAME --navsim-logs OUT/navsim_logs --nuplan-maps OUT/maps`. Each log is written
    whole once; OUT/scene_filters/NAME.yaml is NAVSIM's scene filter of the split's tokens (frame interval 1)."""
    import shutil

    from scenarios.navsim_log_writer import ExportError, NavsimExport
    from scenarios.nuplan_map import MAP_VERSIONS
    from scenarios.scene_filter import SceneFilter
    from scenarios.splits import SplitError, resolve_split

    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip():
        raise typer.BadParameter(f"{name!r} is not a plain folder name", param_hint="--name")
    _check_out_folder(out)
    if map_location not in MAP_VERSIONS:
        _error(f"--map-location {map_location!r} is not a nuPlan city; expected one of {', '.join(MAP_VERSIONS)}")
        raise typer.Exit(2)
    try:
        refs = resolve_split(split, limit)
    except SplitError as err:
        _error(str(err))
        raise typer.Exit(2) from None
    blobs = out / "sensor_blobs" / name if images else None
    if overwrite:  # every log under navsim_logs/ names this maps root's fids: none may outlive it
        for folder in (out / "navsim_logs", out / "maps", out / "sensor_blobs", out / "scene_filters"):
            shutil.rmtree(folder, ignore_errors=True)
    # A split may list several frames of one generated log: each log is written once, whole.
    logs = {}
    for ref in refs:
        logs.setdefault(ref.log_frame[0], dataclasses.replace(ref, frame=0) if ref.frame else ref)
    try:
        with NavsimExport(out / "navsim_logs" / name, out / "maps", map_location, sensor_blobs_dir=blobs) as export:
            with _progress() as progress:
                task = progress.add_task("writing NAVSIM logs", total=len(logs))
                for ref in logs.values():
                    export.add(ref.load())
                    progress.advance(task)
    except ExportError as err:
        _error(str(err))
        raise typer.Exit(2) from None
    # NAVSIM's way of naming a split's tokens among every window of its logs (navtest: frame interval 1).
    scene_filter = SceneFilter(frame_interval=1, tokens=tuple(ref.token for ref in refs))
    filter_path = scene_filter.write_yaml(out / "scene_filters" / f"{name}.yaml")
    console.print(f"wrote {len(logs)} logs ({len(refs)} tokens) to {out / 'navsim_logs' / name}, their map "
                  f"({map_location}) to {out / 'maps'} and the scene filter of the tokens to {filter_path}\n"
                  f"evaluate: w0sim eval --agent pdm_closed --split navsim:{name} --navsim-logs {out / 'navsim_logs'} "
                  f"--nuplan-maps {out / 'maps'} --scene-filter {filter_path}"
                  + (f" --sensor-blobs {blobs}" if blobs else "") + " --out OUT",
                  soft_wrap=True)


@scenes_app.command("check")
@_clean_errors
def scenes_check(
    directory: Path = typer.Argument(..., help="Directory of scene files."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="The first N scene files (by name)."),
    workers: int = typer.Option(0, "--workers", callback=_check_workers_or_zero,
                                help="Processes (0: all cores; at most 4 per core)."),
) -> None:
    """Load, render and drive a closed-loop episode in every scene file; a table per family, exit 1 on failures."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from rich.table import Table

    from w0sim.scene_check import check_scene

    if not directory.is_dir():
        _error(f"{directory} is not a folder")
        raise typer.Exit(2)
    paths = sorted(directory.glob("*.npz"))[:limit]
    if not paths:
        _error(f"no *.npz scene files in {directory}")
        raise typer.Exit(2)
    results = []
    with _progress() as progress, ProcessPoolExecutor(min(workers or os.cpu_count(), len(paths))) as pool:
        task = progress.add_task("checking scenes", total=len(paths))
        for result in pool.map(check_scene, paths, chunksize=4):
            results.append(result)
            progress.advance(task)
    table = Table("family", "scenes", "ok", "mean route done", "episodes with collisions")
    for family in sorted({r.family for r in results}):
        rows = [r for r in results if r.family == family]
        good = [r for r in rows if r.ok]
        table.add_row(family, str(len(rows)), str(len(good)),
                      f"{100 * sum(r.route_fraction for r in good) / max(len(good), 1):.0f}%",
                      str(sum(r.collisions > 0 for r in good)))
    console.print(table)
    failures = [r for r in results if not r.ok]
    for r in failures:
        console.print(f"[red]failed[/red] {escape(str(r.path))}: {escape(r.reason)}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)


@app.command("demo")
@_clean_errors
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output directory."),
    family: str = typer.Option("intersection", "--family", help="Scene family: straight, curve, intersection, "
                               "t_junction or merge."),
    seed: int = _seed_option(),
    traffic: str = typer.Option("reactive", "--traffic", help="reactive or replay"),
) -> None:
    """Drive one generated scene closed-loop with the IDM route follower and write its video."""
    from scenarios.generator import FAMILIES
    from w0sim.demo import TRAFFIC_MODES, run_demo

    if family not in FAMILIES:
        raise typer.BadParameter(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}", param_hint="--family")
    if traffic not in TRAFFIC_MODES:
        raise typer.BadParameter(f"{traffic!r}; choose one of {', '.join(TRAFFIC_MODES)}", param_hint="--traffic")
    _check_out_folder(out)

    with console.status("driving the demo episode"):
        result = run_demo(out, family=family, seed=seed, traffic=traffic)
    console.print(f"{result.steps} decisions, route {100 * result.route_fraction:.0f}% done, "
                  f"{result.collisions} collisions, {result.red_lights} red lights, {result.offroad_steps} off-road steps")
    console.print(f"video: {result.video}\ncontact sheet: {result.contact_sheet}")


@app.command("score")
@_clean_errors
def score(
    scene: Path = typer.Option(..., "--scene", help="A scene file (.npz); its current frame is scored."),
    trajectories: Path = typer.Option(..., "--trajectories", help="The trajectories, a JSON file (format above)."),
    version: str = typer.Option("v1.1", "--version", help="v1.1 (PDMS) or v2.2 (EPDMS)."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (default: beside the trajectories file, "
                                       "its name's suffix replaced: plans.json gives plans.scores.csv)."),
) -> None:
    """Score trajectories on a scene with NAVSIM's PDMS / EPDMS: every sub-score per trajectory, a table and a CSV.

    The trajectories file is JSON: a list of trajectories, or an object of trajectories by name. A trajectory is
    an object with "poses" (a list of [x, y, heading] poses), "name" (optional: its key, or trajectory_<i> in a
    list) and "interval" (optional: seconds between poses, default 0.5), or a bare list of poses. Poses are in
    metres and radians, in the ego's rear-axle frame at the scene's current frame (x forward, y left), the first
    one interval ahead. Two files of this format:

    \b
    [{"name": "go", "poses": [[5, 0, 0], [9, 0, 0]], "interval": 0.5}]
    {"go": [[5, 0, 0], [9, 0, 0]], "slow": {"poses": [[4, 0, 0]], "interval": 1}}

    A trajectory that cannot be scored (non-finite, wrong shape, implausible) is a failed row with its reason."""
    from w0sim.score import ScoreInputError, failure_lines, render_table, score_trajectories, write_csv

    try:
        report = score_trajectories(scene, trajectories, version)
    except ScoreInputError as exc:
        _error(str(exc))
        raise typer.Exit(2) from None
    console.print(render_table(report))
    for line in failure_lines(report):
        console.print(f"[red]failed[/red] {escape(line)}", highlight=False, soft_wrap=True)
    target = out or trajectories.with_suffix(".scores.csv")
    try:
        write_csv(report, target)
    except OSError as exc:
        _error(f"{target}: cannot write the CSV ({exc})")
        raise typer.Exit(2) from None
    failed = sum(not row["valid"] for row in report.rows)
    count = len(report.rows)
    console.print(f"scored {count} {'trajectory' if count == 1 else 'trajectories'} ({failed} failed); CSV: {target}",
                  soft_wrap=True)


@app.command("collect")
@_clean_errors
def collect(
    split: str = typer.Option("builtin:navtrain", "--split", help="builtin:NAME or a directory of scene files."),
    scenes: int = typer.Option(..., "--scenes", min=1, help="Number of scenes (the first N of the split)."),
    out: Path = typer.Option(..., "--out", help="Output folder (resumed when it holds the same collection)."),
    config: str = typer.Option("tiny", "--config", help="Policy preset whose frame size and history to collect for."),
    workers: Optional[int] = typer.Option(None, "--workers", callback=_check_workers,
                                          help="Processes (default: all cores; at most 4 per core)."),
) -> None:
    """Let the PDM-Closed expert plan on generated scenes and store its samples (frames, state, trajectory,
    future frame) in shards with a manifest and a content hash."""
    from policies.config import DriveVLAW0Config
    from scenarios.splits import SplitError
    from training.collect import CollectConfig, CollectError
    from training.collect import collect as run_collect

    try:
        collect_config = CollectConfig.for_policy(DriveVLAW0Config.preset(config))
    except (KeyError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    _check_out_folder(out)
    try:
        with _progress_report("collecting shards") as report:
            manifest = run_collect(split, scenes, out, collect_config, workers, progress=report)
    except (SplitError, CollectError) as err:
        _error(str(err))
        raise typer.Exit(2) from None
    console.print(f"{manifest['samples']} samples from {scenes} scenes in {out} "
                  f"({manifest['failures']} failed scenes); content hash {manifest['content_hash'][:16]}")


@app.command("train")
@_clean_errors
def train(
    data: Path = typer.Option(..., "--data", help="A `w0sim collect` folder."),
    out: Path = typer.Option(..., "--out", help="Run folder: stage{k}/ with checkpoints, metrics.csv, tensorboard/, model/."),
    config: str = typer.Option("tiny", "--config", help="Model preset: tiny, small or paper."),
    stage: Optional[int] = typer.Option(None, "--stage", min=0, max=2, help="Train one stage (0 tokenizer, "
                                        "1 backbone + world model, 2 action expert)."),
    all_stages: bool = typer.Option(False, "--all", help="Train stages 0, 1 and 2 in order (0 and 1 with --image-input vit)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Steps per trained stage (default: per stage)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Samples per step, over all processes "
                                             "(default: 16 at every stage)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate, after the warm-up and before the "
                                       "cosine decay (default: 2e-3 at stage 0, 1e-3 at stages 1 and 2)."),
    seed: int = _seed_option(),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints."),
    backbone_lr_scale: Optional[float] = _backbone_lr_scale_option(None),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (bf16 on a GPU, float32 on a CPU), "
                                        "no, bf16, or fp16 (with loss scaling)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute each layer in the "
                                                "backward pass: less memory, about a third more compute."),
    world_model: bool = typer.Option(True, "--world-model/--no-world-model",
                                     help="--no-world-model: the action-only baseline."),
    decoder: str = typer.Option("query", "--decoder", help="Action-expert decoder: query, ar or flow."),
    anchors: int = typer.Option(0, "--anchors", min=0, help="Query decoder: score this many trajectory anchors "
                                "(k-means of the training plans) instead of regressing the plan, the paper's anchor "
                                "variant (official: 8192); 0: off."),
    image_input: str = typer.Option("vq", "--image-input", help="vq: the Emu3 track (VQ image codes; the world "
                                    "model predicts them); vit: the Qwen2.5-VL track (its ViT; the world model is "
                                    "a diffusion head on a VAE latent; no action expert, so --all is stages 0-1)."),
    vq_model: str = typer.Option("w0sim", "--vq-model", help="Image tokenizer of the Emu3 track: w0sim (its own conv "
                                 "VQ-VAE) or emu3 (Emu3's vision tokenizer, transformers' Emu3VQVAE, at the preset's "
                                 "size)."),
    vision_tokenizer: Optional[Path] = typer.Option(None, "--vision-tokenizer", help="An Emu3-VisionTokenizer folder "
                                                    "(config.json + model.safetensors, official or transformers' "
                                                    "names): stage 0 loads it instead of training a tokenizer, as the "
                                                    "paper starts from Emu3's; implies --vq-model emu3 at its size."),
    val_data: Optional[Path] = typer.Option(None, "--val-data", help="A `w0sim collect` folder of held-out scenes "
                                            "(e.g. --split builtin:navtest): each stage's losses on it go to "
                                            "metrics.csv (val_*), TensorBoard and the curves."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", min=1, help="Steps between evaluations on "
                                             "--val-data (default: at each checkpoint, and at the last step)."),
) -> None:
    """Train DriveVLA-W0 on collected data; an interrupted run resumes from its last checkpoint when run again.

    On several GPUs: `accelerate launch --config_file configs/accelerate/NAME.yaml -m w0sim.cli train ...`."""
    from policies.config import EXPERT_DECODERS, IMAGE_INPUTS, VQ_MODELS
    from training.dataset import DatasetError
    from training.pipeline import model_config, train_stages
    from training.trainer import MIXED_PRECISION

    if all_stages == (stage is not None):
        raise typer.BadParameter("give either --stage N or --all", param_hint="--stage / --all")
    if lr is not None and not lr > 0:  # also NaN
        raise typer.BadParameter(f"{lr} is not a positive learning rate", param_hint="--lr")
    _check_out_folder(out)
    if image_input not in IMAGE_INPUTS:
        raise typer.BadParameter(f"{image_input!r}; choose from {', '.join(IMAGE_INPUTS)}", param_hint="--image-input")
    if image_input == "vit" and stage == 2:
        raise typer.BadParameter("the Qwen2.5-VL track (--image-input vit) has no action expert to train",
                                 param_hint="--stage")
    if vq_model not in VQ_MODELS:
        raise typer.BadParameter(f"{vq_model!r}; choose from {', '.join(VQ_MODELS)}", param_hint="--vq-model")
    if (vq_model != "w0sim" or vision_tokenizer) and image_input == "vit":
        raise typer.BadParameter("the Qwen2.5-VL track (--image-input vit) has no VQ tokenizer",
                                 param_hint="--vq-model / --vision-tokenizer")
    stages = ((0, 1) if image_input == "vit" else (0, 1, 2)) if all_stages else (stage,)
    if decoder not in EXPERT_DECODERS:
        raise typer.BadParameter(f"{decoder!r}; choose from {', '.join(EXPERT_DECODERS)}", param_hint="--decoder")
    if anchors and (decoder != "query" or image_input == "vit"):
        raise typer.BadParameter("anchors are scored by the action expert's query decoder (--decoder query, "
                                 "--image-input vq)", param_hint="--anchors")
    if mixed_precision not in MIXED_PRECISION:
        raise typer.BadParameter(f"{mixed_precision!r}; choose from {', '.join(MIXED_PRECISION)}",
                                 param_hint="--mixed-precision")
    if eval_every is not None and val_data is None:
        raise typer.BadParameter("evaluates on held-out data: give --val-data too", param_hint="--eval-every")
    fields = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "checkpoint_every": checkpoint_every,
              "backbone_lr_scale": backbone_lr_scale, "mixed_precision": mixed_precision,
              "gradient_checkpointing": gradient_checkpointing, "eval_every": eval_every}
    overrides = {s: {k: v for k, v in fields.items() if v is not None} for s in stages}
    try:
        tokenizer_fields = {"vq_model": vq_model}
        if vision_tokenizer is not None:
            from policies.convert import vision_tokenizer_fields

            tokenizer_fields = vision_tokenizer_fields(vision_tokenizer)
        model = train_stages(data, out, stages, model_config(config, world_model, decoder, image_input=image_input,
                                                             num_anchors=anchors, **tokenizer_fields), overrides,
                             vision_tokenizer=vision_tokenizer, eval_data=val_data)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        _error(str(err))
        raise typer.Exit(2) from None
    from accelerate import PartialState

    from training.curves import plot_run

    if PartialState().is_main_process:  # under `accelerate launch`, one process reports
        console.print(f"model saved to {model}; loss curves: {plot_run(out)}")


@app.command("eval")
@_clean_errors
def evaluate(
    agent: str = typer.Option(..., "--agent", help="An agent name (see `w0sim agents`: built-in ones and those other "
                              "packages register under the `w0sim.agents` entry points), package.module:Class, or "
                              "egodriver:HOST:PORT (egodriver:unix:///PATH) for a policy served over AlpaSim's "
                              "egodriver contract (`w0sim serve`, or any other server of it)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Model folder, for agents with weights "
                                              "(drivevla_w0: default the shipped checkpoints/drivevla-w0-tiny)."),
    split: str = typer.Option("builtin:navtest", "--split", help="builtin:NAME, navsim:NAME (NAVSIM logs), "
                              "carla:ROUTES.xml (Leaderboard routes) or a directory of scene files."),
    out: Path = typer.Option(..., "--out", help="Output folder: manifest.json (the run's settings, written first), "
                             "scores.csv (one-shot) or results.json (closed loop), rows.jsonl, summary.md. A run "
                             "resumes from what it holds, including a results.json the Leaderboard wrote for the "
                             "same routes; a folder of a run with other settings (agent, checkpoint, split, "
                             "version, options) is refused, naming the differences, and so is a folder another "
                             "run is writing to."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="The first N scenes of the split. A folder "
                                        "evaluated with another --limit (or --repetitions) is resumed: its "
                                        "finished scenes are reused by id, the others run."),
    repetitions: int = typer.Option(1, "--repetitions", min=1, help="Closed loop: drive each route N times, in the "
                                    "Leaderboard's order (each route's repetitions 0..N-1, then the next route) and "
                                    "under its ids, RouteScenario_<id>_rep<k>. Repetition k is the same route with "
                                    "its traffic and signal phases drawn from seed k (a generated route: its other "
                                    "road users and signal phases redrawn; repetition 0 is the split's scene), so "
                                    "repetitions differ."),
    workers: Optional[int] = typer.Option(None, "--workers", callback=_check_workers,
                                          help="Processes (default: all cores; at most 4 per core)."),
    pdm_version: str = typer.Option("v1.1", "--pdm-version", callback=_check_pdm_version,
                                    help="v1.1 (PDMS) or v2.2 (EPDMS)."),
    human_filter: bool = typer.Option(True, "--human-filter/--no-human-filter", help="v2.2: NAVSIM's human penalty "
                                      "filter (a column the logged human scores 0 on counts as 1), on as in NAVSIM."),
    seed: int = _seed_option(help="Agent seed (flow-matching noise), 0 to 2**32 - 1."),
    device: str = typer.Option("cpu", "--device", help="Torch device for agents with weights (cpu, cuda, cuda:1)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights' dtype for agents with weights (float32, bfloat16, "
                              "float16)."),
    videos: int = typer.Option(0, "--videos", min=0, help="Rollout videos of the first K scenes (one-shot, agents "
                               "with a world model)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run the scenes on a Ray cluster at "
                                              "ADDR; 'local' starts one on this machine."),
    closed_loop: Optional[bool] = typer.Option(None, "--closed-loop/--one-shot", help="How to drive the scenes "
                                               "(default: closed loop for builtin:routes and carla:, one-shot "
                                               "otherwise)."),
    navsim_logs: Optional[Path] = typer.Option(None, "--navsim-logs", help="NAVSIM log pickles for --split "
                                               "navsim:NAME: the folder holding NAME/, or NAME/ itself."),
    nuplan_maps: Optional[Path] = typer.Option(None, "--nuplan-maps", help="nuPlan maps root (<location>/<version>/"
                                               "map.gpkg) for --split navsim:NAME."),
    sensor_blobs: Optional[Path] = typer.Option(None, "--sensor-blobs", help="Sensor blobs of the split "
                                                "(<log>/CAM_F0/<token>.jpg): agents see these images."),
    town_dir: Optional[Path] = typer.Option(None, "--town-dir", help="CARLA towns (TownNN.xodr) for --split "
                                            "carla:ROUTES.xml."),
    scene_filter: Optional[Path] = typer.Option(None, "--scene-filter", help="NAVSIM scene filter YAML for --split "
                                                "navsim:NAME: frame interval, logs, tokens (`w0sim scenes export-navsim`"
                                                " writes OUT/scene_filters/NAME.yaml)."),
    service_timeout: float = typer.Option(30.0, "--service-timeout", min=0.001, help="--agent egodriver:ADDRESS: "
                                          "seconds each call to the policy server may take."),
    service_retries: int = typer.Option(2, "--service-retries", min=0, help="--agent egodriver:ADDRESS: retries of "
                                        "a call the server did not answer (unavailable or late). A scene whose server "
                                        "never answered fails, and the next run into the folder runs it again."),
    plan_delay: float = typer.Option(0.0, "--plan-delay", min=0.0, help="Closed loop: drive each plan this many "
                                     "seconds after the decision that made it (a multiple of 0.5 s; the ego holds "
                                     "still until the first plan is due), so a slow policy is scored as it would "
                                     "drive. Recorded in the manifest."),
    backend: str = typer.Option("embedded", "--backend", help="Closed loop: what drives the routes: embedded (w0sim's "
                                "own simulator, no server) or carla (a CARLA 0.9.15 / 0.9.16 server at --carla-host:"
                                "--carla-port, in synchronous mode, one route at a time)."),
    carla_host: str = typer.Option("localhost", "--carla-host", help="--backend carla: the server's host."),
    carla_port: int = typer.Option(2000, "--carla-port", min=1, max=65535, help="--backend carla: its RPC port."),
    carla_timeout: float = typer.Option(300.0, "--carla-timeout", min=0.001, help="--backend carla: seconds each "
                                        "server call, each tick and each decision of the agent may take (the "
                                        "Leaderboard's --timeout and watchdogs)."),
    carla_tm_port: int = typer.Option(8000, "--carla-tm-port", min=1, max=65535, help="--backend carla: the Traffic "
                                      "Manager's port."),
    carla_tm_seed: int = typer.Option(0, "--carla-tm-seed", min=0, max=2**31 - 1, help="--backend carla: the Traffic "
                                      "Manager's seed (the Leaderboard's --traffic-manager-seed)."),
    carla_fixed_delta: float = typer.Option(0.05, "--carla-fixed-delta", help="--backend carla: the synchronous tick "
                                            "in seconds, 0.05 (the Leaderboard's 20 Hz) or 0.1."),
    carla_restart: Optional[str] = typer.Option(None, "--carla-restart", help="--backend carla: a shell command that "
                                                "restarts the server, run after a route the simulation crashed on "
                                                "(that route is driven again by the next run into --out)."),
) -> None:
    """Evaluate an agent on a split: NAVSIM's CSV (one-shot) or the Leaderboard's results JSON (closed loop),
    a summary per family; an interrupted run resumes where it stopped (closed loop: also from a Leaderboard
    results.json of the same routes). Exits 1 when scenes (routes) failed, saying how many, 2 when the run cannot
    start as asked."""
    from agents.base import AgentError, AgentOptions
    from agents.registry import AgentSpec
    from scenarios.splits import SplitError
    from w0sim.evaluation import evaluate as run_evaluation
    from w0sim.runner import RunError

    _check_out_folder(out)
    if not agent.startswith("egodriver:") and (service_timeout, service_retries) != (30.0, 2):
        _error(f"--service-timeout and --service-retries apply to a served policy (--agent egodriver:ADDRESS), not to "
               f"{agent}")
        raise typer.Exit(2)
    split_options = {"navsim_logs": navsim_logs, "nuplan_maps": nuplan_maps, "sensor_blobs": sensor_blobs,
                     "town_dir": town_dir, "scene_filter": scene_filter}
    carla = _carla_settings(backend, carla_host, carla_port, carla_timeout, carla_tm_port, carla_tm_seed,
                            carla_fixed_delta, carla_restart)
    try:
        with _progress_report(f"evaluating {agent}") as report:
            spec = AgentSpec(agent, AgentOptions(str(checkpoint) if checkpoint else None, seed, device, dtype,
                                                 service_timeout_s=service_timeout, service_retries=service_retries))
            result = run_evaluation(split, spec, out, closed_loop=closed_loop, pdm_version=pdm_version, limit=limit,
                                    workers=workers, ray_address=ray_address, split_options=split_options,
                                    videos=videos, progress=report, human_filter=human_filter,
                                    repetitions=repetitions, plan_delay_s=plan_delay, carla=carla)
    except (AgentError, SplitError, RunError) as err:
        _error(str(err))
        raise typer.Exit(2) from None
    console.print(result.summary)
    console.print(f"scores: {result.scores_file}")
    for video in result.videos:
        console.print(f"video: {video}")
    for token, reason in result.failures:
        console.print(f"[red]failed[/red] {escape(token)}: {escape(reason)}", highlight=False, soft_wrap=True)
    if result.failures:
        console.print(f"[red]{len(result.failures)} of {result.total} {result.unit} failed[/red]", highlight=False)
        raise typer.Exit(1)


BACKENDS = ("embedded", "carla")


def _carla_settings(backend: str, host: str, port: int, timeout: float, tm_port: int, tm_seed: int, fixed_delta: float,
                    restart: Optional[str]):
    """The CarlaSettings of `--backend carla`, None for the embedded simulator; exits 2 on options that do not apply
    or do not hold."""
    if backend not in BACKENDS:
        _error(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        raise typer.Exit(2)
    given = {"--carla-host": (host, "localhost"), "--carla-port": (port, 2000), "--carla-timeout": (timeout, 300.0),
             "--carla-tm-port": (tm_port, 8000), "--carla-tm-seed": (tm_seed, 0),
             "--carla-fixed-delta": (fixed_delta, 0.05), "--carla-restart": (restart, None)}
    if backend != "carla":
        set_here = [name for name, (value, default) in given.items() if value != default]
        if set_here:
            _error(f"{', '.join(set_here)} {'applies' if len(set_here) == 1 else 'apply'} to --backend carla only")
            raise typer.Exit(2)
        return None
    from sim.envs.backends.carla.settings import CarlaSettings

    try:
        return CarlaSettings(host=host, port=port, timeout_s=timeout, traffic_manager_port=tm_port,
                             traffic_manager_seed=tm_seed, fixed_delta_s=fixed_delta, restart_command=restart)
    except ValueError as err:  # in the options' names
        message = str(err).removeprefix("CarlaSettings: ")
        for field, option in CARLA_OPTION_OF_FIELD.items():
            message = re.sub(rf"\b{field}\b", option, message)
        _error(message)
        raise typer.Exit(2) from None


#: CarlaSettings' fields by the options that set them (longest first: `port` is in `traffic_manager_port`).
CARLA_OPTION_OF_FIELD = {"traffic_manager_port": "--carla-tm-port", "traffic_manager_seed": "--carla-tm-seed",
                         "fixed_delta_s": "--carla-fixed-delta", "timeout_s": "--carla-timeout", "host": "--carla-host",
                         "port": "--carla-port"}


@app.command("serve")
@_clean_errors
def serve(
    agent: str = typer.Option(..., "--agent", help="The agent to serve: a name of `w0sim agents` or "
                              "package.module:Class."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Model folder, for agents with weights "
                                              "(drivevla_w0: default the shipped checkpoints/drivevla-w0-tiny)."),
    host: str = typer.Option("localhost", "--host", help="Address to bind (0.0.0.0: every interface, for a runtime on "
                             "another machine or container; the contract has no authentication or TLS, so only on a "
                             "network you trust), or a Unix socket: unix:///PATH (then --port is unused)."),
    port: int = typer.Option(50051, "--port", min=0, max=65535, help="TCP port (0: any free one, printed)."),
    mode: str = typer.Option("carla", "--mode", help="The runtime on the other end: carla (autoware_carla_scenario, "
                             "carla-driver-interface's clients, w0sim's egodriver agent) or alpasim (an AlpaSim "
                             "runtime: its cameras' convention and its debug payload)."),
    seed: int = _seed_option(help="Agent seed (flow-matching noise), 0 to 2**32 - 1."),
    device: str = typer.Option("cpu", "--device", help="Torch device for agents with weights (cpu, cuda, cuda:1)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights' dtype for agents with weights."),
    max_workers: int = typer.Option(8, "--max-workers", min=1, help="gRPC handler threads (decisions still run one "
                                    "at a time)."),
) -> None:
    """Serve an agent as a policy service on AlpaSim's egodriver gRPC contract (carla-driver-interface): AlpaSim,
    autoware_carla_scenario and `w0sim eval --agent egodriver:HOST:PORT` drive it. Runs until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from carla_driver_interface.service import SERVICE_MODES

    from agents.registry import SERVED_PREFIX
    from w0sim.serve import agent_to_serve, serving

    if mode not in SERVICE_MODES:
        _error(f"--mode {mode!r}: expected one of {', '.join(SERVICE_MODES)}")
        raise typer.Exit(2)
    if agent.startswith(SERVED_PREFIX):
        _error(f"--agent {agent}: serve a w0sim agent, not another server (it can be driven directly)")
        raise typer.Exit(2)
    built = agent_to_serve(agent, str(checkpoint) if checkpoint else None, device, dtype, seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serving(built, agent, host=host, port=port, mode=mode, max_workers=max_workers) as address:
        camera = " and a front camera" if built.get_sensor_config().cameras else ""
        world = ("; it plans from the world view a w0sim client sends, else from one lane along the route"
                 if built.privileged else "")
        console.print(f"serving {agent} on {address} ({mode} mode): it needs egomotion, the route{camera}{world}",
                      highlight=False, soft_wrap=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


@app.command("agents")
@_clean_errors
def list_agents() -> None:
    """List the agents `--agent` accepts: the built-in ones, those other packages register (`w0sim.agents`), and a
    policy served over the egodriver contract."""
    from agents.registry import SERVED_AGENT, SERVED_PREFIX, registered_agents

    for name, target in registered_agents().items():
        console.print(f"{name:20s} {target}", highlight=False)
    console.print(f"{SERVED_PREFIX + 'ADDRESS':20s} {SERVED_AGENT} (a policy served at HOST:PORT or unix:///PATH)",
                  highlight=False)


@app.command("render")
@_clean_errors
def render(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A DriveVLA-W0 model folder (default: "
                                              "the shipped checkpoints/drivevla-w0-tiny)."),
    scene: Path = typer.Option(..., "--scene", help="A scene file (.npz)."),
    out: Path = typer.Option(..., "--out", help="The mp4 to write (a contact sheet png goes beside it)."),
    pdm_version: str = typer.Option("v1.1", "--pdm-version", callback=_check_pdm_version,
                                    help="v1.1 (PDMS) or v2.2 (EPDMS)."),
    seed: int = _seed_option(help="Seed of the model's sampling (flow-matching and world-model noise), 0 to "
                                  "2**32 - 1."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="World-model frames: 0 (the default) decodes the most likely "
                              "image tokens; K samples each from the K most likely, with --seed."),
) -> None:
    """Write a rollout video: ground-truth camera frames beside the world model's predictions, a BEV, the scores."""
    from agents.drivevla_w0 import DEFAULT_CHECKPOINT, CheckpointError, DriveVLAW0Agent, check_checkpoint_folder
    from scenarios.scene import SceneFormatError, load_scene
    from w0sim.rollout_video import SCORE_NAMES, render_rollout
    from w0sim.runner import initialized

    checkpoint = checkpoint or DEFAULT_CHECKPOINT
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder; give the mp4 file to write", param_hint="--out")
    try:
        check_checkpoint_folder(checkpoint)
        loaded = load_scene(scene)
        agent = initialized(DriveVLAW0Agent(checkpoint, seed=seed))  # one torch thread, as `eval --videos`
        out.parent.mkdir(parents=True, exist_ok=True)
        result = render_rollout(agent, loaded, out, pdm_version, seed, top_k)
    except (CheckpointError, SceneFormatError, FileNotFoundError) as err:
        _error(str(err))
        raise typer.Exit(2) from None
    console.print(f"{result.video} ({result.frames} frames, {SCORE_NAMES[pdm_version]} {result.score:.3f}); "
                  f"{result.contact_sheet}")


experiment_app = _Typer(help="Experiments over trained policies.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("scaling")
@_clean_errors
def experiment_scaling(
    sizes: str = typer.Option("500,2000,8000", "--sizes", help="Training-set sizes (samples), comma-separated."),
    config: str = typer.Option("tiny", "--config", help="Model preset."),
    data: Optional[Path] = typer.Option(None, "--data", help="A `w0sim collect` folder (default: OUT/data, "
                                        "collected from builtin:navtrain when absent)."),
    out: Path = typer.Option(Path("runs/scaling"), "--out", help="Experiment folder (resumed when run again)."),
    eval_split: str = typer.Option("builtin:navtest", "--eval-split", help="Held-out split the models are scored on."),
    eval_limit: Optional[int] = typer.Option(100, "--eval-limit", min=1, help="First N scenes of the split."),
    seeds: str = typer.Option("0,1", "--seeds", help="Seeds, comma-separated: each picks its own training subsets "
                              "and seeds training and evaluation; the table gives the mean and its standard error."),
    epochs: str = typer.Option("4,2", "--epochs", help="Optimizer epochs of stage 1 and stage 2, the same at every "
                               "size."),
    workers: Optional[int] = typer.Option(None, "--workers", callback=_check_workers,
                                          help="Processes for collection and evaluation (at most 4 per core)."),
    backbone_lr_scale: float = _backbone_lr_scale_option(1.0),
    device: str = typer.Option("cpu", "--device", help="Torch device the trained models are evaluated on (cpu, cuda, "
                               "cuda:1)."),
    quick: bool = typer.Option(False, "--quick", help="A trial of the whole pipeline in a few minutes: sizes 16 and "
                               "32, 2 steps per stage, 10 held-out scenes, in OUT-quick (its numbers mean nothing)."),
) -> None:
    """Train the action-only baseline and the world-model variant at each size and seed on the same data, score
    both on the held-out split, and write scaling.csv, scaling_summary.csv (mean and standard error over the seeds)
    and scaling.png (PDMS vs size, log x)."""
    import math

    from agents.base import AgentOptions
    from agents.registry import AgentSpec
    from policies.config import DriveVLAW0Config
    from training.collect import CollectConfig
    from training.collect import collect as run_collect
    from training.scaling import ScalingConfig, run_scaling, summarize_seeds
    from w0sim.one_shot import evaluate_split, summarize

    try:
        size_list = tuple(sorted(int(s) for s in sizes.split(",")))
    except ValueError:
        raise typer.BadParameter(f"expected integers, got {sizes!r}", param_hint="--sizes") from None
    if not size_list or size_list[0] < 1:
        raise typer.BadParameter(f"expected positive sample counts, got {sizes!r}", param_hint="--sizes")
    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
        stage1_epochs, stage2_epochs = (float(e) for e in epochs.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated seeds and two epoch counts, got {seeds!r} and "
                                 f"{epochs!r}", param_hint="--seeds / --epochs") from None
    if len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        raise typer.BadParameter(f"expected distinct seeds >= 0, got {seeds!r}", param_hint="--seeds")
    if not (stage1_epochs > 0 and stage2_epochs > 0):
        raise typer.BadParameter(f"expected positive epochs, got {epochs!r}", param_hint="--epochs")
    scaling = ScalingConfig(sizes=size_list, preset=config, seeds=seed_list, stage1_epochs=stage1_epochs,
                            stage2_epochs=stage2_epochs, backbone_lr_scale=backbone_lr_scale)
    if quick:  # its own folder: a later full run must not resume from (or be refused by) the trial's data
        scaling = dataclasses.replace(scaling, sizes=(16, 32), seeds=seed_list[:1], batch_size=4, tokenizer_steps=2,
                                      stage1_max_steps=2, stage2_max_steps=2)
        out, eval_limit = out.with_name(out.name + "-quick"), 10
    if data is None:
        data = out / "data"
        collect_config = CollectConfig.for_policy(DriveVLAW0Config.preset(config))
        scenes = math.ceil(max(scaling.sizes) / len(collect_config.sample_offsets) * 1.02)
        console.print(f"collecting expert data: {scenes} scenes of builtin:navtrain -> {data}")
        run_collect("builtin:navtrain", scenes, data, collect_config, workers)

    def evaluate(model_dir: Path, eval_dir: Path, seed: int) -> dict:
        spec = AgentSpec("drivevla_w0", AgentOptions(str(model_dir), seed, device=device))
        return summarize(evaluate_split(eval_split, spec, eval_dir, limit=eval_limit, workers=workers))

    rows = run_scaling(data, out, evaluate, scaling, log=console.print)
    for row in summarize_seeds(rows):
        console.print(f"{row['variant']:>12s} {row['size']:>6d} samples: PDMS {row['pdms_mean']:.4f} "
                      f"± {row['pdms_stderr']:.4f} ({row['seeds']} seeds)")
    console.print(f"results: {out / 'scaling.csv'}, {out / 'scaling_summary.csv'}, {out / 'scaling.png'}")


if __name__ == "__main__":
    app()
