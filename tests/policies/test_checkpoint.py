"""Strict checkpoint loading (policies.checkpoint): every damaged or mismatched checkpoint is a CheckpointError that names
the file and the field or tensors, and a good one loads exactly the saved model."""
from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from policies.action_tokens import fit_action_tokenizer
from policies.checkpoint import (
    ADDED_FIELDS,
    CONFIG_FIELDS,
    FREE_FIELDS,
    NOT_SAVED,
    RECORD_CONFIG,
    RECORD_SHA256,
    CheckpointError,
    check_checkpoint,
    config_fields,
    config_problems,
    load_checkpoint,
)
from policies.config import DriveVLAW0Config
from policies.model import DriveVLAW0ForDriving
from tests.policies.checkpoints import (
    MICRO_EMU3,
    driving_motion,
    edit_config,
    edit_tensors,
    micro_config,
    same_state,
    save_micro,
    strip_record,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro")
    return folder, save_micro(folder)


@pytest.fixture
def ckpt(saved, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(saved[0], folder)
    return folder


def test_a_saved_checkpoint_loads_to_the_same_model_with_its_record(saved):
    folder, model = saved
    loaded = load_checkpoint(folder)
    assert same_state(model, loaded) and not loaded.training
    assert config_fields(loaded.config) == config_fields(model.config)
    with safe_open(folder / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata[RECORD_CONFIG]) == config_fields(model.config) and len(metadata[RECORD_SHA256]) == 64
    # The record leaves the tensors as saved and the data section 8-byte aligned.
    (header_size,) = struct.unpack("<Q", (folder / "model.safetensors").read_bytes()[:8])
    assert header_size % 8 == 0
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in load_file(folder / "model.safetensors").items())


def test_the_tables_cover_the_config_and_the_unsaved_buffers():
    assert set(CONFIG_FIELDS) == set(DriveVLAW0Config.__annotations__)
    assert set(FREE_FIELDS) < set(CONFIG_FIELDS)
    for overrides in ({}, {"use_action_expert": False}, {"image_input": "vit"}):
        config = micro_config(**overrides)  # fitted off the meta device
        with torch.device("meta"):
            model = DriveVLAW0ForDriving(config)
        saved = set(model.state_dict())
        assert {name.rsplit(".", 1)[-1] for name, _ in model.named_buffers() if name not in saved} == set(NOT_SAVED)


@pytest.mark.parametrize("record", [True, False])
def test_deleted_tensors_are_named(ckpt, saved, record):
    if not record:
        strip_record(ckpt)
    edit_tensors(ckpt, lambda t: {k: v for k, v in t.items() if not k.startswith("policy.expert.")})
    count = sum(k.startswith("policy.expert.") for k in saved[1].state_dict())
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: {count} tensors missing: policy\.expert\."):
        check_checkpoint(ckpt)


def test_unexpected_renamed_reshaped_and_retyped_tensors_are_named(ckpt):
    def edit(t):
        t["policy.extra"] = torch.zeros(2)
        t["policy.query_norm.weight"] = t["policy.query_norm.weight"][:-1].clone()
        t["policy.query_out.weight"] = t["policy.query_out.weight"].half()
        t["vq.quantizer.unused_steps"] = t["vq.quantizer.unused_steps"].int()
        return t

    edit_tensors(ckpt, edit)
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(ckpt)
    msg = str(err.value)
    assert "1 tensor unexpected: policy.extra" in msg
    assert "policy.query_norm.weight [15] (expected [16])" in msg
    assert "policy.query_out.weight F16 (expected F32)" in msg and "vq.quantizer.unused_steps I32 (expected I64)" in msg


def test_long_listings_are_bounded(ckpt):
    edit_tensors(ckpt, lambda t: {f"junk.{i}": torch.zeros(1) for i in range(300)})
    with pytest.raises(CheckpointError, match=r"300 tensors unexpected: .* and 295 more") as err:
        check_checkpoint(ckpt)
    assert len(str(err.value)) < 3000


OTHER_WEIGHTS = {
    "expert and tokenizer": (dict(expert_hidden_size=32, vq_codebook_size=16, expert_decoder="flow"), (
        "expert_hidden_size is 16 in config.json, 32 in model.safetensors (policy.expert.norm.weight [32])",
        "vq_codebook_size is 8 in config.json, 16 in model.safetensors",
        'expert_decoder is "query" in config.json, "flow" in model.safetensors')),
    "backbone": (dict(hidden_size=48, num_hidden_layers=2, fast_vocab_size=128), (
        "hidden_size is 32 in config.json, 48 in model.safetensors",
        "num_hidden_layers is 1 in config.json, 2 in model.safetensors",
        "vocabulary size")),  # fast_vocab_size moves the vocabulary
}


@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("other", OTHER_WEIGHTS)
def test_a_config_over_other_weights_names_the_fields_and_both_values(ckpt, tmp_path, record, other):
    overrides, expected = OTHER_WEIGHTS[other]
    save_micro(tmp_path / "other", **overrides)
    shutil.copy(tmp_path / "other" / "model.safetensors", ckpt / "model.safetensors")
    if not record:
        strip_record(ckpt)
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(ckpt)
    for text in expected:
        assert text in str(err.value)


def test_an_ar_expert_checkpoint_of_any_fast_vocabulary_is_checked(tmp_path):
    """policy.ar_out has fast_vocab_size + 1 rows (the FAST ids and <eoa>): 66 here, as 513 in the small preset and 2049
    in the paper's."""
    model = save_micro(tmp_path, expert_decoder="ar", fast_vocab_size=65)
    assert model.policy.ar_out.weight.shape[0] % 3 == 0
    check_checkpoint(tmp_path)


@pytest.mark.parametrize("overrides", [{"image_input": "vit"}, {"num_anchors": 4, "anchor_queries": 2,
                                                                 "anchor_layers": 1, "anchor_heads": 2}])
def test_qwen_track_and_anchor_checkpoints_keep_their_names_and_pass_the_checks(tmp_path, overrides):
    """transformers would save the Qwen backbone under the Hub's names (`model.language_model.*` as `model.*`); the
    project's checkpoints keep the in-memory names its checks and loader read."""
    model = save_micro(tmp_path, **overrides)
    assert set(load_file(tmp_path / "model.safetensors")) == set(model.state_dict())
    check_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="image_input"):
        edit_config(tmp_path, lambda c: c.update(image_input="vq" if "image_input" in overrides else "vit"))
        check_checkpoint(tmp_path)


