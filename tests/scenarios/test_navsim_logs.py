"""NAVSIM log pickles: a scene written as a log + nuPlan map reads back to the same frames and the same scores."""
from __future__ import annotations

import collections
import csv
import datetime
import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.registry import AgentSpec
from scenarios.generator import FAMILIES, generate_scene
from scenarios.log_frames import FRAME_STRIDE, frame_steps
from scenarios.navsim_log_writer import CAMERA_YAWS, write_navsim_log
from scenarios.navsim_logs import (
    EXTENSION_KEY,
    NavsimLogError,
    filter_scenes,
    load_navsim_log,
    read_log_pickle,
    scene_from_frames,
)
from scenarios.splits import SplitError, resolve_split
from sim.envs.frames import FrameRenderer, fit_image, read_rgb
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.scene_scoring import SceneScorer
from sim.render.camera import CameraConfig, CameraRenderer
from sim.state import StateIndex
from sim.world_view import WorldView
from w0sim.cli import app

SPECS = [(family, seed) for family in FAMILIES for seed in (0, 1)]
AGENTS = ("constant_velocity", "human", "pdm_closed", "drivevla_w0")
STATE_COLUMNS = slice(0, 7)  # pose, velocity, acceleration: what a log records of the ego


def _write_and_read(scene, root, sensor_blobs=None):
    """The scene exported on its own (its own maps root, not moved) and read back."""
    root = root / scene.token
    log = write_navsim_log(scene, root / "logs", root / "maps", sensor_blobs_dir=sensor_blobs)
    windows = filter_scenes(load_navsim_log(log))
    return scene_from_frames(windows[0], root / "maps", sensor_blobs)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """(original, read back) per (family, seed)."""
    root = tmp_path_factory.mktemp("navsim")
    out = {}
    for family, seed in SPECS:
        scene = generate_scene(family, seed)
        out[(family, seed)] = (scene, _write_and_read(scene, root))
    return out


@pytest.fixture(scope="module")
def agents():
    return {name: AgentSpec(name).build() for name in AGENTS}


def _agent_input(scene):
    env = NavsimSceneEnv(scenes=[scene], cameras=True, pdm_version=None)
    return env.reset(seed=0)[1]["agent_input"]


@pytest.mark.parametrize("spec", SPECS, ids=[f"{f}-{s}" for f, s in SPECS])
def test_written_scene_scores_the_same_for_every_agent(pairs, agents, spec):
    original, read_back = pairs[spec]
    inputs = [_agent_input(original), _agent_input(read_back)]
    np.testing.assert_array_equal(inputs[0].cameras, inputs[1].cameras)  # what the policy sees
    np.testing.assert_allclose(inputs[0].ego_poses, inputs[1].ego_poses, atol=1e-9)
    assert inputs[0].command_text == inputs[1].command_text
    scenes = (original, read_back)
    chosen = {name: agent for name, agent in agents.items() if name != "drivevla_w0" or spec[1] == 0}  # time
    plans = {name: [agent.compute_trajectory(agent_input, WorldView.from_log(scene) if agent.privileged else None)
                    for scene, agent_input in zip(scenes, inputs)] for name, agent in chosen.items()}
    for version in ("v1.1", "v2.2"):
        scorers = [SceneScorer(scene, version) for scene in scenes]
        for name, trajectories in plans.items():
            scores = [scorer.score(t.poses, t.sampling.interval)[1] for scorer, t in zip(scorers, trajectories)]
            assert scores[1] == pytest.approx(scores[0], abs=1e-9), (name, version)


