"""Training: collect -> stage 0 -> 1 -> 2 -> evaluation end to end, and a killed run resumes to the same loss curve."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from agents.drivevla_w0 import CheckpointError, DriveVLAW0Agent
from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from scenarios.splits import resolve_split
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.envs.navsim_env import NavsimSceneEnv
from tests.policies.checkpoints import micro_config
from training.collect import CollectConfig, collect
from training.pipeline import model_config, train_stages
from training.record import training_record
from training.trainer import MetricsLog, TrainConfig, Trainer, lr_factor, trainable_groups

TINY_STEPS = {0: {"steps": 4, "batch_size": 4}, 1: {"steps": 3, "batch_size": 4}, 2: {"steps": 3, "batch_size": 4}}


def test_collect_train_all_stages_and_evaluate_end_to_end(tmp_path):
    data = tmp_path / "data"
    collect("builtin:navtrain", 4, data, CollectConfig(scenes_per_shard=2), workers=2)
    held_out = tmp_path / "held_out"
    collect("builtin:navtest", 2, held_out, CollectConfig(scenes_per_shard=2), workers=1)
    model_dir = train_stages(data, tmp_path / "run", (0, 1, 2), model_config("tiny"), TINY_STEPS, show_progress=False,
                             eval_data=held_out)
    assert (model_dir / "model.safetensors").exists() and model_dir.parent.name == "stage2"
    for stage in (0, 1, 2):
        rows = list(csv.DictReader((tmp_path / "run" / f"stage{stage}" / "metrics.csv").open()))
        assert rows and all(np.isfinite(float(r["loss"])) for r in rows)
        # Evaluated on the held-out data at the last step (the default: at each checkpoint, and the last step).
        assert [r["step"] for r in rows if r["val_loss"]] == [str(TINY_STEPS[stage]["steps"])]
        assert np.isfinite(float(rows[-1]["val_loss"]))
    # The final model's training record: every stage it went through, on what data, with which settings.
    stages = training_record(model_dir)["stages"]
    hashes = {json.loads((folder / "manifest.json").read_text())["content_hash"] for folder in (data, held_out)}
    assert [s["stage"] for s in stages] == [0, 1, 2] and [s["steps"] for s in stages] == [4, 3, 3]
    assert {s["data"]["content_hash"] for s in stages} | {s["held_out"]["content_hash"] for s in stages} == hashes
    assert [s["data"]["split"] for s in stages] == ["builtin:navtrain"] * 3 and stages[0]["held_out"]["split"] == \
        "builtin:navtest"
    assert [s["config"]["batch_size"] for s in stages] == [4, 4, 4] and stages[1]["config"]["lr"] == 1e-3
    agent = DriveVLAW0Agent(model_dir)
    env = NavsimSceneEnv(scenes=[ref.load() for ref in resolve_split("builtin:navtest", 2)])
    trajectories = []
    for seed in range(2):
        _, info = env.reset(seed=seed)
        trajectory = agent.compute_trajectory(info["agent_input"])
        _, reward, _, _, step_info = env.step(trajectory.poses)
        assert trajectory.poses.shape == (8, 3) and np.isfinite(trajectory.poses).all()
        assert step_info["valid"] and 0.0 <= reward <= 1.0
        trajectories.append(trajectory.poses)
    assert not np.allclose(trajectories[0], trajectories[1])  # the output depends on the input
    closed = ClosedLoopEnv(scenes=[resolve_split("builtin:routes", 1)[0].load()])
    _, info = closed.reset(seed=0)
    for _ in range(3):  # the same agent drives closed loop from the frames the simulator renders
        _, _, terminated, _, info = closed.step(agent.compute_trajectory(closed.agent_input).poses)
        assert "failure_reason" not in info and not terminated


def _train_command(data, out, steps):
    code = "from w0sim.cli import app; app()"
    return [sys.executable, "-c", code, "train", "--data", str(data), "--out", str(out), "--stage", "0",
            "--steps", str(steps), "--batch-size", "2", "--checkpoint-every", "10"]


def _curve(run):
    rows = list(csv.DictReader((run / "stage0" / "metrics.csv").open()))
    return [(r["step"], r["loss"], r["reconstruction_loss"], r["lr"]) for r in rows]


@pytest.mark.timeout(900)  # about 26 s on a quiet 2-core machine; the 300 s guard against hangs failed it on a busy one
def test_a_killed_run_resumes_to_the_same_loss_curve_and_weights(tmp_path):
    data = tmp_path / "data"
    collect("builtin:navtrain", 2, data, CollectConfig(scenes_per_shard=2), workers=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 30
    subprocess.run(_train_command(data, tmp_path / "straight", steps), check=True, env=env, capture_output=True)
    process = subprocess.Popen(_train_command(data, tmp_path / "killed", steps), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "stage0" / "checkpoints" / "step_0000010" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "stage0" / "model").exists(), "the run finished before it could be killed"
    newest = sorted((tmp_path / "killed" / "stage0" / "checkpoints").glob("step_*/trainer_state.json"))[-1]
    kept = json.loads(newest.read_text())
    resumed = subprocess.run(_train_command(data, tmp_path / "killed", steps), check=True, env=env, capture_output=True,
                             text=True)
    # It resumed from the checkpoint: its progress starts at the checkpoint's step, not at 0 (training being
    # deterministic, a run started afresh would give the same curve and weights).
    first = re.search(rf"(\d+)/{steps}", resumed.stderr)
    assert first is not None and int(first.group(1)) >= 10, resumed.stderr[-2000:]
    assert _curve(tmp_path / "killed") == _curve(tmp_path / "straight")
    # Its training time goes on from the checkpoint's: the resumed process's own (from its last samples_per_s, a
    # running rate since it started) added to what the kept steps took.
    last = list(csv.DictReader((tmp_path / "killed" / "stage0" / "metrics.csv").open()))[-1]
    own = (steps - kept["step"]) * 2 / float(last["samples_per_s"])  # batch size 2
    recorded = training_record(tmp_path / "killed" / "stage0" / "model")["stages"][-1]["train_seconds"]
    assert kept["train_seconds"] > 0 and recorded == pytest.approx(kept["train_seconds"] + own, rel=0.02, abs=0.05)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "stage0" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "stage0" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_corrupt_checkpoint_folder_gives_a_clear_error(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        DriveVLAW0Agent(folder).initialize()
    DriveVLAW0Config.preset("tiny").save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        DriveVLAW0Agent(folder).initialize()


# The ego's last 1.5 s at 2 m/s (poses 0.5 s apart relative to the current one), as the data set gives them.
EGO_POSES = torch.tensor([[-3.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def _samples(config: DriveVLAW0Config, n: int = 2, seed: int = 0) -> list[dict]:
    """n synthetic samples shaped as `ExpertDataset` gives them (a list serves as the trainer's dataset)."""
    g = torch.Generator().manual_seed(seed)
    h, w, f = config.image_height, config.image_width, config.num_history_frames
    trajectory = torch.stack([torch.linspace(1.0, 8.0, 8), torch.zeros(8), torch.zeros(8)], -1)
    return [{"history_frames": torch.randint(0, 256, (f, h, w, 3), generator=g, dtype=torch.uint8),
             "future_frame": torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8),
             "trajectory": trajectory, "ego_poses": EGO_POSES,
             "command": torch.tensor(1), "text": "go straight"} for _ in range(n)]


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_its_floor():
    config = TrainConfig(stage=1, steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1) and lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(10, config) == pytest.approx(1.0)  # the decay starts at the top
    assert lr_factor(60, config) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi / 2) = 0
    assert lr_factor(110, config) == pytest.approx(0.1) and lr_factor(500, config) == pytest.approx(0.1)