def test_fields_that_differ_from_the_record_are_named(ckpt):
    edit_config(ckpt, lambda c: c.update(action_high=[6.5, 0.25, 0.1], frame_interval_s=0.5))
    with pytest.raises(CheckpointError, match="recorded in model.safetensors at save time") as err:
        check_checkpoint(ckpt)
    assert "action_high is [6.5, 0.25, 0.1] in config.json, [6.0" in str(err.value)
    assert "frame_interval_s is 0.5 in config.json, 1.0 when" in str(err.value)


def test_another_fast_tokenizer_than_the_recorded_one_is_refused(ckpt):
    other = fit_action_tokenizer(micro_config(), *driving_motion(50, seed=9))["fast_tokenizer"]
    assert other != micro_config().fast_tokenizer
    edit_config(ckpt, lambda c: c.update(fast_tokenizer=other))
    with pytest.raises(CheckpointError, match="recorded in model.safetensors at save time: fast_tokenizer is "):
        check_checkpoint(ckpt)


def test_a_fast_tokenizer_that_differs_from_the_record_gives_a_bounded_message(ckpt):
    other = fit_action_tokenizer(micro_config(), *driving_motion(50, seed=9))["fast_tokenizer"]
    edit_config(ckpt, lambda c: c.update(fast_tokenizer=other))
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(ckpt)
    assert len(str(err.value)) < 3000


def test_a_fast_tokenizer_larger_than_the_fast_vocabulary_is_refused(ckpt):
    strip_record(ckpt)  # a checkpoint saved before the record (the shipped one): config.json alone is the truth
    edit_config(ckpt, lambda c: c.update(fast_tokenizer=micro_config(fast_vocab_size=128).fast_tokenizer))
    with pytest.raises(CheckpointError, match="fast_tokenizer"):
        check_checkpoint(ckpt)


