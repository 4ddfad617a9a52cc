"""Scene files: bit-identical round trips, deterministic bytes, clear errors for bad files."""
import json
import zipfile

import numpy as np
import pytest

from scenarios.generator import FAMILIES, generate_scene
from scenarios.scene import SceneFormatError, load_scene, save_scene, scene_to_arrays


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_is_bit_identical(tmp_path, family):
    scene = generate_scene(family, 3)
    path = save_scene(scene, tmp_path / "a.npz")
    loaded = load_scene(path)
    header_a, arrays_a = scene_to_arrays(scene)
    header_b, arrays_b = scene_to_arrays(loaded)
    assert header_a == header_b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        assert arrays_a[name].tobytes() == arrays_b[name].tobytes(), name
    # Map geometry survives exactly too (areas go through WKB).
    for a, b in zip(scene.map.areas, loaded.map.areas):
        assert a.polygon.equals_exact(b.polygon, 0.0)
    # Saving the loaded scene gives the same bytes: stable content hashes.
    assert save_scene(loaded, tmp_path / "b.npz").read_bytes() == path.read_bytes()


def test_missing_truncated_and_foreign_files_name_the_file(tmp_path):
    with pytest.raises(SceneFormatError, match="no such scene file"):
        load_scene(tmp_path / "missing.npz")
    good = save_scene(generate_scene("straight", 0), tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(SceneFormatError, match="truncated.npz"):
        load_scene(truncated)
    text = tmp_path / "notes.npz"
    text.write_text("not a scene")
    with pytest.raises(SceneFormatError, match="notes.npz: not a w0sim scene file \\(not a zip"):
        load_scene(text)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(SceneFormatError, match="foreign.npz: no header"):
        load_scene(foreign)


def test_newer_format_version_is_refused(tmp_path):
    path = save_scene(generate_scene("straight", 0), tmp_path / "s.npz")
    with np.load(path) as data:
        entries = {k: data[k] for k in data.files}
    header = str(entries["header"]).replace('"version": 2', '"version": 99')
    entries["header"] = np.array(header)
    np.savez(tmp_path / "v99.npz", **entries)
    with pytest.raises(SceneFormatError, match="version 99 .this w0sim reads versions 1, 2"):
        load_scene(tmp_path / "v99.npz")


def test_the_header_reads_as_json_text_with_numpy_alone_and_version_1_files_still_load(tmp_path):
    scene = generate_scene("curve", 1)
    path = save_scene(scene, tmp_path / "s.npz")
    with np.load(path) as data:  # no pickle: a 0-d string array
        entries = {k: data[k] for k in data.files}
    header = json.loads(str(entries["header"]))
    assert header["format"] == "w0sim-scene" and header["version"] == 2 and header["token"] == scene.token
    # version 1 stored the same JSON as a uint8 array of UTF-8 bytes
    entries["header"] = np.frombuffer(json.dumps({**header, "version": 1}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v1.npz", **entries)
    assert scene_to_arrays(load_scene(tmp_path / "v1.npz"))[0] == {**scene_to_arrays(scene)[0], "version": 2}


def test_missing_array_is_reported_as_malformed(tmp_path):
    path = save_scene(generate_scene("curve", 0), tmp_path / "s.npz")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "broken.npz", "w") as dst:
        for item in src.infolist():
            if item.filename != "ego_log.npy":
                dst.writestr(item, src.read(item))
    with pytest.raises(SceneFormatError, match="broken.npz: malformed scene .*ego_log"):
        load_scene(tmp_path / "broken.npz")
