"""Expert data collection: samples, shards, manifest, resume, failures, and the memory-mapped dataset."""
import json
import shutil

import numpy as np
import pytest

from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from scenarios.splits import SplitError, resolve_split
from training.collect import CollectConfig, CollectError, collect
from training.dataset import DatasetError, ExpertDataset, collate

CONFIG = CollectConfig(scenes_per_shard=2)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return out, collect("builtin:navtrain", 4, out, CONFIG, workers=2)


def test_samples_hold_frames_state_and_the_expert_trajectory(collected):
    out, manifest = collected
    assert manifest["complete"] and manifest["failures"] == 0
    assert manifest["samples"] == 8 and len(manifest["shards"]) == 2  # 2 decisions per scene
    data = ExpertDataset(out)
    batch = collate([data[i] for i in range(len(data))])
    assert batch["history_frames"].shape == (8, 2, 64, 128, 3)
    assert batch["future_frame"].shape == (8, 64, 128, 3)
    trajectory = batch["trajectory"].numpy()
    assert trajectory.shape == (8, 8, 3) and np.isfinite(trajectory).all()
    assert (np.diff(trajectory[..., 0], axis=1) >= -1e-3).all()  # the expert drives forwards
    # The ego poses of the agent input: 4 poses 0.5 s apart ending at the current one (the origin), driven forwards.
    ego = batch["ego_poses"].numpy()
    assert ego.shape == (8, 4, 3) and np.abs(ego[:, -1]).max() < 1e-5
    assert (np.diff(ego[..., 0], axis=1) >= -1e-3).all()
    # The future frame is the camera 1 s on: it differs from the current one.
    assert (batch["future_frame"].float() - batch["history_frames"][:, -1].float()).abs().mean() > 1.0
    assert all(isinstance(t, str) and t for t in batch["text"])


def test_a_data_sets_record_names_its_content_and_the_subset_taken(collected):
    """What a model's training record says of its data: the split, the folder's content hash, the samples taken of
    all, and for a subset a hash of its indices (another subset, another hash)."""
    out, manifest = collected
    assert ExpertDataset(out).record() == {"split": "builtin:navtrain", "content_hash": manifest["content_hash"],
                                           "samples": 8, "of": 8}
    first, other = ExpertDataset(out, np.array([0, 1, 2])).record(), ExpertDataset(out, np.array([0, 1, 3])).record()
    assert (first["samples"], first["of"], len(first["indices_sha256"])) == (3, 8, 64)
    assert first["indices_sha256"] != other["indices_sha256"]


def test_resume_rewrites_only_missing_shards_and_gives_the_same_content(collected, tmp_path):
    out, manifest = collected
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "shard_00001")  # as if killed before the second shard was renamed into place
    kept = (copy / "shard_00000" / "trajectories.npy").stat().st_mtime_ns
    again = collect("builtin:navtrain", 4, copy, CONFIG, workers=1)
    assert again["content_hash"] == manifest["content_hash"]
    assert (copy / "shard_00000" / "trajectories.npy").stat().st_mtime_ns == kept


def test_another_collection_in_the_same_folder_is_refused(collected):
    out, _ = collected
    with pytest.raises(CollectError, match="another collection"):
        collect("builtin:navtrain", 6, out, CONFIG, workers=1)