def test_free_fields_may_differ_from_the_record(ckpt, saved):
    edit_config(ckpt, lambda c: c.update(flow_steps=3, vision_loss_weight=0.0))
    loaded = load_checkpoint(ckpt)
    assert loaded.config.flow_steps == 3 and loaded.config.vision_loss_weight == 0.0 and same_state(loaded, saved[1])


def _fast(edit):
    """config.json edit: the FAST tokenizer's JSON with `edit(data)` applied."""
    def apply(c):
        data = json.loads(c["fast_tokenizer"])
        edit(data)
        c["fast_tokenizer"] = json.dumps(data)
    return apply


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.update(action_low=[0.1, -0.2]), "action_low is \\[0.1, -0.2\\]; it must be 3 finite numbers"),
    (lambda c: c.update(action_high=[1.0, float("nan"), 1.0]), "action_high is \\[1.0, NaN, 1.0\\]; it must be 3 finite"),
    (lambda c: c.update(action_low=["0", 0, 0]), "action_low is \\[\"0\", 0, 0\\]; it must be 3 finite numbers"),
    (lambda c: c.update(action_low=[True, 0, 0]), "action_low is \\[true, 0, 0\\]; it must be 3 finite numbers"),
    (lambda c: c.update(action_low=0.1), "action_low is 0.1; it must be 3 finite numbers"),
    (lambda c: c.update(action_high=[2000.0, 1.0, 1.0]), "action_high has 2000; every entry must be in \\[-1000, 1000\\]"),
    (lambda c: c.update(action_high=c["action_low"]), "action_low .* is not below action_high"),
    (lambda c: c.update(fast_tokenizer=5), "fast_tokenizer is 5; it must be a string"),
    (lambda c: c.update(fast_tokenizer=c["fast_tokenizer"][:100]), "fast_tokenizer is not a FAST tokenizer: .*does not parse"),
    (lambda c: c.update(fast_tokenizer="[1, 2]"), "fast_tokenizer is not a FAST tokenizer: .*must be an object"),
    (_fast(lambda d: d.update(tokenizer="garbage")), "fast_tokenizer is not a FAST tokenizer: tokenizer is not a valid"),
    (_fast(lambda d: d.pop("scale")), "fast_tokenizer is not a FAST tokenizer: .*missing scale"),
    (_fast(lambda d: d.update(scale=-1.0)), "fast_tokenizer is not a FAST tokenizer: scale must be a positive"),
    (_fast(lambda d: d.update(max_token=d["max_token"] + 1)), "fast_tokenizer is not a FAST tokenizer: .*lacks alphabet"),
    (_fast(lambda d: d.update(format="other")), "fast_tokenizer is not a FAST tokenizer: unsupported format"),
    (lambda c: c.update(fast_vocab_size=1), "fast_vocab_size is 1; it must be in \\[2,"),
    (lambda c: c.update(max_action_tokens=2), "max_action_tokens is 2; it must be in \\[3,"),
    (lambda c: c.update(num_past_actions=0), "num_past_actions is 0; it must be in \\[1, 64\\]"),
    (lambda c: c.update(vision_loss_weight=-0.5), "vision_loss_weight is -0.5; it must be in \\[0,"),
    (lambda c: c.update(action_bins=8), "unknown field 'action_bins'"),
    (lambda c: c.update(world_model_loss_weight=1.0), "unknown field 'world_model_loss_weight'"),
    (lambda c: c.update(hidden_size=-32), "hidden_size is -32; it must be in \\[1,"),
    (lambda c: c.update(hidden_size="32"), "hidden_size is \"32\"; it must be an integer"),
    (lambda c: c.update(hidden_size=32.0), "hidden_size is 32.0; it must be an integer"),
    (lambda c: c.update(use_action_expert=1), "use_action_expert is 1; it must be true or false"),
    (lambda c: c.update(expert_decoder="diffusion"), "expert_decoder is \"diffusion\"; it must be one of"),
    (lambda c: c.update(vq_channels=[]), "vq_channels is \\[\\]; it must be a list"),
    (lambda c: c.update(frame_interval_s=float("inf")), "frame_interval_s is Infinity; it must be a finite"),
    (lambda c: c.update(hidden_sizes=32), "unknown field 'hidden_sizes'"),
    (lambda c: {k: v for k, v in c.items() if k != "num_poses"}, "field 'num_poses' is missing"),
    (lambda c: {k: v for k, v in c.items() if k != "fast_tokenizer"}, "field 'fast_tokenizer' is missing"),
    (lambda c: c.update(model_type="llama"), "model_type is \"llama\""),
    (lambda c: c.update(dtype="int8"), "dtype is \"int8\""),
    (lambda c: c.update(num_key_value_heads=3, num_attention_heads=4), "num_attention_heads is 4, not a multiple"),
    (lambda c: c.update(diffusion_sample_steps=2000, diffusion_train_timesteps=1000),
     "diffusion_sample_steps is 2000, more than diffusion_train_timesteps 1000"),
    (lambda c: c.update(text_vocab_size=8), "text_vocab_size is 8; it must be in \\[61,"),
    (lambda c: [1, 2], "holds a JSON list"),
])
def test_config_fields_are_checked_by_type_and_range(ckpt, edit, field):
    edit_config(ckpt, edit)
    with pytest.raises(CheckpointError, match=f"{ckpt}.*config.json: .*{field}"):
        check_checkpoint(ckpt)


