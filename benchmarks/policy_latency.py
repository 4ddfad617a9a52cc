"""Per-decision latency of DriveVLA-W0 on this CPU (one thread): baseline AR decoding through the backbone vs the action expert.

For the `tiny` and `small` presets, randomly initialised models (fixed seed, eval mode, inference
mode) and one batch-1 decoding prompt (command text, history image codes, state tokens, ending at
<boa>) are timed per decision:
- baseline_ar_ms: `DriveVLAW0Backbone.generate_actions` (prefill + 24 KV-cached action tokens);
- query_ms / ar_expert_ms / flow_ms: `DriveVLAW0ExpertPolicy.predict` with each expert decoder
  (flow with the config's default `flow_steps`), i.e. one backbone context pass over the same
  prompt plus the expert's decoding. All policies share the baseline's backbone weights (and the
  expert trunk / state MLP weights), so only the decoding differs.
Repeats are interleaved round-robin over the four methods so machine-load drift hits all alike.
Ratios are expert / baseline medians. Progress goes to stderr; the last stdout line is one JSON
object {"tiny": {...}, "small": {...}} of medians in milliseconds and ratios.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded BLAS, set before torch is imported

import json
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch

torch.set_num_threads(1)

from policies.action_expert import DriveVLAW0ExpertPolicy, state_features  # noqa: E402
from policies.action_tokens import StateTokenizer  # noqa: E402
from policies.backbone import DriveVLAW0Backbone  # noqa: E402
from policies.config import DriveVLAW0Config  # noqa: E402
from policies.sequence import SequenceBuilder  # noqa: E402
from policies.text import InstructionTokenizer  # noqa: E402

SEED = 0
REPEATS = {"tiny": 20, "small": 10}
WARMUP = 2
COMMAND_TEXT = "turn left at the next intersection"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_inputs(config: DriveVLAW0Config):
    """Batch-1 decoding prompt ending at <boa>, and the expert's continuous state features."""
    g = torch.Generator().manual_seed(SEED)
    text_ids, text_mask = InstructionTokenizer().batch_encode([COMMAND_TEXT])
    h, w = config.image_grid
    history = torch.randint(0, config.vq_codebook_size, (1, config.num_history_frames, h, w), generator=g)
    speed, accel, command = torch.tensor([8.0]), torch.tensor([0.5]), torch.tensor([0])
    state_ids = StateTokenizer(config).encode(speed, accel, command)
    prompt = SequenceBuilder(config).build(text_ids, text_mask, history, state_ids)
    assert int(prompt.input_ids[0, -1]) == config.special_id("<boa>")
    return prompt, state_features(config, speed, accel, command)


def build_models(preset: str):
    """Baseline backbone and one expert policy per decoder, all on the same backbone weights."""
    base = DriveVLAW0Config.preset(preset)
    torch.manual_seed(SEED)
    backbone = DriveVLAW0Backbone(base).eval()
    policies = {}
    shared_trunk = None
    for decoder in ("query", "ar", "flow"):
        torch.manual_seed(SEED)
        policy = DriveVLAW0ExpertPolicy(DriveVLAW0Config.preset(preset, expert_decoder=decoder))
        policy.backbone.load_state_dict(backbone.state_dict())
        if shared_trunk is None:
            shared_trunk = (policy.expert.state_dict(), policy.state_in.state_dict())
        else:
            policy.expert.load_state_dict(shared_trunk[0])
            policy.state_in.load_state_dict(shared_trunk[1])
        policies[decoder] = policy.eval()
    return base, backbone, policies


def bench(preset: str) -> dict[str, float]:
    log(f"[{preset}] building models")
    config, backbone, policies = build_models(preset)
    prompt, state = build_inputs(config)
    n_params = sum(p.numel() for p in backbone.parameters())
    log(f"[{preset}] prompt length {prompt.input_ids.shape[1]}, backbone params {n_params / 1e6:.1f}M, "
        f"{config.num_action_tokens} action tokens, flow_steps {config.flow_steps}")
    gen = torch.Generator().manual_seed(SEED)
    runs = {
        "baseline_ar_ms": lambda: backbone.generate_actions(prompt),
        "query_ms": lambda: policies["query"].predict(prompt, state),
        "ar_expert_ms": lambda: policies["ar"].predict(prompt, state),
        "flow_ms": lambda: policies["flow"].predict(prompt, state, flow_steps=config.flow_steps, generator=gen),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for name, run in runs.items():
            for _ in range(WARMUP):
                traj = run()
            assert traj.shape == (1, config.num_poses, 3) and torch.isfinite(traj).all(), name
        log(f"[{preset}] warmed up; timing {REPEATS[preset]} repeats")
        for i in range(REPEATS[preset]):
            for name, run in runs.items():  # round-robin: load drift affects all methods alike
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3)
            if (i + 1) % 5 == 0:
                log(f"[{preset}] {i + 1}/{REPEATS[preset]}: " +
                    ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in times.items()))
    result = {k: round(statistics.median(v), 2) for k, v in times.items()}
    base = statistics.median(times["baseline_ar_ms"])
    for key, ratio in (("query_ms", "query_ratio"), ("ar_expert_ms", "ar_expert_ratio"), ("flow_ms", "flow_ratio")):
        result[ratio] = round(statistics.median(times[key]) / base, 3)
    log(f"[{preset}] {result}")
    return result


def main() -> None:
    start = time.perf_counter()
    results = {preset: bench(preset) for preset in ("tiny", "small")}
    log(f"total {time.perf_counter() - start:.1f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
