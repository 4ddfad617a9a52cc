"""The policy benchmarks run and measure what they say: world-model quality and camera reliance on a micro checkpoint,
FAST-token decoding latency at the tiny preset (each script imported as a module and run at tiny sizes)."""
import importlib.util
import json
import math
import os
import statistics
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.drivevla_w0 import load_policy
from policies.model import DriveVLAW0ForDriving, frames_to_model
from policies.noise import BatchNoise
from scenarios.splits import resolve_split
from sim.envs.scene_scoring import SceneScorer
from sim.state import Trajectory
from tests.conftest import REPO_ROOT
from tests.policies.checkpoints import micro_config, save_micro
from training.collect import CollectConfig

SPLIT = "builtin:navtest"
WM_KEYS = {"samples", "wm_mae", "copy_mae", "wm_mae_standstill_plan", "reconstruction_mae", "copy_codes_mae",
           "wm_mae_teacher_forced", "code_accuracy", "code_accuracy_teacher_forced", "code_accuracy_copy",
           "code_accuracy_teacher_forced_other_scene"}
CAMERA_KEYS = {"scenes", "pdms_own", "pdms_other_scene", "pdms_grey", "cost_other_scene", "cost_grey"}


def _benchmark(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package); the thread settings and environment it
    changes on import are put back."""
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    threads, path = torch.get_num_threads(), list(sys.path)
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
        sys.path[:] = path
    return module


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _mae(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean absolute error in 0-255 units, computed apart from the benchmark's own `mae`."""
    return float(np.abs(predicted.clamp(0, 1).double().numpy() - truth.double().numpy()).mean() * 255)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro DriveVLA-W0 checkpoint folder (VQ path, world model, fitted FAST tokenizer)."""
    folder = tmp_path_factory.mktemp("micro")
    save_micro(folder)
    return folder


# --- benchmarks/world_model_quality.py ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wmq():
    return _benchmark("world_model_quality")


def sensitive(folder) -> object:
    """The checkpoint in `folder` with its backbone's matrices redrawn large (seeded), so that each predicted code
    depends on the codes and frames before it (a freshly initialised model's barely do)."""
    model = load_policy(folder)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.backbone.parameters():
            if weight.dim() == 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    return model


@pytest.fixture(scope="module")
def held_out(wmq, micro):
    """(model, held-out samples of one navtest scene) of the micro checkpoint."""
    model = load_policy(micro)
    return model, wmq.held_out_samples(model, SPLIT, 1)


def test_world_model_quality_prints_every_error_of_the_held_out_samples(wmq, micro, held_out, monkeypatch, capsys):
    model, batch = held_out
    c = model.config
    collect = CollectConfig.for_policy(c)
    assert (collect.frame_height, collect.frame_width) == (c.image_height, c.image_width)
    samples = len(collect.sample_offsets)  # decisions per scene
    assert samples == 2
    assert batch["history_frames"].shape == (samples, c.num_history_frames, c.image_height, c.image_width, 3)
    assert batch["future_frames"].shape == (samples, c.image_height, c.image_width, 3)
    assert batch["trajectories"].shape == (samples, c.num_poses, 3) and len(batch["text"]) == samples
    monkeypatch.setattr(sys, "argv", ["world_model_quality.py", "--checkpoint", str(micro), "--scenes", "1"])
    wmq.main()
    result = _last_json(capsys)
    assert set(result) == WM_KEYS
    assert result["samples"] == samples
    for key, value in result.items():
        assert math.isfinite(value) and value >= 0, (key, value)
    assert result == wmq.measure(model, batch)  # main measures the held-out samples of the split's first scenes
    # Copying the current frame, measured here from the stored uint8 frames.
    frames = batch["history_frames"][:, -1].double().numpy(), batch["future_frames"].double().numpy()
    assert result["copy_mae"] == pytest.approx(np.abs(frames[0] - frames[1]).mean(), abs=2e-3)
    # Copying in code space: the current frame through the tokenizer.
    history, truth = frames_to_model(batch["history_frames"]), frames_to_model(batch["future_frames"])
    with torch.no_grad():
        copied = model.vq.decode(model.vq.encode(history[:, -1]))
        reconstructed = model.vq.decode(model.vq.encode(truth).view(-1, *c.image_grid))
    assert result["copy_codes_mae"] == pytest.approx(_mae(copied, truth), abs=2e-3)
    assert result["reconstruction_mae"] == pytest.approx(_mae(reconstructed, truth), abs=2e-3)
    # In code space: the share of the next frame's codes that greedy decoding, teacher forcing and copying get right,
    # on a model whose guesses depend on the codes before them (the micro model's barely do).
    model = sensitive(micro)
    result = wmq.measure(model, batch)
    images = model.encode_frames(history)
    true_codes = model.vq.encode(truth).view(-1, *c.image_grid)
    common = (batch["text"], batch["ego_poses"], batch["command"].long())
    _, greedy = model.predict_next_frame(images, *common, batch["trajectories"])
    forced = wmq.teacher_forced_codes(model, images, common, batch["trajectories"], true_codes)
    for key, guess in (("code_accuracy", greedy), ("code_accuracy_teacher_forced", forced),
                       ("code_accuracy_copy", model.vq.encode(history[:, -1]).view(-1, *c.image_grid))):
        assert result[key] == pytest.approx(float((guess == true_codes).float().mean()), abs=1e-3), key
    assert result["code_accuracy"] != result["code_accuracy_teacher_forced"]  # so the check above tells them apart


def test_world_model_quality_gives_each_sample_another_scenes_frames(wmq, micro):
    """Teacher forcing "with another scene's frames" reads, for each sample, the history of the sample one scene
    earlier (cyclically): never its own scene's, and measured with exactly those frames."""
    model = sensitive(micro)
    batch = wmq.held_out_samples(model, SPLIT, 2)
    per_scene = len(batch["text"]) // 2
    assert torch.equal(batch["other_scene"][:per_scene], batch["history_frames"][per_scene:])
    assert torch.equal(batch["other_scene"][per_scene:], batch["history_frames"][:per_scene])
    swapped = dict(batch, history_frames=batch["other_scene"], other_scene=batch["history_frames"])
    own, other = wmq.measure(model, batch), wmq.measure(model, swapped)
    # Swapping the two scenes' frames swaps the two teacher-forced accuracies (the true codes stay the same).
    assert own["code_accuracy_teacher_forced_other_scene"] == other["code_accuracy_teacher_forced"]
    assert own["code_accuracy_teacher_forced"] == other["code_accuracy_teacher_forced_other_scene"]
    assert own["code_accuracy_teacher_forced"] != own["code_accuracy_teacher_forced_other_scene"]  # it reads them


def test_world_model_quality_measures_the_qwen_tracks_diffusion_world_model_through_its_vae(wmq, tmp_path,
                                                                                            monkeypatch, capsys):
    """The Qwen track: the prediction is a seeded diffusion sample, the tokenizer round trip the VAE's; no teacher
    forcing (there are no codes)."""
    folder = tmp_path / "vit"
    model = DriveVLAW0ForDriving(micro_config(image_input="vit"))
    with torch.no_grad():  # open the condition gates (0 at init), so that the plan reaches the sample
        model.diffusion_wm.image_gate.fill_(1.0)
        model.diffusion_wm.action_gate.fill_(1.0)
    model.save_pretrained(folder)
    monkeypatch.setattr(sys, "argv", ["world_model_quality.py", "--checkpoint", str(folder), "--scenes", "1"])
    wmq.main()
    result = _last_json(capsys)
    assert set(result) == {key for key in WM_KEYS if not key.startswith(("code_", "wm_mae_teacher"))}
    model = load_policy(folder)
    batch = wmq.held_out_samples(model, SPLIT, 1)
    assert wmq.measure(model, batch) == result  # seeded: the same samples again
    truth = frames_to_model(batch["future_frames"])
    with torch.no_grad():
        latents = model.vae.latents(truth, BatchNoise(torch.Generator().manual_seed(0)))
        reconstructed = model.vae.decode_latents(latents)
    assert result["reconstruction_mae"] == pytest.approx(_mae(reconstructed, truth), abs=2e-3)
    assert result["wm_mae"] != result["wm_mae_standstill_plan"]  # the sample depends on the plan


def test_a_world_model_that_predicts_the_true_codes_scores_the_reconstruction_error(wmq, held_out, monkeypatch):
    model, batch = held_out
    c, n = model.config, len(batch["text"])
    with torch.no_grad():
        true_codes = model.vq.encode(frames_to_model(batch["future_frames"])).view(-1, *c.image_grid)
    plans = []

    def oracle(images, texts, ego_poses, command, plan, *args, **kwargs):
        assert images.shape[0] == n
        plans.append(plan)
        return model.vq.decode(true_codes), true_codes

    monkeypatch.setattr(model, "predict_next_frame", oracle)
    monkeypatch.setattr(wmq, "teacher_forced_codes", lambda model, images, common, plan, codes: codes)
    result = wmq.measure(model, batch, chunk=n)
    assert result["wm_mae"] == result["wm_mae_standstill_plan"] == result["reconstruction_mae"]
    assert result["wm_mae_teacher_forced"] == result["reconstruction_mae"]
    # The world model is asked with the expert's plan, then with the stand-still plan (8 poses at the origin).
    assert len(plans) == 2
    torch.testing.assert_close(plans[0], batch["trajectories"])
    assert plans[1].shape == plans[0].shape and not plans[1].any()


def test_teacher_forcing_predicts_each_code_from_the_true_codes_before_it(wmq, held_out, monkeypatch):
    model, batch = held_out
    c = model.config
    images = model.encode_frames(frames_to_model(batch["history_frames"]))
    common = (list(batch["text"]), batch["ego_poses"], batch["command"].long())
    plan = batch["trajectories"]
    # The real model: fed the codes it decodes greedily itself, it predicts them again, code by code.
    _, greedy = model.predict_next_frame(images, *common, plan)
    torch.testing.assert_close(wmq.teacher_forced_codes(model, images, common, plan, greedy), greedy)
    # A model that predicts "the next code is the one just read": the output is the true codes shifted by one.
    true_codes = torch.randint(0, c.vq_codebook_size, greedy.shape, generator=torch.Generator().manual_seed(0))
    fake = _CopyBackbone(model.backbone, c.vocab_size)
    monkeypatch.setattr(DriveVLAW0ForDriving, "backbone", property(lambda self: fake))
    out = wmq.teacher_forced_codes(model, images, common, plan, true_codes)
    assert out.shape == true_codes.shape
    assert torch.equal(fake.seen[0][:, -c.image_tokens_per_frame:], true_codes.flatten(1) + c.image_offset)
    assert torch.equal(out.flatten(1)[:, 1:], true_codes.flatten(1)[:, :-1])


class _CopyBackbone:
    """A stand-in backbone whose hidden state at each position is the one-hot of the token there, read by an identity
    LM head: it predicts that the next token is the one just read."""

    def __init__(self, real, vocab_size: int):
        self.action_tokenizer, self.vocab_size, self.seen = real.action_tokenizer, vocab_size, []
        self.model = self._decoder

    def _decoder(self, input_ids, attention_mask, position_ids):
        self.seen.append(input_ids)
        return SimpleNamespace(last_hidden_state=torch.nn.functional.one_hot(input_ids, self.vocab_size).float())

    def lm_head(self, hidden):
        return hidden


# --- benchmarks/camera_reliance.py --------------------------------------------------------------------------------

def test_camera_reliance_plans_from_own_other_and_grey_frames_and_scores_each(micro, monkeypatch, capsys):
    cr = _benchmark("camera_reliance")
    original = cr.DriveVLAW0Agent.compute_trajectory
    calls = []

    def recording(self, agent_input, world=None):
        trajectory = original(self, agent_input, world)
        if len(calls) % 3 == 2:  # grey frames: stand still, so the conditions score differently
            trajectory = Trajectory(np.zeros_like(trajectory.poses), trajectory.sampling)
        calls.append((agent_input, trajectory))
        return trajectory

    monkeypatch.setattr(cr.DriveVLAW0Agent, "compute_trajectory", recording)
    monkeypatch.setattr(sys, "argv", ["camera_reliance.py", "--checkpoint", str(micro), "--scenes", "2"])
    cr.main()
    result = _last_json(capsys)
    assert set(result) == CAMERA_KEYS and result["scenes"] == 2
    n = result["scenes"]
    assert len(calls) == 3 * n  # own, other scene, grey per scene
    own = [calls[3 * i][0] for i in range(n)]
    assert not np.array_equal(own[0].cameras, own[1].cameras)  # two scenes, two roads
    for i in range(n):
        mine, other, grey = (calls[3 * i + k][0] for k in range(3))
        assert np.array_equal(other.cameras, own[(i + 1) % n].cameras)
        assert not np.array_equal(other.cameras, mine.cameras)
        assert grey.cameras.shape == mine.cameras.shape and grey.cameras.dtype == mine.cameras.dtype
        assert (grey.cameras == 128).all()
        for swapped in (other, grey):  # only the frames change
            assert swapped.command_text == mine.command_text
            for name in ("ego_poses", "ego_velocity", "ego_acceleration", "driving_command", "ego_state"):
                assert np.array_equal(getattr(swapped, name), getattr(mine, name)), name
    # Each plan is scored by its own scene's PDMS v1.1 scorer; the means and costs come from those scores.
    scorers = [SceneScorer(ref.load(), "v1.1") for ref in resolve_split(SPLIT, n)]
    for k, condition in enumerate(("own", "other_scene", "grey")):
        scores = [scorers[i].score(t.poses, t.sampling.interval)[1] for i, (_, t) in enumerate(calls[k::3])]
        assert result[f"pdms_{condition}"] == pytest.approx(np.mean(scores), abs=1e-4), condition
    for condition in ("other_scene", "grey"):
        assert result[f"cost_{condition}"] == pytest.approx(result["pdms_own"] - result[f"pdms_{condition}"],
                                                            abs=1e-4)


# --- benchmarks/oracle_best_of_n.py -------------------------------------------------------------------------------

def test_oracle_best_of_n_scores_every_candidate_and_keeps_each_scenes_best(tmp_path, monkeypatch, capsys):
    bon = _benchmark("oracle_best_of_n")
    folder = tmp_path / "flow"
    save_micro(folder, expert_decoder="flow")
    calls = []
    original = bon.DriveVLAW0Agent.candidate_trajectories

    def recording(self, agent_input, n, seed=0):
        candidates = original(self, agent_input, n, seed)
        candidates[1] = Trajectory(np.zeros_like(candidates[1].poses), candidates[1].sampling)  # one stands still
        calls.append(candidates)
        return candidates

    monkeypatch.setattr(bon.DriveVLAW0Agent, "candidate_trajectories", recording)
    monkeypatch.setattr(sys, "argv", ["oracle_best_of_n.py", "--checkpoint", str(folder), "--scenes", "2", "--n", "3"])
    bon.main()
    result = _last_json(capsys)
    assert set(result) == {"scenes", "n", "pdms_policy", "pdms_oracle_best_of_n", "pdms_mean_candidate"}
    assert (result["scenes"], result["n"]) == (2, 3) and len(calls) == 2 and all(len(c) == 3 for c in calls)
    scorers = [SceneScorer(ref.load(), "v1.1") for ref in resolve_split(SPLIT, 2)]
    scores = [[scorers[i].score(t.poses, t.sampling.interval)[1] for t in calls[i]] for i in range(2)]
    assert len({s for row in scores for s in row}) > 1  # the candidates score differently
    assert result["pdms_oracle_best_of_n"] == pytest.approx(np.mean([max(r) for r in scores]), abs=1e-4)
    assert result["pdms_mean_candidate"] == pytest.approx(np.mean([np.mean(r) for r in scores]), abs=1e-4)
    assert result["pdms_oracle_best_of_n"] >= result["pdms_mean_candidate"]


def test_oracle_best_of_n_refuses_a_decoder_with_one_plan(micro, monkeypatch):
    bon = _benchmark("oracle_best_of_n")
    monkeypatch.setattr(sys, "argv", ["oracle_best_of_n.py", "--checkpoint", str(micro), "--scenes", "1"])
    with pytest.raises(SystemExit, match="one plan"):
        bon.main()


# --- benchmarks/policy_latency.py ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def latency():
    return _benchmark("policy_latency")


def test_the_latency_models_take_the_steps_of_a_plan_of_the_asked_tokens_and_its_eoa(latency):
    """Both AR decoders take tokens + 1 steps, as a plan of `tokens` FAST tokens followed by <eoa> does."""
    config, backbone, policies = latency.build_models("tiny", tokens=3)
    prompt, state = latency.build_inputs(config)
    with torch.inference_mode():
        assert len(backbone.generate_plan_tokens(prompt)[0]) == 4
        ar = policies["ar"]
        ctx, mask = ar.context(prompt)
        assert len(ar._ar_decode(ctx, mask, state)[0]) == 4


def test_the_latency_ratios_are_expert_over_baseline_medians(latency, monkeypatch):
    # A clock that makes each timed run last a set time: per method, 3 repeats whose median is not their mean.
    durations = {"baseline_ar_ms": [10, 30, 14], "query_ms": [5, 1, 12], "ar_expert_ms": [40, 50, 45],
                 "flow_ms": [2, 4, 3]}
    ticks, now = [], 0.0
    for repeat in range(3):
        for ms in durations.values():  # the benchmark times the methods round-robin, in this order
            ticks += [now, now + ms[repeat] / 1e3]
            now += 1.0
    clock = iter(ticks)
    monkeypatch.setattr(latency, "REPEATS", {"tiny": 3})
    monkeypatch.setattr(latency, "WARMUP", 1)
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    result = latency.bench("tiny", 3)
    assert next(clock, None) is None  # every timed run read the clock twice
    medians = {name: statistics.median(ms) for name, ms in durations.items()}
    for name, median in medians.items():
        assert result[name] == pytest.approx(median)
    for name, ratio in (("query_ms", "query_ratio"), ("ar_expert_ms", "ar_expert_ratio"), ("flow_ms", "flow_ratio")):
        assert result[ratio] == pytest.approx(medians[name] / medians["baseline_ar_ms"], abs=1e-3)
        assert result[ratio] > 0