def test_a_scene_that_fails_is_recorded_and_the_run_goes_on(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    save_scene(generate_scene("straight", 1), scenes / "a_good.npz")
    (scenes / "b_broken.npz").write_bytes(b"not a scene")
    manifest = collect(str(scenes), 2, tmp_path / "data", CONFIG, workers=1)
    assert manifest["samples"] == 2 and manifest["failures"] == 1
    failures = json.loads((tmp_path / "data" / "shard_00000" / "samples.json").read_text())["failures"]
    assert failures[0]["token"] == "b_broken" and failures[0]["reason"]


def test_an_unfinished_collection_is_refused_saying_to_run_collect_again(collected, tmp_path):
    out, _ = collected
    copy = shutil.copytree(out, tmp_path / "data")
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(DatasetError, match=r"manifest\.json: the collection did not finish; run the same `w0sim collect`"):
        ExpertDataset(copy)


def test_unknown_split_and_missing_data_folder_say_what_is_wrong(tmp_path):
    with pytest.raises(SplitError, match="unknown built-in split"):
        resolve_split("builtin:nope")
    with pytest.raises(SplitError, match="neither"):
        resolve_split(str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="no manifest.json"):
        ExpertDataset(tmp_path)


def test_builtin_splits_are_fixed_and_disjoint():
    train, test = resolve_split("builtin:navtrain", 50), resolve_split("builtin:navtest")
    assert len(test) == 500 and [r.family for r in test[:10:2]] == ["straight", "curve", "intersection", "t_junction",
                                                                      "merge"]
    assert len({r.token for r in test}) == 500 and len({r.log_frame[0] for r in test}) == 250  # 2 frames per log
    assert not {r.token for r in train} & {r.token for r in test}
    assert not {r.log_frame[0] for r in train} & {r.log_frame[0] for r in test}  # no test log is trained on
    assert resolve_split("builtin:navtest", 3)[2].token == test[2].token


def _broken_scenes(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "broken.npz").write_bytes(b"not a scene")
    return scenes


def test_a_shard_whose_scenes_all_fail_holds_every_array_empty_in_its_documented_dtype(tmp_path):
    """The module docstring's layout (uint8 frames, float32 trajectories / ego poses, int8 command) holds for a
    shard with no sample too, so shards concatenate whatever their scenes did."""
    manifest = collect(str(_broken_scenes(tmp_path)), 1, tmp_path / "data", CONFIG, workers=1)
    assert manifest["samples"] == 0 and manifest["failures"] == 1
    shard = tmp_path / "data" / "shard_00000"
    expected = {"history_frames": ((0, 2, 64, 128, 3), np.uint8), "future_frames": ((0, 64, 128, 3), np.uint8),
                "trajectories": ((0, 8, 3), np.float32), "ego_poses": ((0, 4, 3), np.float32),
                "command": ((0,), np.int8)}
    for name, (shape, dtype) in expected.items():
        array = np.load(shard / f"{name}.npy")
        assert (array.shape, array.dtype) == (shape, dtype), name


def test_a_shard_folder_left_without_samples_json_is_replaced_by_the_new_shard(tmp_path):
    """Only a folder with samples.json is a finished shard; a leftover folder without it is rewritten, stale files gone."""
    stale = tmp_path / "data" / "shard_00000"
    stale.mkdir(parents=True)
    (stale / "trajectories.npy").write_bytes(b"stale")
    (stale / "leftover.txt").write_text("stale")
    manifest = collect(str(_broken_scenes(tmp_path)), 1, tmp_path / "data", CONFIG, workers=1)
    assert manifest["complete"] and manifest["failures"] == 1
    assert not (stale / "leftover.txt").exists()
    assert np.load(stale / "trajectories.npy").shape == (0, 8, 3)
    assert json.loads((stale / "samples.json").read_text())["failures"][0]["token"] == "broken"


def test_a_policys_config_sets_the_frame_size_history_and_future_spacing_collected():
    """A 192 x 96 policy seeing 3 frames 0.5 s apart: history 10 Hz steps (10, 5, 0), the future frame 5 steps on."""
    from training.pipeline import model_config

    policy = model_config("tiny", image_width=192, image_height=96, num_history_frames=3, frame_interval_s=0.5)
    config = CollectConfig.for_policy(policy, scenes_per_shard=3)
    assert (config.frame_height, config.frame_width, config.history_steps, config.future_step) == (96, 192, (10, 5, 0), 5)
    assert config.scenes_per_shard == 3


def test_a_decision_whose_oldest_history_frame_is_the_logs_first_is_sampled_and_one_before_it_is_not():
    """expert_samples takes a decision at t when every history frame exists: t - oldest step >= 0. With the oldest
    history frame at exactly the log's first step the sample is there; one step further back, it is not."""
    from agents.lane_following_pdm import LaneFollowingPDMPlanner
    from sim.state import TrajectorySampling
    from training.collect import expert_samples

    scene = generate_scene("straight", 0)
    now = scene.current_index
    for oldest, count in ((now, 1), (now + 1, 0)):
        config = CollectConfig(history_steps=(oldest, 0), sample_offsets=(0,))
        samples = expert_samples(scene, config, LaneFollowingPDMPlanner(), TrajectorySampling())
        assert [m["step"] for m in samples["meta"]] == [now] * count


def test_training_without_a_model_config_trains_the_tiny_preset_the_data_was_collected_for(collected, tmp_path,
                                                                                        monkeypatch):
    """train_stages' default model is the `tiny` preset (with the action expert and world model), whose frames and
    history are CollectConfig's defaults."""
    import training.pipeline as pipeline

    built = []

    def first_stage(run_dir, stage, config, seed):
        built.append(config)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(pipeline, "stage_model", first_stage)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_stages(collected[0], tmp_path / "run", stages=(0,), show_progress=False)
    # The preset, with the action tokenizer fitted on the data before the first stage.
    unfitted = {k: v for k, v in built[0].to_dict().items() if k not in pipeline.ACTION_FIELDS}
    assert unfitted == {k: v for k, v in pipeline.model_config("tiny").to_dict().items()
                        if k not in pipeline.ACTION_FIELDS}
    assert built[0].fast_tokenizer and built[0].action_low != pipeline.model_config("tiny").action_low
    assert CollectConfig.for_policy(built[0]) == CollectConfig()


def test_the_future_frame_shows_the_objects_and_lights_of_the_future_step(monkeypatch):
    """The world model's target is the camera `future_step` steps on, with the objects where the
    log has them then and the lights as they are then (not an empty road, not the decision time's state)."""
    from agents.lane_following_pdm import LaneFollowingPDMPlanner
    from sim.envs.frames import FrameRenderer
    from sim.state import TrajectorySampling
    from training.collect import expert_samples

    scene = generate_scene("intersection", 2)
    assert scene.agents.at(scene.current_index).valid.any()
    calls = []
    real = FrameRenderer.camera

    def camera(self, pose, agents, lights):
        calls.append((np.array(pose[:3]), agents, lights))
        return real(self, pose, agents, lights)

    monkeypatch.setattr(FrameRenderer, "camera", camera)
    config = CollectConfig(sample_offsets=(0,))
    planner = LaneFollowingPDMPlanner()
    samples = expert_samples(scene, config, planner, TrajectorySampling())
    assert len(samples["meta"]) == 1
    future_t = scene.current_index + config.future_step
    pose, agents, lights = calls[-1]  # the history frames are rendered first, the future frame last
    expected = scene.agents.at(future_t)
    assert agents is not None and np.array_equal(agents.x, expected.x) and np.array_equal(agents.valid, expected.valid)
    assert lights == scene.light_status_at(future_t)
