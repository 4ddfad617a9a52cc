"""A trained model folder's training record (`training.json`): each stage it went through, its settings and data."""
from __future__ import annotations

import json
from pathlib import Path

TRAINING_RECORD = "training.json"  # in a final model's folder; how the model was made, not what it computes


def training_record(model_dir: str | Path) -> dict:
    """The training record in a model folder (`{"stages": [...]}`); empty stages where there is none (a model not
    trained by w0sim's trainer, or saved before the record existed)."""
    path = Path(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else {"stages": []}


def write_training_record(model_dir: str | Path, stages: list[dict]) -> None:
    """Write a model folder's training record: its stages' entries, oldest first."""
    (Path(model_dir) / TRAINING_RECORD).write_text(json.dumps({"stages": stages}, indent=1) + "\n")