def test_stage_2_trains_the_expert_at_the_learning_rate_and_the_backbone_at_its_scale_unless_frozen():
    """By default (as the official scripts' --freeze_vlm False) stage 2 trains the backbone too, at the same rate:
    the parameters that compute the context's K/V, not the LM head, final norm or the last layer's other parts,
    which the expert's loss does not reach. backbone_lr_scale 0 freezes it."""
    model = DriveVLAW0ForDriving(micro_config(num_hidden_layers=2))
    backbone = model.policy.backbone
    groups = trainable_groups(model, TrainConfig(stage=2, lr=1e-3))
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3])
    names = {id(p): n for n, p in backbone.named_parameters()}
    trained = {names[id(p)] for p in groups[1]["params"]}
    unreached = {"lm.lm_head.weight", "lm.model.norm.weight", "lm.model.layers.1.self_attn.q_proj.weight",
                 "lm.model.layers.1.self_attn.o_proj.weight", "lm.model.layers.1.post_attention_layernorm.weight",
                 "lm.model.layers.1.mlp.gate_proj.weight", "lm.model.layers.1.mlp.up_proj.weight",
                 "lm.model.layers.1.mlp.down_proj.weight"}
    assert trained == set(names.values()) - unreached
    assert not {id(p) for p in groups[0]["params"]} & set(names)
    scaled = trainable_groups(model, TrainConfig(stage=2, lr=1e-3, backbone_lr_scale=0.1))
    assert [g["lr"] for g in scaled] == pytest.approx([1e-3, 1e-4])
    frozen = trainable_groups(model, TrainConfig(stage=2, lr=1e-3, backbone_lr_scale=0.0))
    assert len(frozen) == 1 and not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("image_input, world_model", [("vq", True), ("vit", True), ("vit", False)])