@pytest.mark.parametrize("spec", SPECS[::2], ids=FAMILIES)
def test_frame_values_survive(pairs, spec):
    original, read_back = pairs[spec]
    assert read_back.token == original.token and read_back.current_index == 3 * FRAME_STRIDE
    steps = frame_steps(read_back.current_index, read_back.num_steps)
    old_steps = steps + original.current_index - read_back.current_index
    ego_old, ego_new = original.ego_log[old_steps, STATE_COLUMNS], read_back.ego_log[steps, STATE_COLUMNS]
    heading = (ego_new[:, 2] - ego_old[:, 2] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(heading, 0.0, atol=1e-9)
    np.testing.assert_allclose(np.delete(ego_new, 2, 1), np.delete(ego_old, 2, 1), atol=1e-9)
    columns = [original.agents.track_ids.index(i) for i in read_back.agents.track_ids]
    np.testing.assert_array_equal(read_back.agents.valid[steps], original.agents.valid[old_steps][:, columns])
    valid = read_back.agents.valid[steps]
    for name in ("x", "y", "vx", "vy"):
        np.testing.assert_allclose(getattr(read_back.agents, name)[steps][valid],
                                   getattr(original.agents, name)[old_steps][:, columns][valid], atol=1e-9)
    for name in ("length", "width", "height", "agent_type"):
        np.testing.assert_array_equal(getattr(read_back.agents, name), getattr(original.agents, name)[columns])
    assert read_back.light_ids == original.light_ids
    np.testing.assert_array_equal(read_back.light_status[steps], original.light_status[old_steps])
    np.testing.assert_array_equal(read_back.driving_command[steps], original.driving_command[old_steps])
    geometry = [[scene.map.lane(lane).centerline for lane in scene.route] for scene in (original, read_back)]
    assert len(geometry[0]) == len(geometry[1])
    for old, new in zip(*geometry):
        np.testing.assert_array_equal(old, new)


def _frames(count, empty_route=(), prefix="t"):
    return [{"token": f"{prefix}{i}", "roadblock_ids": [] if i in empty_route else ["1"]} for i in range(count)]


def test_filter_scenes_windows_like_navsims_scene_filter():
    frames = _frames(30, empty_route={7})
    windows = filter_scenes(frames)  # 14-frame windows every 14 frames; the last 2 frames are too few
    assert [w[3]["token"] for w in windows] == ["t3", "t17"]
    dense = filter_scenes(frames, frame_interval=1)
    currents = [w[3]["token"] for w in dense]
    assert len(dense) == 16 and "t7" not in currents and currents[0] == "t3" and currents[-1] == "t19"
    assert [w[3]["token"] for w in filter_scenes(frames, frame_interval=1, tokens={"t5", "t10", "t7"})] == ["t5", "t10"]
    assert len(filter_scenes(frames, frame_interval=1, max_scenes=4)) == 4
    assert [w[1]["token"] for w in filter_scenes(frames, 2, 3, frame_interval=5)] == ["t1", "t6", "t11", "t16", "t21", "t26"]


@pytest.fixture(scope="module")
def one_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_log")
    return write_navsim_log(generate_scene("intersection", 3), root / "logs", root / "maps"), root


def test_each_log_carries_its_own_log_and_scene_tokens_in_every_frame(one_log, tmp_path):
    """A log here holds one scene: all its frames share its log_name (the file's name), log_token and scene_token
    (16 hex, as nuPlan's), and another log's tokens differ from them."""
    other = write_navsim_log(generate_scene("straight", 0), tmp_path / "logs", tmp_path / "maps")
    ids = {}
    for log in (one_log[0], other):
        frames = pickle.loads(log.read_bytes())
        names = {(f["log_name"], f["log_token"], f["scene_token"]) for f in frames}
        assert len(names) == 1 and len(frames) > 1, log
        ids[log] = names.pop()
        assert ids[log][0] == log.stem
        assert all(len(token) == 16 and int(token, 16) >= 0 for token in ids[log][1:])
    (name_a, log_a, scene_a), (name_b, log_b, scene_b) = ids.values()
    assert name_a != name_b and log_a != log_b and scene_a != scene_b


def _yaw_rotation(heading):
    c, s = np.cos(heading), np.sin(heading)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_written_poses_and_camera_extrinsics_are_rotations_about_the_up_axis(one_log):
    """Each frame's ego2global (and lidar2global) rotation is the ego's yaw about z, and each camera's
    sensor2lidar_rotation is a proper rotation looking level at its yaw, image down being world down."""
    scene = generate_scene("intersection", 3)  # the scene one_log wrote
    frames = pickle.loads(one_log[0].read_bytes())
    steps = frame_steps(scene.current_index, scene.num_steps)
    assert len(frames) == len(steps) > 1
    for frame, step in zip(frames, steps):
        heading = scene.ego_log[step, StateIndex.HEADING]
        for key in ("ego2global", "lidar2global"):
            pose = frame[key]
            np.testing.assert_allclose(pose[:3, :3], _yaw_rotation(heading), rtol=0, atol=1e-12, err_msg=key)
            np.testing.assert_allclose(pose[:3, 3], frame["ego2global_translation"], rtol=0, atol=0)
            np.testing.assert_array_equal(pose[3], [0.0, 0.0, 0.0, 1.0])
        for name, yaw in CAMERA_YAWS.items():
            rotation = frame["cams"][name]["sensor2lidar_rotation"]
            np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), rtol=0, atol=1e-12, err_msg=name)
            assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12), name
            np.testing.assert_allclose(rotation[:, 2], [np.cos(yaw), np.sin(yaw), 0.0], rtol=0, atol=1e-12)  # optical axis
            np.testing.assert_allclose(rotation[:, 1], [0.0, 0.0, -1.0], rtol=0, atol=1e-12)  # image rows go down