def test_an_unfitted_fast_tokenizer_is_a_valid_field():
    """"" (no tokenizer fitted yet) is a value the config holds before `fit_action_tokenizer`: the rule accepts it."""
    fields = config_fields(micro_config(fast_tokenizer=""))
    assert fields["fast_tokenizer"] == "" and config_problems(fields) == []
    assert config_problems(config_fields(micro_config())) == []


def test_a_config_whose_dtype_and_older_torch_dtype_disagree_is_refused_naming_both(ckpt):
    """transformers writes the weights' dtype as "dtype" (older versions: "torch_dtype"); a config.json with both must
    not say two things."""
    edit_config(ckpt, lambda c: c.update(dtype="float32", torch_dtype="float16"))
    with pytest.raises(CheckpointError, match=f"{ckpt}.*config.json: .*dtype is 'float32' but torch_dtype is 'float16'"):
        check_checkpoint(ckpt)


def test_a_config_that_is_not_json_or_repeats_a_field_is_refused(ckpt):
    (ckpt / "config.json").write_text('{"hidden_size": 32, "hidden_size": 32}')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON .*'hidden_size' appears more than once"):
        check_checkpoint(ckpt)
    (ckpt / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        check_checkpoint(ckpt)


def test_a_float16_checkpoint_must_say_so(tmp_path):
    model = save_micro(tmp_path / "half")
    model.half().save_pretrained(tmp_path / "half")
    assert load_checkpoint(tmp_path / "half").dtype == torch.float16
    edit_config(tmp_path / "half", lambda c: c.update(dtype="float32"))
    with pytest.raises(CheckpointError, match=r"tensors of another dtype: .* F16 \(expected F32\)"):
        check_checkpoint(tmp_path / "half")


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) - 100], "model.safetensors is truncated: its header indexes"),
    (lambda b: b[:20], "model.safetensors is truncated or not a safetensors file"),
    (lambda b: b[:5], "model.safetensors is not a safetensors file: it holds 5 bytes"),
    (lambda b: b[:8], "model.safetensors is truncated or not a safetensors file: its first 8 bytes announce"),
    (lambda b: b + b"\0" * 16, "model.safetensors has 16 bytes after its last tensor"),
    (lambda b: b[:8] + b"[" + b[9:], "model.safetensors is not a safetensors file: its header is not JSON"),
    (lambda b: b"PK\x03\x04" + b[4:], "model.safetensors is truncated or not a safetensors file"),
])
def test_damaged_weight_files_are_refused_naming_the_file(ckpt, damage, message):
    path = ckpt / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        check_checkpoint(ckpt)


