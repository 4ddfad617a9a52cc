"""Trains stages 0-2 of a micro DriveVLA-W0 on a collected data folder, on each process that `torch.distributed.run`
starts (one or more, gloo on CPU), and saves each process's weights after each stage, for test_distributed.py.

Usage: python -m torch.distributed.run --nproc_per_node N distributed_run.py DATA OUT CONFIG_JSON
CONFIG_JSON: {"model": {micro config overrides}, "train": {TrainConfig fields for every stage}, "float64": bool,
"stages": [stages to train, default 0, 1, 2], "stop_after": steps (the last stage stops early, as if interrupted),
"held_out": bool (evaluate on the first 4 samples every 2 steps)}:
float64 builds the model in double precision, where rounding is too small for AdamW to turn the ~1e-9 gradients
of parameters that get none in exact arithmetic (a conv bias before a per-channel GroupNorm) into +-lr steps.
Writes OUT/stage{k}/ (the trainer's run folder) and OUT/weights/rank{r}_stage{k}.safetensors.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.policies.checkpoints import micro_config  # noqa: E402
from training.dataset import ExpertDataset  # noqa: E402
from training.pipeline import STAGE_DEFAULTS, stage_model  # noqa: E402
from training.trainer import Trainer  # noqa: E402


def main(data: str, out: str, options: str) -> None:
    """Train as CONFIG_JSON says; the default dtype and thread count are restored after (a test calls this)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fields = json.loads(options)
        if fields.get("float64"):
            torch.set_default_dtype(torch.float64)
        _train(data, Path(out), fields)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def _train(data: str, run: Path, fields: dict) -> None:
    config = micro_config(**fields["model"])
    dataset = ExpertDataset(data)
    held_out = {"eval_every": 2, "eval_samples": 4} if fields.get("held_out") else {}
    for stage in fields.get("stages", (0, 1, 2)):
        model = stage_model(run, stage, config)
        trainer = Trainer(model, dataset, replace(STAGE_DEFAULTS[stage], **fields["train"], **held_out),
                          run / f"stage{stage}", show_progress=False, eval_dataset=dataset if held_out else None)
        trainer.train(stop_after=fields.get("stop_after"))
        weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        rank = trainer.accelerator.process_index
        (run / "weights").mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in weights.items()}, run / "weights" / f"rank{rank}_stage{stage}.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