def test_errors_name_the_file_the_frame_and_the_key(one_log, tmp_path):
    log, root = one_log
    with pytest.raises(NavsimLogError, match="no such NAVSIM log"):
        load_navsim_log(tmp_path / "absent.pkl")
    data = log.read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(NavsimLogError, match=r"cut\.pkl.*truncated or corrupt"):
        load_navsim_log(cut)
    frames = pickle.loads(data)
    for key, where in (("anns", frames[2]), ("ego2global_translation", frames[5])):
        broken = pickle.loads(data)
        del broken[frames.index(where)][key]
        path = tmp_path / f"no_{key}.pkl"
        path.write_bytes(pickle.dumps(broken))
        with pytest.raises(NavsimLogError) as err:
            load_navsim_log(path)
        message = str(err.value)
        assert str(path) in message and f"frame {frames.index(where)}" in message and where["token"] in message
        assert repr(key) in message
    shaped = pickle.loads(data)
    shaped[1]["ego_dynamic_state"] = [1.0, 2.0]
    (tmp_path / "shape.pkl").write_bytes(pickle.dumps(shaped))
    with pytest.raises(NavsimLogError, match=r"frame 1 .*'ego_dynamic_state' has shape \(2,\)"):
        load_navsim_log(tmp_path / "shape.pkl")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"frames": frames}))
    with pytest.raises(NavsimLogError, match="list of frame dicts, got dict"):
        load_navsim_log(tmp_path / "dict.pkl")
    window = [dict(frame, map_location="atlantis") for frame in filter_scenes(frames)[0]]
    with pytest.raises(NavsimLogError, match=rf"'atlantis'.*{root / 'maps'}"):
        scene_from_frames(window, root / "maps")


def test_split_errors_say_what_is_missing(one_log, tmp_path):
    log, root = one_log
    with pytest.raises(SplitError, match="--navsim-logs"):
        resolve_split("navsim:navtest")
    with pytest.raises(SplitError, match="no folder"):
        resolve_split("navsim:navtest", navsim_logs=tmp_path, nuplan_maps=root / "maps")
    with pytest.raises(SplitError, match="--nuplan-maps"):
        resolve_split("navsim:navtest", navsim_logs=log.parent)
    with pytest.raises(SplitError, match="no nuPlan map for location"):
        resolve_split("navsim:navtest", navsim_logs=log.parent, nuplan_maps=tmp_path)
    refs = resolve_split("navsim:logs", navsim_logs=root, nuplan_maps=root / "maps")  # root holding <split>/
    assert [ref.token for ref in refs] == [generate_scene("intersection", 3).token]