def test_a_stage_1_step_logs_the_world_model_loss_of_a_world_model_only_and_keeps_the_tokenizer_frozen(
        tmp_path, image_input, world_model):
    """The world-model variants log their world-model loss; the action-only Qwen model (which has no VAE) trains too
    and logs none. The tokenizer (VQ-VAE or VAE), frozen in stage 1, runs in eval mode (no EMA codebook updates)."""
    config = micro_config(image_input=image_input, use_world_model=world_model)
    model = DriveVLAW0ForDriving(config)
    assert (model.vae is None) == (image_input == "vq" or not world_model)
    trainer = Trainer(model, _samples(config), TrainConfig(stage=1, steps=2, batch_size=2, log_every=1), tmp_path,
                      show_progress=False)
    trainer.train(stop_after=1)
    (row,) = csv.DictReader((tmp_path / "metrics.csv").open())
    assert np.isfinite(float(row["action_loss"]))
    assert np.isfinite(float(row["world_model_loss"])) if world_model else row["world_model_loss"] == ""
    for tokenizer in (model.vq, model.vae):
        if tokenizer is not None:
            assert model.training and not tokenizer.training
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard logs belong in the run folder"


@pytest.mark.parametrize("stage, backbone_lr_scale, backbone_trains", [(2, 0.0, False), (2, 0.1, True), (1, 0.0, True)])
def test_a_frozen_backbone_runs_in_eval_mode_so_its_dropout_is_off(tmp_path, stage, backbone_lr_scale,
                                                                  backbone_trains):
    """Stage 2 with backbone_lr_scale 0 freezes the backbone: it must then run without attention dropout (the
    paper-scale preset has 0.1) while the action expert trains; any other stage or scale trains the backbone."""
    config = micro_config(attention_dropout=0.1)
    model = DriveVLAW0ForDriving(config)
    trainer = Trainer(model, _samples(config), TrainConfig(stage=stage, steps=2, batch_size=2,
                                                           backbone_lr_scale=backbone_lr_scale), tmp_path,
                      show_progress=False)
    trainer.train(stop_after=1)
    assert model.policy.training
    assert model.policy.backbone.training == backbone_trains


def test_a_batch_is_moved_to_the_accelerators_device(tmp_path, monkeypatch):
    """The trainer's batches go where its accelerator runs the model (here a "meta" device stands in for a GPU):
    every tensor of the batch, the texts staying a list."""
    from accelerate import Accelerator

    config = micro_config()
    trainer = Trainer(DriveVLAW0ForDriving(config), _samples(config), TrainConfig(stage=1, steps=2, batch_size=2),
                      tmp_path, show_progress=False)
    monkeypatch.setattr(Accelerator, "device", property(lambda self: torch.device("meta")))
    batch = trainer.batch(0)
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    assert set(tensors) == {"history_frames", "future_frame", "trajectory", "ego_poses", "command"}
    assert all(v.device.type == "meta" for v in tensors.values())
    assert tensors["trajectory"].shape == (2, 8, 3) and batch["text"] == ["go straight"] * 2


def test_a_checkpoint_records_its_step_and_training_config_and_only_a_gpu_trains_in_bf16(tmp_path):
    """trainer_state.json beside each checkpoint: the step it holds and every TrainConfig field. Mixed precision is
    bf16 where CUDA is, float32 ("no") elsewhere: a CPU run is not rounded to bf16."""
    import dataclasses
    import json

    config = micro_config()
    train = TrainConfig(stage=1, steps=2, batch_size=2, checkpoint_every=1, lr=3e-4)
    trainer = Trainer(DriveVLAW0ForDriving(config), _samples(config), train, tmp_path, show_progress=False)
    assert trainer.accelerator.mixed_precision == ("bf16" if torch.cuda.is_available() else "no")
    trainer.train()
    state = json.loads((trainer.checkpoints()[-1] / "trainer_state.json").read_text())
    assert state.pop("train_seconds") > 0
    assert state == {"step": 2, "config": json.loads(json.dumps(dataclasses.asdict(train)))}


