"""Scene files (issue 15, item 6): every malformed or implausible file is a SceneFormatError naming the file, the
field and the bound; `scenes show` and `scenes check` report it instead of crashing or saying "ok"."""
import resource
import zipfile

import numpy as np
import pytest
import shapely
import shapely.affinity
from typer.testing import CliRunner

from scenarios.generator import generate_scene
from scenarios.scene import SceneFormatError, load_scene, save_scene
from sim import limits
from tests.scenarios.scene_mutation import read_entries, with_changes, with_column_set, write_entries
from w0sim.cli import app
from w0sim.scene_check import check_scene


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return save_scene(generate_scene("straight", 1), tmp_path_factory.mktemp("scenes") / "straight.npz")


@pytest.fixture(scope="module")
def intersection(tmp_path_factory):
    return save_scene(generate_scene("intersection", 0), tmp_path_factory.mktemp("scenes") / "intersection.npz")


def refused(path, *fragments):
    """load_scene's SceneFormatError for `path`; its message names the file and every fragment."""
    with pytest.raises(SceneFormatError) as info:
        load_scene(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def shifted(arrays: dict, names: tuple[str, ...], offset: float) -> dict:
    return {name: arrays[name] + offset for name in names}


LANE_ARRAYS = ("lane_centerline", "lane_left_boundary", "lane_right_boundary")


def test_header_that_is_a_json_list_is_refused(straight, tmp_path):
    header, arrays = read_entries(straight)
    path = write_entries(tmp_path / "list.npz", None, arrays, raw_header=b"[1, 2, 3]")
    refused(path, "header must be a JSON object", "list")


def test_header_fields_of_the_wrong_type_are_refused(straight, tmp_path):
    refused(with_changes(straight, tmp_path / "a.npz", {"route": "road_f0"}), "'route'")
    refused(with_changes(straight, tmp_path / "b.npz", {"current_index": "40"}), "'current_index'")
    refused(with_changes(straight, tmp_path / "c.npz", {"step_s": 0.5}), "step_s", "10 Hz")
    header, _ = read_entries(straight)
    lanes = [dict(header["map"]["lanes"][0], successors="road_f1")] + header["map"]["lanes"][1:]
    refused(with_changes(straight, tmp_path / "d.npz", {"map": {"lanes": lanes}}), "map.lanes[0].successors")
    refused(with_changes(straight, tmp_path / "e.npz", {"metadata": {"signal_plans": [{"light_ids": 3}]}}),
            "metadata.signal_plans[0]")


def test_geometry_that_geos_rejects_is_refused_with_geos_reason(straight, tmp_path):
    _, arrays = read_entries(straight)
    garbage = np.zeros_like(arrays["area_wkb"])
    refused(with_changes(straight, tmp_path / "zeros.npz", area_wkb=garbage), "area_wkb of", "not valid WKB",
            "Unknown WKB type")
    # Offsets that cut the WKB block apart (the "index -9223372036854775808" family of reasons).
    offsets = arrays["area_wkb_offsets"].copy()
    offsets[1] = np.iinfo(np.int64).min
    refused(with_changes(straight, tmp_path / "offsets.npz", area_wkb_offsets=offsets), "area_wkb_offsets",
            "rise from 0")


def test_missing_mis_shaped_and_mistyped_arrays_are_refused(straight, tmp_path):
    _, arrays = read_entries(straight)
    refused(with_changes(straight, tmp_path / "missing.npz", agents_vx=None), "missing array 'agents_vx'")
    refused(with_changes(straight, tmp_path / "shape.npz", ego_log=arrays["ego_log"][:, :7]), "'ego_log'", "shape")
    refused(with_changes(straight, tmp_path / "steps.npz", agents_x=arrays["agents_x"][:-1]), "'agents_x'", "axis 0")
    refused(with_changes(straight, tmp_path / "dtype.npz", ego_log=arrays["ego_log"].astype(str)), "'ego_log'",
            "dtype", "expected float")
    refused(with_changes(straight, tmp_path / "valid.npz", agents_valid=arrays["agents_valid"].astype(np.float64)),
            "'agents_valid'", "expected bool")
    offsets = arrays["lane_centerline_offsets"].copy()
    offsets[-1] += 5
    refused(with_changes(straight, tmp_path / "offsets.npz", lane_centerline_offsets=offsets),
            "lane_centerline_offsets")


@pytest.mark.parametrize("field, column", [("ego_log", 3), ("ego_log", 0), ("agents_x", None), ("agents_vy", None)])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_ego_or_agent_values_are_refused(straight, tmp_path, field, column, value):
    path = with_column_set(straight, tmp_path / "bad.npz", field, 0 if column is None else column, value)
    refused(path, field.replace("agents_", "agents."), "non-finite")


def test_infinite_heading_is_refused(straight, tmp_path):
    _, arrays = read_entries(straight)
    ego = arrays["ego_log"].copy()
    ego[:, 2] = np.inf
    refused(with_changes(straight, tmp_path / "heading.npz", ego_log=ego), "ego_log heading", "non-finite")
    ego[:, 2] = 1e300
    refused(with_changes(straight, tmp_path / "huge.npz", ego_log=ego), "ego_log heading",
            f"+-{limits.MAX_ABS_HEADING_RAD:g} rad")


def test_driving_command_outside_the_commands_is_refused_and_scenes_show_says_so(straight, tmp_path):
    _, arrays = read_entries(straight)
    path = with_changes(straight, tmp_path / "command9.npz",
                        driving_command=np.full_like(arrays["driving_command"], 9))
    refused(path, "driving_command holds 9", "outside 0..3")
    result = CliRunner().invoke(app, ["scenes", "show", str(path), "--png", str(tmp_path / "x.png")])
    assert result.exit_code == 2, result.output
    assert "driving_command holds 9" in " ".join(result.output.split()), result.output


def test_light_status_outside_the_enum_is_refused(intersection, tmp_path):
    _, arrays = read_entries(intersection)
    status = arrays["light_status"].copy()
    status[10, 0] = 7
    refused(with_changes(intersection, tmp_path / "light.npz", light_status=status), "light_status holds 7",
            "0..3")


def test_one_lane_point_far_away_is_refused_quickly_without_memory(straight, tmp_path):
    _, arrays = read_entries(straight)
    centerline = arrays["lane_centerline"].copy()
    centerline[3] = (1e9, 1e9)
    path = with_changes(straight, tmp_path / "point.npz", lane_centerline=centerline)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(path, "centerline", "1e+09", f"+-{limits.MAX_ABS_COORDINATE_M:g} m")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # the 42 GiB of issue 15 never get asked for


@pytest.mark.parametrize("offset, fragment", [(1e9, "beyond the bound +-1e+07 m"),
                                              (2e5, "spans"),  # the map: lanes here, areas 200 km away
                                              (1e4, "from the bounding box of the map's lanes")])
def test_lanes_moved_away_from_the_ego_are_refused(straight, tmp_path, offset, fragment):
    _, arrays = read_entries(straight)
    path = with_changes(straight, tmp_path / "lanes.npz", **shifted(arrays, LANE_ARRAYS, offset))
    refused(path, fragment)
    check = check_scene(path, max_decisions=2)
    assert not check.ok and fragment in check.reason and "Traceback" not in check.reason


@pytest.mark.parametrize("offset, fragment", [(1e9, "ego_log x / y"), (2e4, "ego_log point")])
def test_ego_far_from_its_map_is_refused_and_scenes_check_is_not_ok(straight, tmp_path, offset, fragment):
    _, arrays = read_entries(straight)
    ego = arrays["ego_log"].copy()
    ego[:, :2] += offset
    path = with_changes(straight, tmp_path / "ego.npz", ego_log=ego)
    refused(path, fragment)
    check = check_scene(path, max_decisions=2)
    assert not check.ok and fragment in check.reason


def test_infinite_heading_is_not_ok_in_scenes_check(straight, tmp_path):
    _, arrays = read_entries(straight)
    ego = arrays["ego_log"].copy()
    ego[:, 2] = -np.inf
    check = check_scene(with_changes(straight, tmp_path / "heading.npz", ego_log=ego), max_decisions=2)
    assert not check.ok and "ego_log heading holds non-finite values" in check.reason


def test_speeds_sizes_and_agent_count_beyond_their_bounds_are_refused(straight, tmp_path):
    _, arrays = read_entries(straight)
    ego = arrays["ego_log"].copy()
    ego[50, 3] = 150.0
    refused(with_changes(straight, tmp_path / "ego_speed.npz", ego_log=ego), "ego_log velocity", "100 m/s")
    vx = arrays["agents_vx"].copy()
    vx[:, 0] = 80.0
    vy = arrays["agents_vy"].copy()
    vy[:, 0] = 80.0  # each component is plausible; the speed, 113 m/s, is not
    refused(with_changes(straight, tmp_path / "agent_speed.npz", agents_vx=vx, agents_vy=vy), "speed", "100 m/s")
    length = arrays["agents_length"].copy()
    length[0] = -4.0
    refused(with_changes(straight, tmp_path / "length.npz", agents_length=length), "agents.length", "negative")


def test_agent_count_beyond_the_bound_is_refused(straight, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_TRACKS", 5)
    refused(straight, "agents over", "bounds 5 agents")


def test_nuplan_city_coordinates_load(straight, tmp_path):
    """Everything shifted together to Las Vegas' UTM-like coordinates is a plausible scene."""
    header, arrays = read_entries(straight)
    offset = np.array([664_000.0, 3_997_000.0])
    moved = shifted(arrays, LANE_ARRAYS, offset)
    ego = arrays["ego_log"].copy()
    ego[:, :2] += offset
    valid = arrays["agents_valid"]
    moved.update(ego_log=ego, agents_x=np.where(valid, arrays["agents_x"] + offset[0], 0.0),
                 agents_y=np.where(valid, arrays["agents_y"] + offset[1], 0.0), area_wkb=None, area_wkb_offsets=None)
    scene = load_scene(straight)
    wkb = [shapely.to_wkb(shapely.affinity.translate(a.polygon, *offset)) for a in scene.map.areas]
    moved["area_wkb"] = np.frombuffer(b"".join(wkb), dtype=np.uint8)
    moved["area_wkb_offsets"] = np.cumsum([0] + [len(b) for b in wkb]).astype(np.int64)
    loaded = load_scene(with_changes(straight, tmp_path / "vegas.npz", **moved))
    assert loaded.initial_ego_state[0] == pytest.approx(scene.initial_ego_state[0] + offset[0])


def test_member_that_is_not_npy_and_oversized_archives_are_refused(straight, tmp_path, monkeypatch):
    path = tmp_path / "extra.npz"
    path.write_bytes(straight.read_bytes())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    refused(path, "entry 'notes.txt' is not a .npy array")
    monkeypatch.setattr("scenarios.scene.MAX_SCENE_FILE_BYTES", 1000)
    refused(straight, "bytes uncompressed", "beyond the bound 1000")


def test_a_lane_whose_boundaries_cross_loads_scores_and_drives(intersection, tmp_path):
    """Found by the fuzz suite: one boundary point moved across the lane gave GEOS TopologyExceptions (the route
    lanes' union in the Leaderboard monitor, the drivable area); the map repairs such outlines at the source."""
    _, arrays = read_entries(intersection)
    left = arrays["lane_left_boundary"].copy()
    left[0] = (150.0, 150.0)
    path = with_changes(intersection, tmp_path / "crossed.npz", lane_left_boundary=left)
    scene = load_scene(path)
    assert shapely.is_valid(scene.map.lane_polygons).all()
    assert not shapely.is_valid(scene.map.lanes[0].polygon())
    check = check_scene(path, max_decisions=2)
    assert check.ok, check.reason