def test_the_environment_shows_the_logs_camera_images(tmp_path):
    scene = generate_scene("t_junction", 0)
    read_back = _write_and_read(scene, tmp_path, sensor_blobs=tmp_path / "blobs")
    images = read_back.metadata["camera_images"]
    assert sorted(map(int, images)) == list(range(0, read_back.num_steps, FRAME_STRIDE))
    camera = CameraConfig()
    shown = NavsimSceneEnv(scenes=[read_back], camera=camera, pdm_version=None).reset(seed=0)[1]["agent_input"].cameras
    for k, step in enumerate(range(0, read_back.current_index + 1, FRAME_STRIDE)):
        np.testing.assert_array_equal(shown[k], fit_image(read_rgb(images[str(step)]), camera))
    # The image is CAM_F0's view of the same scene: close to what the renderer draws at the camera's size.
    rendered = CameraRenderer(scene.map, camera).render(scene.ego_log[scene.current_index, :3],
                                                       scene.agents.at(scene.current_index),
                                                       scene.light_status_at(scene.current_index))
    assert np.abs(shown[-1].astype(float) - rendered).mean() < 12.0
    del read_back.metadata["camera_images"][str(read_back.current_index)]  # no file: rendered instead
    np.testing.assert_array_equal(FrameRenderer(read_back.map, camera).log_camera(read_back, read_back.current_index),
                                  CameraRenderer(read_back.map, camera).render(
                                      read_back.ego_log[read_back.current_index, :3],
                                      read_back.agents.at(read_back.current_index),
                                      read_back.light_status_at(read_back.current_index)))