def test_a_stage_resumed_from_a_checkpoint_without_its_time_records_the_time_as_unknown(tmp_path):
    """A checkpoint of a version that kept no training time: the resumed stage's time is unknown (null), not 0."""
    import json
    import shutil

    config = micro_config()
    train = TrainConfig(stage=1, steps=2, batch_size=2, checkpoint_every=1, keep_checkpoints=2)
    trainer = Trainer(DriveVLAW0ForDriving(config), _samples(config), train, tmp_path, show_progress=False)
    trainer.train()
    first, second = trainer.checkpoints()
    state = json.loads((first / "trainer_state.json").read_text())
    (first / "trainer_state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "train_seconds"}))
    shutil.rmtree(second), shutil.rmtree(tmp_path / "model")
    again = Trainer(DriveVLAW0ForDriving(config), _samples(config), train, tmp_path, show_progress=False)
    model = again.train()
    assert training_record(model)["stages"][-1]["train_seconds"] is None
    assert json.loads((again.checkpoints()[-1] / "trainer_state.json").read_text())["train_seconds"] is None


def test_a_resumed_metrics_log_keeps_the_rows_up_to_the_resumed_step_and_appends_after_them(tmp_path):
    """Resuming at step k keeps metrics.csv's rows of steps 1..k as they were and drops the later ones (the run
    recomputes them), so that each step has one row."""
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, resumed_step=0)
    for step in range(1, 5):
        log.write({"step": step, "loss": 10.0 + step})
    log.close()
    log = MetricsLog(path, resumed_step=2)
    log.write({"step": 3, "loss": 0.5})
    log.close()
    rows = list(csv.DictReader(path.open(newline="")))
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "11.0"), ("2", "12.0"), ("3", "0.5")]


def test_held_out_evaluation_logs_the_stage_losses_there_and_leaves_the_training_as_it_was(tmp_path):
    """Every eval_every steps (and at the last) metrics.csv gets val_* columns: the stage's losses on the first
    eval_samples held-out samples in whole batches, the model in eval mode, batch k's noise seeded with k. A run
    with it trains exactly as one without (the model has dropout, which draws from the RNG in train mode)."""
    from policies.noise import BatchNoise
    from training.dataset import collate

    config = micro_config(attention_dropout=0.1)
    train, held_out = _samples(config, 4), _samples(config, 5, seed=1)
    runs = {}
    for evaluated in (True, False):
        torch.manual_seed(0)
        model = DriveVLAW0ForDriving(config)
        train_config = TrainConfig(stage=1, steps=4, batch_size=2, log_every=1, eval_every=3 if evaluated else 0,
                                   eval_samples=5)
        Trainer(model, train, train_config, tmp_path / str(evaluated), show_progress=False,
                eval_dataset=held_out if evaluated else None).train()
        runs[evaluated] = model, list(csv.DictReader((tmp_path / str(evaluated) / "metrics.csv").open()))
    (model, rows), (plain, plain_rows) = runs[True], runs[False]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    columns = ("loss", "action_loss", "world_model_loss")
    assert [[r[c] for c in columns] for r in rows] == [[r[c] for c in columns] for r in plain_rows]
    assert [r["step"] for r in rows if r["val_loss"]] == ["3", "4"] and not any(r["val_loss"] for r in plain_rows)
    model.eval()
    with torch.no_grad():  # two whole batches of the five samples, as the trainer takes them
        direct = [model(**collate(held_out[2 * k:2 * k + 2]), stage=1,
                        noise=BatchNoise(torch.Generator().manual_seed(k), slice(0, 2), 2)) for k in range(2)]
    for column in columns:
        expected = sum(float(getattr(out, column)) for out in direct) / 2
        assert float(rows[-1][f"val_{column}"]) == pytest.approx(expected, rel=1e-5)
    assert rows[-2]["val_loss"] != rows[-1]["val_loss"]  # the weights of each step, not the first ones


@pytest.mark.parametrize("held_out, message", [(None, "eval_every is 2, but no held-out data set was given"),
                                               (1, "1 held-out samples .* cannot fill a batch of 2")])
