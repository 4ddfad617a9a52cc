"""Fuzzing the checkpoint entrance: a micro checkpoint saved in the real layout, its config.json fields, its tensors and
its bytes mutated. Loading must refuse with a CheckpointError, or load exactly the saved model (same tensors, same
config fields but for FREE_FIELDS): never another exception, never a silently different model."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from policies.checkpoint import CONFIG_FIELDS, FREE_FIELDS, CheckpointError, config_fields, load_checkpoint
from tests.policies.checkpoints import same_state, save_micro


class Base(dict):
    def __repr__(self) -> str:  # hypothesis prints the fixture with every falsifying example
        return "<the saved micro checkpoint>"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The saved checkpoint: its model, its files' bytes, its tensors and metadata (with the save-time record)."""
    folder = tmp_path_factory.mktemp("base")
    model = save_micro(folder)
    with safe_open(folder / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    return Base(model=model, config=(folder / "config.json").read_bytes(),
                weights=(folder / "model.safetensors").read_bytes(), tensors=load_file(folder / "model.safetensors"),
                metadata=metadata)


def outcome(base: dict, config: bytes, weights: bytes | None = None, tensors: dict | None = None,
            metadata: dict | None = None) -> str:
    """Write a checkpoint from these parts and load it: "refused", or "loaded" after checking that it is the saved
    model."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_bytes(config)
        if tensors is not None:
            save_file(tensors, folder / "model.safetensors", metadata=metadata)
        else:
            (folder / "model.safetensors").write_bytes(base["weights"] if weights is None else weights)
        try:
            loaded = load_checkpoint(folder)
        except CheckpointError as err:
            _event(f"refused: {str(err).split(': ', 1)[1][:40]}")
            return "refused"
    saved = base["model"]
    assert same_state(loaded, saved), "a mutated checkpoint loaded to other weights"
    fields, expected = config_fields(loaded.config), config_fields(saved.config)
    changed = {name for name in CONFIG_FIELDS if fields[name] != expected[name]}
    assert changed <= set(FREE_FIELDS), f"a mutated checkpoint loaded with other config fields: {changed}"
    _event("loaded")
    return "loaded"


def _event(text: str) -> None:
    """What became of an example, for `pytest --hypothesis-show-statistics`."""
    if currently_in_test_context():
        event(text)


# --- config.json ----------------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=5)


def _nudge(value, factor: float, delta: float):
    """A plausible but different value of the same shape: numbers scaled and shifted, lists entry by entry."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_nudge(v, factor, delta) for v in value]
    moved = value * factor + delta
    return int(moved) if isinstance(value, int) and float(moved).is_integer() else moved


CONFIG_MUTATIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([*CONFIG_FIELDS, "dtype", "model_type", "architectures", "extra", ""]),
              JSON_VALUES),
    st.tuples(st.just("delete"), st.sampled_from([*CONFIG_FIELDS, "dtype", "model_type", "transformers_version"]),
              st.none()),
    st.tuples(st.just("nudge"), st.sampled_from(list(CONFIG_FIELDS)),
              st.tuples(st.sampled_from([1, -1, 2, 0.5, 0]), st.sampled_from([0, 1, -1, 0.25, 1e6, math.inf]))),
    st.tuples(st.just("reverse"), st.sampled_from([n for n, r in CONFIG_FIELDS.items() if r.kind in ("range", "sizes")]),
              st.none()),
)


@given(mutations=st.lists(CONFIG_MUTATIONS, min_size=1, max_size=3))
def test_mutated_config_fields_are_refused_or_change_nothing(base, mutations):
    fields = json.loads(base["config"])
    for op, name, arg in mutations:
        if op == "set":
            fields[name] = arg
        elif op == "delete":
            fields.pop(name, None)
        elif op == "nudge" and name in fields:
            fields[name] = _nudge(fields[name], *arg)
        elif op == "reverse" and isinstance(fields.get(name), list):
            fields[name] = fields[name][::-1]
    outcome(base, json.dumps(fields).encode())


