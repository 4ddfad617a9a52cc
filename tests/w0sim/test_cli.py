"""The `w0sim` command line: scene generation, inspection and checking, and the demo video."""
from __future__ import annotations

import json
import re

import cv2
import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from scenarios.scene import load_scene
from w0sim.cli import app

runner = CliRunner()


def squashed(text: str) -> str:
    """Output without whitespace: rich wraps long lines (and paths) at the console width."""
    return re.sub(r"\s+", "", text)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "scenes"
    result = invoke("scenes", "generate", "--count", 5, "--out", out, "--seed", 3)
    return out, result


def test_generate_writes_count_files(generated):
    out, result = generated
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.npz"))
    assert len(files) == 5
    families = [load_scene(f).family for f in files]
    assert families == ["straight", "curve", "intersection", "t_junction", "merge"]
    seeds = [load_scene(f).metadata["seed"] for f in files]
    assert seeds == [3 * 1_000_003 + i for i in range(5)]
    assert "wrote5scenes" in squashed(result.output)


def test_generate_again_skips_existing_files(generated):
    out, _ = generated
    files = sorted(out.glob("*.npz"))
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    result = invoke("scenes", "generate", "--count", 5, "--out", out, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "wrote0scenes" in squashed(result.output) and "5alreadythere" in squashed(result.output)
    after = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in sorted(out.glob("*.npz"))}
    assert after == before


def test_generate_is_reproducible_and_resumes(tmp_path, generated):
    out, _ = generated
    other = tmp_path / "again"
    first = sorted(out.glob("*.npz"))
    other.mkdir()
    (other / first[0].name).write_bytes(first[0].read_bytes())  # an interrupted run left one file
    result = invoke("scenes", "generate", "--count", 3, "--out", other, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "wrote2scenes" in squashed(result.output) and "1alreadythere" in squashed(result.output)
    for f in sorted(other.glob("*.npz")):
        assert f.read_bytes() == (out / f.name).read_bytes()


def test_generate_with_families_and_unknown_family(tmp_path):
    result = invoke("scenes", "generate", "--count", 2, "--out", tmp_path / "m", "--families", "merge")
    assert result.exit_code == 0, result.output
    assert [load_scene(f).family for f in sorted((tmp_path / "m").glob("*.npz"))] == ["merge", "merge"]
    result = invoke("scenes", "generate", "--count", 1, "--out", tmp_path / "x", "--families", "roundabout")
    assert result.exit_code != 0
    assert "roundabout" in squashed(result.output)


def test_show_prints_json_and_writes_png(generated, tmp_path):
    out, _ = generated
    scene_file = sorted(out.glob("*.npz"))[2]
    scene = load_scene(scene_file)
    png = tmp_path / "view.png"
    result = invoke("scenes", "show", scene_file, "--png", png)
    assert result.exit_code == 0, result.output
    start = result.output.index("{")
    summary, _ = json.JSONDecoder().raw_decode(result.output[start:])
    assert summary["token"] == scene.token
    assert summary["family"] == "intersection"
    image = cv2.imread(str(png))
    assert image is not None and image.ndim == 3 and image.shape[0] > 32 and image.std() > 0
    assert squashed(str(png)) in squashed(result.output)


def test_show_default_png_beside_the_file(generated):
    out, _ = generated
    scene_file = sorted(out.glob("*.npz"))[0]
    result = invoke("scenes", "show", scene_file)
    assert result.exit_code == 0, result.output
    assert scene_file.with_suffix(".png").is_file()


@pytest.mark.parametrize("content", [b"garbage bytes", b"PK\x03\x04broken zip", b""])
def test_show_corrupt_file_exits_2_naming_the_file(tmp_path, content):
    bad = tmp_path / "corrupt_scene.npz"
    bad.write_bytes(content)
    result = invoke("scenes", "show", bad)
    assert result.exit_code == 2, result.output
    assert squashed(str(bad)) in squashed(result.output)
    assert "error" in result.output.lower()
    assert not bad.with_suffix(".png").exists()


def test_show_missing_file_exits_2(tmp_path):
    result = invoke("scenes", "show", tmp_path / "nope.npz")
    assert result.exit_code == 2
    assert "nope.npz" in squashed(result.output)


def test_check_good_scenes(tmp_path):
    out = tmp_path / "good"
    assert invoke("scenes", "generate", "--count", 2, "--out", out, "--families", "straight,curve").exit_code == 0
    result = invoke("scenes", "check", out, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "straight" in result.output and "curve" in result.output
    assert "failed" not in result.output


def test_check_reports_a_bad_scene_and_exits_1(tmp_path):
    out = tmp_path / "mixed"
    assert invoke("scenes", "generate", "--count", 1, "--out", out, "--families", "straight").exit_code == 0
    (out / "zz_broken.npz").write_bytes(b"not a scene")
    result = invoke("scenes", "check", out, "--workers", 1)
    assert result.exit_code == 1, result.output
    assert "zz_broken.npz" in squashed(result.output)


def test_check_empty_directory_exits_2(tmp_path):
    result = invoke("scenes", "check", tmp_path, "--workers", 1)
    assert result.exit_code == 2
    assert "no*.npz" in squashed(result.output)


def test_demo_writes_video_and_contact_sheet(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--family", "straight", "--traffic", "replay")
    assert result.exit_code == 0, result.output
    video = out / "demo.mp4"
    assert video.is_file() and video.stat().st_size > 1000
    with imageio_v2.get_reader(video) as reader:
        frames = [frame for frame in reader]
    assert len(frames) >= 2
    assert frames[0].ndim == 3 and frames[0].shape[2] == 3
    assert not np.array_equal(frames[0], frames[-1])
    props = iio.improps(video)
    assert props.shape[-3:] == frames[0].shape
    # One frame per environment step, and a step is 0.5 s of simulated time: the video plays in real time.
    meta = iio.immeta(video)
    assert meta["fps"] == 2.0 and meta["duration"] == pytest.approx(len(frames) * 0.5)
    sheet = cv2.imread(str(out / "demo_contact_sheet.png"))
    assert sheet is not None and sheet.ndim == 3 and sheet.std() > 0
    assert re.search(r"route(9\d|100)%done", squashed(result.output)), result.output


def test_the_demo_drives_among_reactive_traffic_unless_told_otherwise(tmp_path, monkeypatch):
    """run_demo's default traffic is the command's default, reactive (the agents respond to the ego)."""
    import w0sim.demo
    from sim.envs.closed_loop_env import ClosedLoopEnv

    traffic = []

    def spy(*args, **kwargs):
        traffic.append(kwargs["traffic"])
        return ClosedLoopEnv(*args, **kwargs)

    monkeypatch.setattr(w0sim.demo, "ClosedLoopEnv", spy)
    result = w0sim.demo.run_demo(tmp_path, family="straight")
    assert traffic == ["reactive"] and result.steps > 0 and result.video.is_file()
