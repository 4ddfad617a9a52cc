"""What a first-time user of the command line sees: a mistake the CLI can detect is one line and exit 2 before any
worker starts, help text reads whole at 80 columns, model loading and finished runs print no progress-bar noise,
`score` documents its input and writes its CSV beside it, `scenes check` takes --limit."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agents.drivevla_w0 import DEFAULT_CHECKPOINT
from w0sim.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def squashed(text: str) -> str:
    """Text without whitespace: help wraps lines (and breaks words at hyphens)."""
    return re.sub(r"\s+", "", text)


def w0sim(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process (pool workers print to the real stderr), output piped."""
    return subprocess.run([sys.executable, "-m", "w0sim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout)


# ---- one-line errors ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """A `w0sim train` run folder (stage{k}/model inside): a checkpoint's parent, not a checkpoint."""
    run = tmp_path_factory.mktemp("train_run")
    for stage in (0, 2):
        shutil.copytree(DEFAULT_CHECKPOINT, run / f"stage{stage}" / "model", ignore=shutil.ignore_patterns("*.md"))
    (run / "stage2" / "metrics.csv").write_text("step,loss\n")
    return run


def test_a_run_folder_as_checkpoint_is_one_line_and_exit_2_with_two_workers(train_run, tmp_path):
    out = tmp_path / "out"
    done = w0sim("eval", "--agent", "drivevla_w0", "--checkpoint", train_run, "--split", "builtin:navtest", "--limit",
                 2, "--workers", 2, "--out", out)
    printed = lines(done.stdout + done.stderr)
    assert done.returncode == 2 and len(printed) == 1, done.stdout + done.stderr
    assert printed[0].startswith("error:") and str(train_run) in printed[0] and "config.json" in printed[0]
    assert "stage0/model, stage2/model" in printed[0]  # where the models are
    assert not out.exists()


@pytest.mark.parametrize("args, where", [
    (["eval", "--agent", "drivevla_w0", "--checkpoint", "README", "--workers", 2, "--out", "OUT"], "README"),
    (["eval", "--agent", "constant_velocity", "--split", "builtin:nope", "--workers", 2, "--out", "OUT"], "'nope'"),
    (["eval", "--agent", "constant_velocity", "--split", "MISSING", "--workers", 2, "--out", "OUT"], "MISSING"),
    (["eval", "--agent", "constant_velocity", "--split", "navsim:x", "--navsim-logs", "MISSING", "--workers", 2,
      "--out", "OUT"], "MISSING"),
    (["collect", "--scenes", 2, "--split", "builtin:nope", "--workers", 2, "--out", "OUT"], "'nope'"),
    (["collect", "--scenes", 2, "--split", "MISSING", "--workers", 2, "--out", "OUT"], "MISSING"),
    (["train", "--stage", 0, "--data", "MISSING", "--out", "OUT"], "MISSING"),
    (["render", "--scene", "MISSING", "--out", "OUT/video.mp4"], "MISSING"),
    (["scenes", "export-navsim", "--split", "builtin:nope", "--out", "OUT"], "'nope'"),
    (["scenes", "check", "MISSING"], "MISSING"),
    (["score", "--scene", "MISSING", "--trajectories", "MISSING", "--out", "OUT/scores.csv"], "MISSING"),
])
def test_mistakes_the_cli_detects_are_one_line_and_exit_2(tmp_path, args, where):
    """Each names what is wrong and where, on one line however long (no wrapping at the console width, no empty
    progress bar before or after it), and leaves no output folder behind."""
    names = {"MISSING": str(tmp_path / "missing"), "OUT": str(tmp_path / "out"), "README": str(REPO / "README.md")}
    args = [re.sub("|".join(names), lambda m: names[m.group()], str(a)) for a in args]
    result = invoke(*args)
    printed = lines(result.output)
    assert result.exit_code == 2 and len(printed) == 1, result.output
    assert printed[0].startswith("error:") and re.sub("|".join(names), lambda m: names[m.group()], where) in printed[0]
    assert not (tmp_path / "out").exists()


def test_a_collection_refused_leaves_no_folder_that_refuses_the_right_one(tmp_path):
    out = tmp_path / "data"
    assert invoke("collect", "--split", "builtin:nope", "--scenes", 1, "--out", out).exit_code == 2
    assert not out.exists()


# ---- progress bars and model loading ------------------------------------------------------------------------------

def test_a_resumed_run_with_nothing_left_and_a_refused_run_show_no_progress_bar(tmp_path):
    args = ["eval", "--agent", "constant_velocity", "--limit", 1, "--workers", 1, "--out", tmp_path / "out"]
    first = invoke(*args)
    assert first.exit_code == 0 and "evaluating constant_velocity" in first.output and "1/1" in first.output
    again = invoke(*args)
    assert again.exit_code == 0 and "scores:" in again.output, again.output
    assert "evaluating" not in again.output and "0/?" not in again.output
    refused = invoke(*args[:-2], "--split", "builtin:nope", "--out", tmp_path / "other")
    assert refused.exit_code == 2 and "evaluating" not in refused.output


def test_the_progress_bar_starts_with_the_scenes_already_done(tmp_path):
    from agents.registry import AgentSpec
    from w0sim.one_shot import evaluate_split

    calls = []
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, limit=1, workers=1)
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, limit=3, workers=1,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    evaluate_split("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, limit=3, workers=1,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == []


def test_model_commands_print_no_weight_loading_bars(tmp_path):
    """Neither in the run's process nor in its pool workers (each loads the model)."""
    done = w0sim("eval", "--agent", "drivevla_w0", "--limit", 2, "--workers", 2, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Loading weights" not in done.stderr + done.stdout and "it/s" not in done.stderr, done.stderr


def test_quiet_loading_is_scoped_to_our_loading(capfd):
    from transformers.utils import logging as hf_logging

    from agents.drivevla_w0 import load_policy

    hf_logging.enable_progress_bar()
    load_policy(DEFAULT_CHECKPOINT)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # other users of transformers keep their bars
    hf_logging.disable_progress_bar()
    try:
        load_policy(DEFAULT_CHECKPOINT)
        assert not hf_logging.is_progress_bar_enabled()  # a switch someone else turned off stays off
    finally:
        hf_logging.enable_progress_bar()


# ---- help at 80 columns -------------------------------------------------------------------------------------------

def _commands(command, path=()):
    """(path, click command) of every command under a group, depth first."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_help_at_80_columns_holds_every_options_whole_help(path, command):
    done = w0sim(*path, "--help", env={"COLUMNS": "80"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
    assert "…" not in done.stdout
    for param in command.params:
        assert param.help and param.help.strip(), f"{' '.join(path)} {param.opts}: no help"
        assert squashed(param.help) in squashed(done.stdout), f"{param.opts}: {param.help!r} cut in\n{done.stdout}"
    first_paragraph = command.help.split("\n\n")[0]
    assert squashed(first_paragraph) in squashed(done.stdout)


def test_group_help_lists_each_commands_whole_first_sentence():
    for group in ([], ["scenes"]):
        done = w0sim(*group, "--help", env={"COLUMNS": "80"}, timeout=60)
        assert max(len(line) for line in done.stdout.splitlines()) <= 80 and "…" not in done.stdout
        for path, command in COMMANDS:
            if list(path[:-1]) == group:
                sentence = command.help.split("\n\n")[0].split(". ")[0]
                assert squashed(sentence) in squashed(done.stdout), (path, done.stdout)


def test_a_group_without_a_command_shows_its_help_not_an_error_about_a_missing_one():
    from typer.testing import CliRunner

    from w0sim.cli import app

    for group in ([], ["scenes"]):
        result = CliRunner().invoke(app, group)
        assert "Usage:" in result.output and "Commands:" in result.output, result.output
        assert "Missing command" not in result.output


# ---- score ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    from scenarios.generator import generate_scene
    from scenarios.scene import save_scene

    return save_scene(generate_scene("straight", 1), tmp_path_factory.mktemp("score") / "straight.npz")


def _help_examples() -> list:
    """The JSON examples `w0sim score --help` gives of its trajectories file."""
    text = invoke("score", "--help").output
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith(("[{", "{\""))]


def test_the_trajectories_format_in_score_help_is_the_one_score_reads(scene_file, tmp_path):
    from w0sim.score import load_trajectories

    examples = _help_examples()
    assert len(examples) == 2 and isinstance(examples[0], list) and isinstance(examples[1], dict)
    for i, example in enumerate(examples):
        path = tmp_path / f"example_{i}.json"
        path.write_text(json.dumps(example))
        result = invoke("score", "--scene", scene_file, "--trajectories", path)
        assert result.exit_code == 0, result.output
        names = [row.split(",")[1] for row in (tmp_path / f"example_{i}.scores.csv").read_text().splitlines()[1:]]
        expected = [t["name"] for t in example] if isinstance(example, list) else list(example)
        assert names == expected
        # "interval" optional, 0.5 s by default; a bare list of poses is a trajectory
        entries = example if isinstance(example, list) else list(example.values())
        assert [s.interval for s in load_trajectories(path)] == [
            e.get("interval", 0.5) if isinstance(e, dict) else 0.5 for e in entries]


def test_score_writes_its_csv_beside_the_input_and_says_where(scene_file, tmp_path):
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps([{"name": "go", "poses": [[5, 0, 0], [9, 0, 0]]}]))
    result = invoke("score", "--scene", scene_file, "--trajectories", plans)
    assert result.exit_code == 0, result.output
    target = tmp_path / "plans.scores.csv"
    assert target.is_file() and not (tmp_path / "plans.json.scores.csv").exists()
    assert squashed(f"CSV: {target}") in squashed(result.output)
    assert "scored 1 trajectory (0 failed)" in " ".join(result.output.split())
    plans.write_text(json.dumps([{"poses": [[5, 0, 0]]}, {"poses": [[6, 0, 0]]}]))
    assert "scored 2 trajectories" in " ".join(invoke("score", "--scene", scene_file, "--trajectories",
                                                      plans).output.split())


# ---- scenes check --limit ---------------------------------------------------------------------------------------

def test_scenes_check_limit_checks_the_first_n_files(tmp_path):
    scenes = tmp_path / "scenes"
    assert invoke("scenes", "generate", "--count", 2, "--out", scenes, "--families", "straight").exit_code == 0
    (scenes / "zz_broken.npz").write_bytes(b"not a scene")  # last by name
    limited = invoke("scenes", "check", scenes, "--limit", 2, "--workers", 1)
    assert limited.exit_code == 0 and re.search(r"straight\W+2\W+2\W", limited.output), limited.output
    assert "zz_broken" not in limited.output
    whole = invoke("scenes", "check", scenes, "--workers", 1)
    assert whole.exit_code == 1 and "zz_broken.npz" in squashed(whole.output)


def test_the_scaling_experiment_has_a_quick_trial_in_its_own_folder(tmp_path, monkeypatch):
    """`experiment scaling --quick` collects, trains and evaluates a few samples (minutes, not the full run's
    hours) into OUT-quick, so that the full run neither resumes from the trial nor is refused by its data."""
    import training.collect
    import training.scaling
    import w0sim.one_shot

    seen = {}

    def run_scaling(data, out, evaluate, config, log):
        evaluate(out / "model", out / "eval", 7)
        seen.update(out=out, config=config)
        return []

    monkeypatch.setattr(training.collect, "collect",
                        lambda split, scenes, out, config, workers: seen.update(split=split, scenes=scenes, data=out))
    monkeypatch.setattr(training.scaling, "run_scaling", run_scaling)
    monkeypatch.setattr(w0sim.one_shot, "evaluate_split",
                        lambda split, spec, out, limit, workers: seen.update(limit=limit, agent_seed=spec.options.seed))
    monkeypatch.setattr(w0sim.one_shot, "summarize", lambda rows: {})
    result = invoke("experiment", "scaling", "--quick", "--out", tmp_path / "scaling")
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.sizes == (16, 32) and max(config.tokenizer_steps, config.stage1_max_steps, config.stage2_max_steps) <= 2
    assert config.seeds == (0,) and seen["agent_seed"] == 7  # one seed in the trial; a run's agent gets its seed
    assert seen["out"] == tmp_path / "scaling-quick" and seen["data"] == tmp_path / "scaling-quick" / "data"
    assert seen["split"] == "builtin:navtrain" and seen["scenes"] <= 32 and seen["limit"] == 10


def _train(tmp_path, monkeypatch, *options) -> tuple:
    """`w0sim train --all` with `options`, its trainer replaced by a recorder: (result, what train_stages got)."""
    import training.pipeline

    built = {}

    def train_stages(data, out, stages, config, overrides, vision_tokenizer=None, eval_data=None):
        built.update(config=config, stages=stages, vision_tokenizer=vision_tokenizer, overrides=overrides,
                     eval_data=eval_data)
        return out / f"stage{stages[-1]}" / "model"

    monkeypatch.setattr(training.pipeline, "train_stages", train_stages)
    return invoke("train", "--all", "--data", tmp_path / "data", "--out", tmp_path / "run", *options), built


@pytest.mark.parametrize("image_input, stages", [("vq", (0, 1, 2)), ("vit", (0, 1))])
def test_train_builds_the_track_asked_for(tmp_path, monkeypatch, image_input, stages):
    """`--image-input vit` trains the Qwen2.5-VL track (Qwen's classes, the diffusion world model, no action expert:
    `--all` is stages 0 and 1); vq the Emu3 track with its expert."""
    result, built = _train(tmp_path, monkeypatch, "--image-input", image_input)
    assert result.exit_code == 0, result.output
    config = built["config"]
    assert (config.image_input, config.use_world_model, built["stages"]) == (image_input, True, stages)
    from transformers import Qwen2_5_VLForConditionalGeneration

    from policies.model import DriveVLAW0ForDriving

    with __import__("torch").device("meta"):
        model = DriveVLAW0ForDriving(config)
    assert (model.diffusion_wm is not None) == (model.policy is None) == (image_input == "vit")
    assert isinstance(model.backbone.lm, Qwen2_5_VLForConditionalGeneration) == (image_input == "vit")


def test_train_builds_emu3s_vision_tokenizer_on_the_emu3_track_only(tmp_path, monkeypatch):
    from policies.emu3_vq import Emu3ImageTokenizer
    from policies.model import DriveVLAW0ForDriving

    result, built = _train(tmp_path, monkeypatch, "--vq-model", "emu3")
    assert result.exit_code == 0, result.output
    assert (built["config"].vq_model, built["config"].emu3_vq_channels) == ("emu3", (32, 64, 64, 128))
    with __import__("torch").device("meta"):
        assert isinstance(DriveVLAW0ForDriving(built["config"]).vq, Emu3ImageTokenizer)
    for other in (("--vq-model", "taming"), ("--vq-model", "emu3", "--image-input", "vit")):
        result = invoke("train", "--all", "--data", tmp_path / "data", "--out", tmp_path / "other", *other)
        assert result.exit_code == 2 and "--vq-model" in result.output, result.output


def test_train_starts_from_a_pretrained_vision_tokenizer_of_its_size(tmp_path, monkeypatch):
    from policies.convert import save_official_vision_tokenizer
    from policies.model import DriveVLAW0ForDriving
    from tests.policies.checkpoints import MICRO_EMU3, micro_config

    save_official_vision_tokenizer(DriveVLAW0ForDriving(micro_config(**MICRO_EMU3)), tmp_path / "vq")
    result, built = _train(tmp_path, monkeypatch, "--vision-tokenizer", tmp_path / "vq")
    assert result.exit_code == 0, result.output
    config = built["config"]
    assert (config.vq_model, config.emu3_vq_channels, config.vq_codebook_size) == ("emu3", (32,) * 4, 8)
    assert built["vision_tokenizer"] == tmp_path / "vq"
    result = invoke("train", "--all", "--data", tmp_path / "data", "--out", tmp_path / "other",
                    "--vision-tokenizer", tmp_path / "absent")
    assert result.exit_code == 2 and "absent/config.json" in result.output, result.output


def test_train_evaluates_on_held_out_data_when_given_it(tmp_path, monkeypatch):
    result, built = _train(tmp_path, monkeypatch, "--val-data", tmp_path / "held_out", "--eval-every", "50")
    assert result.exit_code == 0, result.output
    assert built["eval_data"] == tmp_path / "held_out"
    assert [built["overrides"][s]["eval_every"] for s in (0, 1, 2)] == [50, 50, 50]
    result, built = _train(tmp_path, monkeypatch)
    assert built["eval_data"] is None and "eval_every" not in built["overrides"][1]
    result = invoke("train", "--all", "--data", tmp_path / "data", "--out", tmp_path / "other", "--eval-every", "5")
    assert result.exit_code == 2 and "--eval-every" in result.output and "--val-data" in result.output, result.output


def test_train_refuses_stage_2_on_the_qwen_track(tmp_path):
    result = invoke("train", "--stage", "2", "--data", tmp_path / "data", "--out", tmp_path / "run",
                    "--image-input", "vit")
    assert result.exit_code == 2 and "--stage" in result.output and "action expert" in result.output, result.output


def test_train_refuses_an_unknown_image_input_or_decoder_naming_the_option(tmp_path):
    for option, value in (("--image-input", "pixels"), ("--decoder", "diffusion")):
        result = invoke("train", "--all", "--data", tmp_path / "data", "--out", tmp_path / "run", option, value)
        assert result.exit_code == 2 and option in result.output and value in result.output, result.output


def test_train_builds_the_anchor_variant_of_the_query_decoder_and_refuses_anchors_elsewhere(tmp_path, monkeypatch):
    result, built = _train(tmp_path, monkeypatch, "--anchors", "64")
    assert result.exit_code == 0, result.output
    assert (built["config"].num_anchors, built["config"].expert_decoder) == (64, "query")
    for other in (("--decoder", "flow"), ("--image-input", "vit")):
        result = invoke("train", "--all", "--data", tmp_path / "data", "--out", tmp_path / "other", "--anchors", "8",
                        *other)
        assert result.exit_code == 2 and "--anchors" in result.output, result.output