def test_held_out_evaluation_without_a_full_batch_of_held_out_samples_is_refused(tmp_path, held_out, message):
    config = micro_config()
    eval_dataset = None if held_out is None else _samples(config, held_out)
    with pytest.raises(ValueError, match=message):
        Trainer(DriveVLAW0ForDriving(config), _samples(config), TrainConfig(stage=1, steps=2, batch_size=2,
                                                                            eval_every=2), tmp_path,
                show_progress=False, eval_dataset=eval_dataset)


def test_a_model_config_has_the_world_model_and_the_query_decoder_unless_told_otherwise():
    from training.pipeline import model_config

    default = model_config("tiny")
    assert (default.use_action_expert, default.use_world_model, default.expert_decoder) == (True, True, "query")
    other = model_config("tiny", world_model=False, expert_decoder="flow")
    assert (other.use_world_model, other.expert_decoder) == (False, "flow")


def test_the_qwen_track_trains_stages_0_and_1_and_fits_the_vae_scaling_between_them(tmp_path):
    """Stage 0 trains the VAE; before stage 1 the latent scaling factor is fitted with the stage-0 VAE on the run's
    current frames (1 / their latents' standard deviation) and kept in the stage-1 model's config; the track has no
    stage 2."""
    from policies.model import frames_to_model
    from policies.vae import fit_scaling_factor
    from training.dataset import ExpertDataset

    config = micro_config(image_input="vit", vae_scaling_factor=0.0)
    data = tmp_path / "data"
    collect("builtin:navtrain", 2, data, CollectConfig.for_policy(config, scenes_per_shard=2), workers=1)
    steps = {0: {"steps": 2, "batch_size": 2}, 1: {"steps": 2, "batch_size": 2}}
    out = train_stages(data, tmp_path / "run", (0, 1), config, steps, show_progress=False)
    assert out.parent.name == "stage1"
    stage0 = DriveVLAW0ForDriving.from_pretrained(tmp_path / "run" / "stage0" / "model")
    assert stage0.config.vae_scaling_factor == 0.0
    dataset = ExpertDataset(data)
    frames = torch.stack([dataset[i]["history_frames"][-1] for i in range(len(dataset))])
    expected = fit_scaling_factor(stage0.vae, frames_to_model(frames))
    stage1 = DriveVLAW0ForDriving.from_pretrained(out)
    assert stage1.config.vae_scaling_factor == pytest.approx(expected) and expected > 0
    with pytest.raises(ValueError, match="action expert"):
        train_stages(data, tmp_path / "run", (2,), stage1.config, show_progress=False)


def test_a_pretrained_vision_tokenizer_is_stage_0_and_stays_frozen_through_stage_1(tmp_path):
    """`vision_tokenizer`: stage 0 loads an Emu3-VisionTokenizer folder instead of training one (the paper's start),
    and stage 1 trains the backbone on its codes without changing it."""
    from policies.convert import save_official_vision_tokenizer, vision_tokenizer_fields
    from tests.policies.checkpoints import MICRO_EMU3

    torch.manual_seed(5)
    pretrained = DriveVLAW0ForDriving(micro_config(**MICRO_EMU3))
    save_official_vision_tokenizer(pretrained, tmp_path / "emu3-vq")
    config = micro_config(**vision_tokenizer_fields(tmp_path / "emu3-vq"))
    data = tmp_path / "data"
    collect("builtin:navtrain", 2, data, CollectConfig.for_policy(config, scenes_per_shard=2), workers=1)
    steps = {0: {"steps": 2, "batch_size": 2}, 1: {"steps": 2, "batch_size": 2}}
    out = train_stages(data, tmp_path / "run", (0, 1), config, steps, show_progress=False,
                       vision_tokenizer=tmp_path / "emu3-vq")
    assert not (tmp_path / "run" / "stage0" / "metrics.csv").exists()  # nothing trained at stage 0
    expected = pretrained.vq.state_dict()
    for stage_model in (tmp_path / "run" / "stage0" / "model", out):
        loaded = DriveVLAW0ForDriving.from_pretrained(stage_model).vq.state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert (tmp_path / "run" / "stage1" / "metrics.csv").exists()
    loaded, trained = training_record(out)["stages"]  # stage 0 was loaded, not trained, and the record says so
    assert loaded == {"stage": 0, "loaded_vision_tokenizer": str((tmp_path / "emu3-vq").resolve())}
    assert trained["stage"] == 1 and trained["held_out"] is None
