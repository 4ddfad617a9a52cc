"""Per-decision latency of DriveVLA-W0 on this CPU (one thread): FAST-token decoding by the backbone vs the action expert.

For the `tiny` and `small` presets, randomly initialised models (fixed seed, eval mode, inference mode; the FAST
tokenizer fitted on made-up constant-curvature drives) and one batch-1 2VA decoding prompt (command text, two
frames of image codes, past motions, ending at the current frame's <boa>) are timed per decision:
- baseline_ar_ms: `DriveVLAW0Backbone.generate_plan` decoding a plan of `--tokens` FAST tokens and <eoa>
  (prefill + KV-cached tokens);
- ar_expert_ms: the AR expert decoding the same number of tokens through the expert;
- query_ms / flow_ms: `DriveVLAW0ExpertPolicy.predict` with the query and flow decoders (flow with the config's
  default `flow_steps`): one backbone context pass over the same prompt plus the expert's decoding.
A random model's plans have random lengths, so the two AR decoders are made to take the steps of a plan of
`--tokens` FAST tokens and its <eoa>: their heads' weights are zeroed (every logit ties, the first FAST id wins,
<eoa> never does) and the cap `max_action_tokens` is set to tokens + 2, so they stop after tokens + 1 steps.
The paper's NAVSIM plans average 5.6 FAST tokens, its in-house ones 17.8 (drivevla_w0_paper.md §4.5: query
expert / baseline = 63.1 % on an H200 at 5.6 tokens).
All policies share the baseline's backbone weights (and the expert trunk / state MLP weights), so only the decoding
differs. Repeats are interleaved round-robin over the four methods so machine-load drift hits all alike. Ratios
are expert / baseline medians. Progress goes to stderr; the last stdout line is one JSON object
{"tokens": N, "tiny": {...}, "small": {...}} of medians in milliseconds and ratios.
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

import argparse  # noqa: E402

from benchmarks.made_up_drives import made_up_drives, with_fitted_tokenizer  # noqa: E402
from policies.action_expert import DriveVLAW0ExpertPolicy, state_features  # noqa: E402
from policies.action_tokens import ActionTokenizer, frame_motions  # noqa: E402
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


def preset_config(preset: str, tokens: int, **overrides) -> DriveVLAW0Config:
    """The preset with a fitted FAST tokenizer and the AR cap at `tokens` FAST tokens (+ <boa>, <eoa>)."""
    config = DriveVLAW0Config.preset(preset, max_action_tokens=tokens + 2, **overrides)
    return with_fitted_tokenizer(config, made_up_drives(dtype=torch.float64))


def build_inputs(config: DriveVLAW0Config):
    """Batch-1 decoding prompt ending at <boa>, and the expert's state features."""
    g = torch.Generator().manual_seed(SEED)
    text = InstructionTokenizer().encode(COMMAND_TEXT, add_special_tokens=False)
    h, w = config.image_grid
    codes = torch.randint(0, config.vq_codebook_size, (1, config.num_history_frames, h, w), generator=g)
    ego_poses, _ = made_up_drives(1, torch.float64)
    tokenizer, motions = ActionTokenizer(config), frame_motions(config, ego_poses)
    past = [tokenizer.encode(motions.past[:, f]) for f in range(config.num_history_frames)]
    actions = [tokenizer.encode(motions.to_next[:, f]) for f in range(config.num_history_frames - 1)]
    prompt = SequenceBuilder(config).build([text], codes, past, actions)
    assert int(prompt.input_ids[0, -1]) == config.special_id("<boa>")
    state = state_features(tokenizer.normalizer.normalize(motions.past[:, -1]).float(), torch.tensor([0]))
    return prompt, state


def build_models(preset: str, tokens: int):
    """Baseline backbone and one expert policy per decoder, all on the same backbone weights; the AR heads zeroed
    (module docstring)."""
    base = preset_config(preset, tokens)
    torch.manual_seed(SEED)
    backbone = DriveVLAW0Backbone(base).eval()
    policies = {}
    shared_trunk = None
    for decoder in ("query", "ar", "flow"):
        torch.manual_seed(SEED)
        policy = DriveVLAW0ExpertPolicy(DriveVLAW0Config.from_dict({**base.to_dict(), "expert_decoder": decoder}))
        policy.backbone.load_state_dict(backbone.state_dict())
        if shared_trunk is None:
            shared_trunk = (policy.expert.state_dict(), policy.state_in.state_dict())
        else:
            policy.expert.load_state_dict(shared_trunk[0])
            policy.state_in.load_state_dict(shared_trunk[1])
        policies[decoder] = policy.eval()
    with torch.no_grad():
        backbone.lm_head.weight.zero_()
        policies["ar"].ar_out.weight.zero_()
    return base, backbone, policies


def bench(preset: str, tokens: int) -> dict[str, float]:
    log(f"[{preset}] building models")
    config, backbone, policies = build_models(preset, tokens)
    prompt, state = build_inputs(config)
    n_params = sum(p.numel() for p in backbone.parameters())
    log(f"[{preset}] prompt length {prompt.input_ids.shape[1]}, backbone params {n_params / 1e6:.1f}M, "
        f"{tokens} FAST tokens, flow_steps {config.flow_steps}")
    gen = torch.Generator().manual_seed(SEED)
    runs = {
        "baseline_ar_ms": lambda: backbone.generate_plan(prompt),
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
        decoded = backbone.generate_plan_tokens(prompt)[0]
        assert len(decoded) == tokens + 1, f"the baseline took {len(decoded)} steps, not {tokens + 1}"
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=6, help="FAST tokens per plan (paper: 5.6 on NAVSIM)")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {"tokens": args.tokens} | {preset: bench(preset, args.tokens) for preset in ("tiny", "small")}
    log(f"total {time.perf_counter() - start:.1f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