def test_edited_tensor_data_fails_the_recorded_hash_and_non_finite_weights_are_refused(ckpt):
    path = ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55  # inside the last tensor's data: the header stays valid
    path.write_bytes(bytes(data))
    check_checkpoint(ckpt)  # nothing but the data changed
    with pytest.raises(CheckpointError, match="do not hash to the sha256 recorded"):
        load_checkpoint(ckpt)
    strip_record(ckpt)
    edit_tensors(ckpt, lambda t: {**t, "policy.queries": t["policy.queries"].index_fill(0, torch.tensor([0]), float("inf"))})
    with pytest.raises(CheckpointError, match="non-finite values .* in 1 tensor: policy.queries"):
        load_checkpoint(ckpt)


def test_folders_without_the_files_are_refused(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="is not a folder"):
        check_checkpoint(tmp_path / "absent")
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"has no model.safetensors .*pytorch_model.bin \(sharded or pickled"):
        check_checkpoint(ckpt)
    (ckpt / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="model.safetensors is not a regular file"):
        check_checkpoint(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        check_checkpoint(ckpt)


def test_weights_transformers_reports_as_not_loaded_exactly_are_refused_by_kind(ckpt, monkeypatch):
    """The last guard, for a transformers that renames or converts weights behind the header checks: whatever it reports
    in its loading info is an error naming the kind of problem in words and the tensors."""
    load = DriveVLAW0ForDriving.from_pretrained.__func__

    def renaming(cls, *args, **kwargs):
        model, info = load(cls, *args, **kwargs)
        return model, {**info, "missing_keys": ["policy.query_out.weight"], "unexpected_keys": ["policy.renamed"]}

    monkeypatch.setattr(DriveVLAW0ForDriving, "from_pretrained", classmethod(renaming))
    with pytest.raises(CheckpointError, match=r"model\.safetensors did not load exactly: 1 missing keys: "
                                              r"policy\.query_out\.weight; 1 unexpected keys: policy\.renamed"):
        load_checkpoint(ckpt)


def test_an_emu3_tokenizer_checkpoint_passes_the_checks_and_loads(tmp_path):
    model = save_micro(tmp_path, **MICRO_EMU3)
    loaded = load_checkpoint(tmp_path)
    assert same_state(model, loaded) and loaded.config.vq_model == "emu3"
    edit_config(tmp_path, lambda c: c.update(vq_model="w0sim"))
    with pytest.raises(CheckpointError, match="tensors missing: vq\\.encoder\\.net.*tensors unexpected: vq\\.model\\."):
        check_checkpoint(tmp_path)


@pytest.mark.parametrize("overrides", [
    {**MICRO_EMU3, "emu3_vq_attn_stages": ()},  # transformers' Emu3VQVAE builds without attention blocks
    {"image_input": "vit", "use_action_expert": False, "vit_fullatt_blocks": ()},  # a ViT of windowed blocks only
])
def test_empty_index_lists_are_valid_fields(tmp_path, overrides):
    model = save_micro(tmp_path, **overrides)
    assert same_state(model, load_checkpoint(tmp_path))
    edit_config(tmp_path, lambda c: c.update({k: [9999] for k, v in overrides.items() if v == ()}))
    with pytest.raises(CheckpointError, match="has 9999; every entry must be in"):
        check_checkpoint(tmp_path)


def test_a_checkpoint_saved_before_the_added_fields_loads_with_their_defaults(ckpt, saved):
    """The shipped checkpoint predates vq_model and the emu3_vq_* fields: its config.json and record lack them."""
    edit_config(ckpt, lambda c: {k: v for k, v in c.items() if k not in ADDED_FIELDS})
    path = ckpt / "model.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    record = {k: v for k, v in json.loads(metadata[RECORD_CONFIG]).items() if k not in ADDED_FIELDS}
    save_file(load_file(path), path, metadata={**metadata, RECORD_CONFIG: json.dumps(record)})
    loaded = load_checkpoint(ckpt)
    assert same_state(saved[1], loaded) and loaded.config.vq_model == "w0sim"