@given(data=st.data(), edits=st.lists(st.tuples(st.sampled_from(["replace", "delete", "insert"]), st.floats(0, 1),
                                                 st.sampled_from(list(b'0123456789-.e "[]{},:tfn') + [0xFF])),
                                       min_size=1, max_size=3), cut=st.booleans())
def test_mangled_config_text_is_refused_or_changes_nothing(base, data, edits, cut):
    text = bytearray(base["config"])
    for op, where, byte in edits:
        at = min(int(where * len(text)), len(text) - 1)
        if op == "replace":
            text[at] = byte
        elif op == "delete":
            del text[at]
        else:
            text[at:at] = bytes([byte])
    if cut:
        text = text[: data.draw(st.integers(0, len(text)))]
    outcome(base, bytes(text))


# --- model.safetensors ----------------------------------------------------------------------------------------
DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.bool, torch.float32]
TENSOR_MUTATIONS = st.tuples(
    st.sampled_from(["delete", "rename", "flatten", "unsqueeze", "shorten", "dtype", "values", "nan", "add"]),
    st.integers(0, 10_000), st.sampled_from(DTYPES))


@given(mutations=st.lists(TENSOR_MUTATIONS, min_size=1, max_size=3), keep_record=st.booleans())
def test_mutated_tensors_are_refused_or_change_nothing(base, mutations, keep_record):
    tensors = dict(base["tensors"])
    for op, pick, dtype in mutations:
        names = sorted(tensors)
        if not names:
            break
        name = names[pick % len(names)]
        t = tensors[name]
        if op == "delete":
            del tensors[name]
        elif op == "rename":
            tensors[name.replace("0", "1") if "0" in name else name + "_"] = tensors.pop(name)
        elif op == "flatten":
            tensors[name] = t.reshape(-1).clone()
        elif op == "unsqueeze":
            tensors[name] = t.unsqueeze(0).clone()
        elif op == "shorten" and t.dim() > 0 and t.shape[0] > 0:
            tensors[name] = t[:-1].clone()
        elif op == "dtype":
            tensors[name] = t.to(dtype)
        elif op in ("values", "nan") and keep_record:  # without the record, new values are trusted (by design)
            if t.is_floating_point() and t.numel():
                tensors[name] = t + 1.0 if op == "values" else t.flatten().index_fill(0, torch.tensor([0]), math.nan).view_as(t)
        elif op == "nan" and t.is_floating_point() and t.numel():  # non-finite values are refused with or without
            tensors[name] = t.flatten().index_fill(0, torch.tensor([0]), math.inf).view_as(t)
        elif op == "add":
            tensors[f"{name}.extra"] = torch.zeros(pick % 4)
    metadata = base["metadata"] if keep_record else {"format": "pt"}
    outcome(base, base["config"], tensors=tensors, metadata=metadata)


@given(data=st.data(), op=st.sampled_from(["truncate", "flip", "insert", "append"]),
       region=st.sampled_from(["header", "data"]), byte=st.integers(1, 255), count=st.integers(1, 64))
def test_mutated_weight_bytes_are_refused_or_change_nothing(base, data, op, region, byte, count):
    weights = bytearray(base["weights"])
    header_end = 8 + int.from_bytes(weights[:8], "little")
    at = data.draw(st.integers(0, header_end - 1) if region == "header" else st.integers(header_end, len(weights) - 1))
    if op == "truncate":
        weights = weights[:at]
    elif op == "flip":
        weights[at] ^= byte
    elif op == "insert":
        weights[at:at] = bytes([byte]) * count
    else:
        weights += bytes([byte]) * count
    outcome(base, base["config"], weights=bytes(weights))


def test_the_unmutated_checkpoint_loads(base):
    assert outcome(base, base["config"], weights=base["weights"]) == "loaded"
    assert outcome(base, base["config"], tensors=dict(base["tensors"]), metadata={"format": "pt"}) == "loaded"