def test_cli_evaluates_a_navsim_split(tmp_path):
    runner = CliRunner()
    exported = runner.invoke(app, ["scenes", "export-navsim", "--out", str(tmp_path / "data"), "--limit", "3"])
    assert exported.exit_code == 0, exported.output
    result = runner.invoke(app, ["eval", "--agent", "constant_velocity", "--split", "navsim:navtest",
                                 "--navsim-logs", str(tmp_path / "data" / "navsim_logs"),
                                 "--nuplan-maps", str(tmp_path / "data" / "maps"), "--out", str(tmp_path / "eval"),
                                 "--scene-filter", str(tmp_path / "data" / "scene_filters" / "navtest.yaml"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "eval" / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected = {ref.token for ref in resolve_split("builtin:navtest", 3)}
    assert {row["token"] for row in rows[:-1]} == expected and rows[-1]["token"] == "average"
    assert all(row["valid"] == "True" for row in rows)
    missing = runner.invoke(app, ["eval", "--agent", "constant_velocity", "--split", "navsim:navtest",
                                  "--out", str(tmp_path / "eval2")])
    assert missing.exit_code == 2 and "--navsim-logs" in missing.output


@pytest.mark.parametrize("family", FAMILIES)
def test_a_plain_navsim_log_scores_the_same_for_agents_without_cameras(tmp_path, agents, family):
    """Without w0sim's extension key the reader sees what NAVSIM sees: red-or-not lights per connector and no
    command text. Only the camera policy's input changes; every other agent scores the same."""
    scene = generate_scene(family, 0)
    log = write_navsim_log(scene, tmp_path / "logs", tmp_path / "maps")
    frames = load_navsim_log(log)
    for frame in frames:
        del frame[EXTENSION_KEY]
    with open(log, "wb") as handle:
        pickle.dump(frames, handle)
    read_back = scene_from_frames(filter_scenes(load_navsim_log(log))[0], tmp_path / "maps")
    assert read_back.command_text == "" and all(light.isdigit() for light in read_back.light_ids)
    assert read_back.family == "navsim"  # a log from elsewhere has no generator family
    scenes = (scene, read_back)
    for version in ("v1.1", "v2.2"):
        scorers = [SceneScorer(s, version) for s in scenes]
        for name in ("constant_velocity", "human", "pdm_closed"):
            agent = agents[name]
            plans = [agent.compute_trajectory(_agent_input(s), WorldView.from_log(s) if agent.privileged else None)
                     for s in scenes]
            scores = [scorer.score(p.poses, p.sampling.interval)[1] for scorer, p in zip(scorers, plans)]
            assert scores[1] == pytest.approx(scores[0], abs=1e-9), (name, version)


@pytest.mark.parametrize("family, seed", [("intersection", 2000423), ("t_junction", 2000389)])
def test_read_back_camera_frames_are_bit_identical_even_on_a_pixel_edge(tmp_path, family, seed):
    """builtin:navtest scenes 5fc21390e2bac5c8 and b5de9e8ecb7e860d: a polygon edge of a history frame lies within
    float noise of a pixel boundary, and a heading of pi reads back as -pi. Neither may change a pixel."""
    scene = generate_scene(family, seed)
    read_back = _write_and_read(scene, tmp_path)
    np.testing.assert_array_equal(_agent_input(scene).cameras, _agent_input(read_back).cameras)


def test_a_navsim_scene_filter_yaml_picks_frames_logs_and_tokens(one_log, tmp_path):
    from scenarios.log_frames import frame_token
    from scenarios.scene_filter import SceneFilter

    log, root = one_log
    token = generate_scene("intersection", 3).token
    later = frame_token(token, 20)
    dense = SceneFilter(frame_interval=1).write_yaml(tmp_path / "dense.yaml")
    refs = resolve_split("navsim:logs", navsim_logs=root, nuplan_maps=root / "maps", scene_filter=dense)
    assert len(refs) == 7 and [r.token for r in refs[:2]] == [token, later]  # every window of the 20-frame log
    assert refs[1].log_frame == (str(log), 1)
    picked = SceneFilter(frame_interval=1, tokens=(later,), log_names=(log.stem,)).write_yaml(tmp_path / "one.yaml")
    assert SceneFilter.from_yaml(picked).tokens == (later,)
    assert "navsim.common.dataclasses.SceneFilter" in picked.read_text()  # NAVSIM instantiates it as it is
    assert [r.token for r in resolve_split("navsim:logs", navsim_logs=root, nuplan_maps=root / "maps",
                                           scene_filter=picked)] == [later]
    other_log = SceneFilter(log_names=("another_log",)).write_yaml(tmp_path / "none.yaml")
    with pytest.raises(SplitError, match="hold no scenes"):
        resolve_split("navsim:logs", navsim_logs=root, nuplan_maps=root / "maps", scene_filter=other_log)
    (tmp_path / "bad.yaml").write_text("frame_interval: 1\nnum_frames: 3\n")
    with pytest.raises(SplitError, match=r"bad.yaml: unknown keys \['num_frames'\]"):
        resolve_split("navsim:logs", navsim_logs=root, nuplan_maps=root / "maps", scene_filter=tmp_path / "bad.yaml")
    with pytest.raises(SplitError, match="navsim: splits only"):
        resolve_split("builtin:navtest", 2, scene_filter=dense)


# --- a log is data, never code: the restricted unpickler and the frame checks ----------------------------------


class _RunsCommand:
    """A `__reduce__` payload: unpickled with plain pickle.load, it runs `command` through `call`."""

    def __init__(self, call, command):
        self.call, self.command = call, command

    def __reduce__(self):
        return self.call, (self.command,)


@pytest.mark.parametrize("call", [os.system, eval], ids=["os.system", "builtins.eval"])
def test_a_log_with_a_reduce_payload_is_refused_and_its_command_never_runs(one_log, tmp_path, call):
    log, _ = one_log
    marker = tmp_path / "ran"
    command = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w').close()"
    frames = pickle.loads(log.read_bytes())
    frames[3]["anns"]["track_tokens"] = _RunsCommand(call, command)  # deep inside a valid log
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(frames))
    with pytest.raises(NavsimLogError, match=rf"evil\.pkl: refused to unpickle {call.__module__}"
                                             rf"\.{call.__name__}") as info:
        load_navsim_log(evil)
    assert "run code" in str(info.value)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the payload is real: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_logs_written_with_any_protocol_and_numpy_1_module_names_read_back_the_same(one_log, protocol):
    log, _ = one_log
    frames = pickle.loads(log.read_bytes())
    data = pickle.dumps(frames, protocol=protocol)
    if protocol < 4:  # numpy 1.x pickles name numpy.core.*: OpenScene's logs were written so (same length: no framing)
        data = data.replace(b"numpy._core", b"numpy.core")
    read = read_log_pickle(data, "log")
    for old, new in zip(frames, read):
        assert old.keys() == new.keys()
        for key in ("ego2global_translation", "driving_command", "can_bus", "lidar2ego"):
            assert type(new[key]) is np.ndarray and new[key].dtype == old[key].dtype
            np.testing.assert_array_equal(new[key], old[key])
        np.testing.assert_array_equal(new["anns"]["gt_boxes"], old["anns"]["gt_boxes"])
        assert new["anns"]["gt_names"].dtype == old["anns"]["gt_names"].dtype
        assert new["traffic_lights"] == old["traffic_lights"] and new[EXTENSION_KEY] == old[EXTENSION_KEY]
    # numpy scalars (OpenScene's quaternion components are numpy floats), big-endian and Fortran-ordered arrays
    extra = {"w": np.float64(0.5), "n": np.int32(-3), "red": np.bool_(True), "name": np.str_("car"),
             "big": np.arange(4, dtype=">f4"), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    back = read_log_pickle(pickle.dumps(extra, protocol=protocol), "extra")
    for key, value in extra.items():
        assert type(back[key]) is type(value) and back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize("payload, message", [
    (np.array([1, None], dtype=object), "dtype 'O8'"),
    (np.zeros(2, dtype=[("x", "f8")]), "dtype 'V8'"),
    (datetime.timezone.utc, "datetime.timezone"),
    (collections.Counter(a=1), r"collections\.Counter"),
])
def test_objects_a_log_does_not_hold_are_refused_naming_them(payload, message):
    with pytest.raises(NavsimLogError, match=message):
        read_log_pickle(pickle.dumps(payload), "odd.pkl")


def _broken_log(one_log, tmp_path, change):
    log, _ = one_log
    frames = pickle.loads(log.read_bytes())
    change(frames)
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(frames))
    return path


def _set(index, key, value, inner=()):
    def change(frames):
        target = frames[index]
        for name in inner:
            target = target[name]
        target[key] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set(2, "ego2global_translation", np.array([np.nan, 0.0, 0.0])), r"frame 2 .*'ego2global_translation' holds non-finite"),
    (_set(4, "ego2global_translation", np.array([1e300, 0.0, 0.0])),
     r"frame 4 .*'ego2global_translation' holds 1e\+300 m, beyond the bound \+-1e\+07 m"),
    (_set(1, "ego2global_rotation", [0.0, 0.0, 0.0, 0.0]), r"frame 1 .*'ego2global_rotation' .* is not a unit quaternion"),
    (_set(5, "ego_dynamic_state", [500.0, 0.0, 0.0, 0.0]), r"frame 5 .*'ego_dynamic_state \(velocity\)' holds 500 m/s"),
    (_set(0, "ego_dynamic_state", [1.0, 0.0, np.inf, 0.0]), r"frame 0 .*'ego_dynamic_state' holds non-finite"),
    (_set(6, "driving_command", np.array([0, 0, 0, 0])), r"frame 6 .*'driving_command' \[0.0, 0.0, 0.0, 0.0\] is not one-hot"),
    (_set(3, "driving_command", np.array([9, 0, 0, 0])), r"frame 3 .*'driving_command' .* is not one-hot"),
    (_set(2, "timestamp", "noon"), r"frame 2 .*'timestamp' must be a non-negative integer"),
    (_set(2, "token", 17), r"frame 2 \(token \?\): 'token' must be a non-empty string"),
    (_set(7, "roadblock_ids", "1 2 3"), r"frame 7 .*'roadblock_ids' must be a list"),
    (_set(1, "traffic_lights", [(12, True, "x")]), r"frame 1 .*'traffic_lights' entry 0 is not"),
    (_set(1, "traffic_lights", [("a", True)]), r"frame 1 .*'traffic_lights' entry 0 is not"),
    (_set(3, "ego2global_translation", ["a", "b", "c"]), r"frame 3 .*'ego2global_translation' is not numeric"),
    (_set(2, "cams", 5), r"frame 2 .*'cams' must be a dict"),
    (_set(2, "data_path", "../../../etc/passwd", ("cams", "CAM_F0")), r"frame 2 .*CAM_F0 data_path must be a path inside"),
])
def test_implausible_frames_name_the_log_the_frame_and_the_field(one_log, tmp_path, change, message):
    with pytest.raises(NavsimLogError, match=message) as info:
        load_navsim_log(_broken_log(one_log, tmp_path, change))
    assert "broken.pkl" in str(info.value)


