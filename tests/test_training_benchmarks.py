"""The training benchmarks: the memory count's JSON holds together and matches the model; the step benchmark runs on a CPU."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from policies.action_tokens import ActionTokenizer, frame_motions
from policies.model import DriveVLAW0ForDriving
from policies.motion import poses_to_deltas
from policies.text import InstructionTokenizer
from tests.conftest import REPO_ROOT
from training.pipeline import model_config
from training.trainer import TrainConfig, trainable_groups

CHOICES = ("DDP (no sharding)", "ZeRO-2 / FSDP SHARD_GRAD_OP", "ZeRO-3 / FSDP FULL_SHARD",
           "ZeRO-3 + CPU offload (the official scripts' setting)")


def _run(script: str, *args: str) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sequence_length(config, fast_tokens: int, text_tokens: int | None = None) -> int:
    """Training-sequence length from the 2VA layout (policies/sequence.py): <bos>, then per frame the text, <boi> <img>
    codes <eof> <eoi>, its past motions' FAST tokens, <boa> action (the last frame's: the plan) <eoa>; `fast_tokens`
    counts every FAST token (past motions, actions, plan); the longest text by default."""
    text = config.max_text_length if text_tokens is None else text_tokens
    return 1 + config.num_history_frames * (text + 4 + config.image_tokens_per_frame + 2) + fast_tokens


def _step_benchmark():
    """benchmarks/training_gpu.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("training_gpu", REPO_ROOT / "benchmarks" / "training_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    report = tmp_path_factory.mktemp("memory") / "report.md"
    result = _run("training_memory.py", "--preset", "tiny", "--quick", "--gpus", "4", "--micro-batch", "1,3",
                  "--write", str(report))
    return result, report.read_text()


def test_parameter_counts_are_those_of_the_real_model(memory):
    result, _ = memory
    p = result["parameters"]
    model = DriveVLAW0ForDriving(model_config("tiny"))
    assert p["total"] == sum(x.numel() for x in model.parameters())
    assert p["backbone"] == sum(x.numel() for x in model.backbone.parameters())
    assert p["vq_tokenizer"] == sum(x.numel() for x in model.vq.parameters())
    assert p["backbone"] + p["action_expert"] + p["vq_tokenizer"] == p["total"]
    for stage in (1, 2):
        groups = trainable_groups(model, TrainConfig(stage=stage))
        assert p[f"stage{stage}_trained"] == sum(x.numel() for g in groups for x in g["params"])


def test_every_total_is_the_sum_of_its_parts_and_sharding_and_checkpointing_save_memory(memory):
    result, _ = memory
    for stage in ("stage1", "stage2"):
        table = result["memory"][stage]
        assert set(table) == set(CHOICES)
        for choice, row in table.items():
            states = row["weights"] + row["gradients"] + row["adamw"]
            for s in row["settings"]:
                assert s["total"] == pytest.approx(states + s["bf16_working_weights"] + s["activations"], rel=1e-12)
                assert s["fits"] == {"40GB": s["total"] <= 40e9, "80GB": s["total"] <= 80e9}
        ddp = table[CHOICES[0]]["settings"]
        for choice in CHOICES[1:]:
            for sharded, plain in zip(table[choice]["settings"], ddp):
                assert (sharded["micro_batch"], sharded["checkpointing"]) == (plain["micro_batch"], plain["checkpointing"])
                assert sharded["total"] < plain["total"], (stage, choice, sharded)
        by_setting = {(s["micro_batch"], s["checkpointing"]): s["activations"] for s in ddp}
        assert set(by_setting) == {(1, False), (1, True), (3, False), (3, True)}
        for mb in (1, 3):
            assert 0 < by_setting[(mb, True)] < by_setting[(mb, False)]
        assert by_setting[(3, False)] == pytest.approx(3 * by_setting[(1, False)])
        # Offloading moves AdamW off the GPU; sharding divides the states by the 4 GPUs.
        assert table[CHOICES[3]]["adamw"] == 0
        assert table[CHOICES[1]]["adamw"] == pytest.approx(table[CHOICES[0]]["adamw"] / 4)


def test_the_measurement_sees_the_sequence_layer_inputs_and_weight_copies_it_should(memory):
    result, _ = memory
    config = model_config("tiny")
    sequence, frames = result["sequence"], config.num_history_frames
    fast = sequence["fast_tokens"]
    assert fast["past"] >= frames and fast["actions"] >= frames  # every chunk takes at least one FAST token
    length = _sequence_length(config, fast["past"] + fast["actions"])
    assert sequence["text_tokens"] == config.max_text_length  # the longest text, cut
    assert sequence["length"] == length
    # The LM head applies where the next token is labelled: every frame's image codes, and each <boa> action <eoa>
    # span (the past motions carry no loss).
    assert sequence["labelled_positions"] == {"action": fast["actions"] + 2 * frames,
                                              "image": frames * config.image_tokens_per_frame}
    acts = result["activations"]["stage1"]
    # A checkpointed layer keeps its input only: one (L, hidden) tensor (float32 or bf16 residual stream).
    kept = acts["checkpointing"]["per_layer"]["backbone layer"]
    assert kept in (length * config.hidden_size * 4, length * config.hidden_size * 2)
    assert acts["no checkpointing"]["per_layer"]["backbone layer"] > 5 * kept
    # Autocast's cached bf16 copy of each linear weight of a layer (Emu3 blocks have no biases), counted once each.
    layer = DriveVLAW0ForDriving(config).backbone.model.layers[0]
    linear = sum(p.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())
    assert acts["no checkpointing"]["bf16_weight_copies_per_layer"] == 2 * linear
    checks = result["checks"]
    assert checks["lm_head_measured_reduced"] == pytest.approx(checks["lm_head_formula_reduced"], rel=0.02)
    assert "batch_ratio" not in checks  # --quick skips the micro-batch check


def test_the_report_has_the_tables_notes_and_provenance(memory):
    result, report = memory
    for heading in ("## Parameters", "## Activations per sample", "### Stage 1", "### Stage 2", "## How it is counted"):
        assert heading in report
    for choice in CHOICES:
        assert report.count(f"| {choice} |") == 2
    assert "No GPU was lent to this session" in report
    assert "commit " in report and "--preset tiny --quick" in report


def test_the_step_benchmark_runs_on_a_cpu_and_reports_each_figure():
    out = _run("training_gpu.py", "--presets", "tiny", "--steps", "1", "--warmup", "0", "--batch-size", "2",
               "--decisions", "1", "--decision-warmup", "0")
    assert out["device"] == "cpu" and "CPU" in out["note"]
    tiny = out["presets"]["tiny"]
    assert {"step_ms", "tokens_per_s", "decision_ms", "peak_memory_bytes", "mixed_precision", "activation_checkpointing",
            "sequence_length", "parameters"} <= set(tiny)
    assert tiny["mixed_precision"] == "fp32" and tiny["activation_checkpointing"] is False
    assert tiny["peak_memory_bytes"] is None
    bench = _step_benchmark()
    text_tokens = len(InstructionTokenizer().encode(bench.COMMAND_TEXT, add_special_tokens=False))
    config = bench.preset_config("tiny")
    assert config.fast_tokenizer  # a sequence needs a fitted action tokenizer
    sample = bench.synthetic_samples(config, 1)[0]
    tokenizer, motions = ActionTokenizer(config), frame_motions(config, sample["ego_poses"][None].double())
    chunks = [*motions.past.unbind(1), *motions.to_next.unbind(1), poses_to_deltas(sample["trajectory"][None].double())]
    fast_tokens = sum(len(tokenizer.encode(chunk)[0]) for chunk in chunks)
    assert tiny["sequence_length"] == _sequence_length(config, fast_tokens, text_tokens)
    assert tiny["step_ms"] > 0 and tiny["decision_ms"] > 0
    assert tiny["tokens_per_s"] == pytest.approx(tiny["sequence_length"] * 2 / (tiny["step_ms"] / 1e3), rel=1e-3)
    assert all(math.isfinite(x) for x in tiny["losses"])


def test_a_preset_out_of_memory_is_recorded_and_the_run_goes_on(monkeypatch, capsys):
    bench = _step_benchmark()
    calls = []

    def out_of_memory(model, args, device, run_dir):
        calls.append(model.config.hidden_size)
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(bench, "measure_training", out_of_memory)
    out = bench.main(["--presets", "tiny,tiny", "--decisions", "1", "--decision-warmup", "0"])
    assert len(calls) == 2  # the second preset ran after the first ran out of memory
    for result in out["presets"].values():
        assert result["error"] == "out of memory" and result["where"] == "training"
        assert result["decision_ms"] > 0  # the decision is still measured
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