def _with_boxes(frame_index, edit):
    def change(frames):
        anns = frames[frame_index]["anns"]
        anns["gt_boxes"] = np.array(anns["gt_boxes"], dtype=float)
        anns["gt_velocity_3d"] = np.array(anns["gt_velocity_3d"], dtype=float)
        edit(anns, frames[frame_index])
    return change


@pytest.mark.parametrize("edit, message", [
    (lambda a, f: a["gt_boxes"].__setitem__((0, 0), np.nan), r"'anns gt_boxes' holds non-finite"),
    (lambda a, f: a["gt_boxes"].__setitem__((0, 1), -1e9), r"'anns gt_boxes \(position\)' holds -1e\+09 m"),
    (lambda a, f: a["gt_boxes"].__setitem__((0, 3), -4.0), r"negative box size"),
    (lambda a, f: a["gt_boxes"].__setitem__((0, 4), 1e6), r"'anns gt_boxes \(size\)' holds 1e\+06 m"),
    (lambda a, f: a["gt_velocity_3d"].__setitem__((0, 0), 1e5), r"'anns gt_velocity_3d' holds 100000 m/s"),
    (lambda a, f: a["track_tokens"].__setitem__(1, a["track_tokens"][0]), r"'track_tokens' names a track twice"),
    (lambda a, f: a.__setitem__("gt_names", [1] * len(a["track_tokens"])), r"'gt_names' must be strings"),
    (lambda a, f: f[EXTENSION_KEY].__setitem__("traffic_lights", [(1, "light", 99)]), r"'w0sim' traffic_lights"),
    (lambda a, f: f[EXTENSION_KEY].__setitem__("track_ids", ["x"]), r"'w0sim' track_ids must name each"),
    (lambda a, f: f[EXTENSION_KEY].__setitem__("family", 3), r"'w0sim' family must be a string"),
])
def test_implausible_boxes_name_the_frame(one_log, tmp_path, edit, message):
    log, _ = one_log
    index = next(k for k, f in enumerate(pickle.loads(log.read_bytes())) if len(f["anns"]["track_tokens"]) >= 2)
    with pytest.raises(NavsimLogError, match=rf"frame {index} .*{message}"):
        load_navsim_log(_broken_log(one_log, tmp_path, _with_boxes(index, edit)))
