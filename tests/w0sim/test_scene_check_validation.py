"""`scenes check` (w0sim.scene_check) never says "ok" for an implausible scene, and gives reasons a person reads."""
import dataclasses

import shapely

from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from sim.map import Area, RoadMap
from w0sim.scene_check import check_scene


def test_a_plausible_scene_is_ok(tmp_path):
    check = check_scene(save_scene(generate_scene("curve", 0), tmp_path / "curve.npz"), max_decisions=3)
    assert check.ok and check.reason == "" and check.decisions == 3 and check.family == "curve"


def test_invalid_polygons_are_repaired_and_a_map_error_is_reported_without_traceback(tmp_path, monkeypatch):
    scene = generate_scene("straight", 1)
    x, y = scene.initial_ego_state[:2]
    bow = shapely.Polygon([(x, y - 5), (x + 10, y + 5), (x + 10, y - 5), (x, y + 5)])
    tie = shapely.Polygon([(x + 5, y - 5), (x + 15, y + 5), (x + 15, y - 5), (x + 5, y + 5)])
    road_map = RoadMap(list(scene.map.lanes), [*scene.map.areas, Area("bow", "carpark", bow),
                                               Area("tie", "roadblock", tie)], name=scene.map.name)
    path = save_scene(dataclasses.replace(scene, map=road_map), tmp_path / "bowtie.npz")
    assert check_scene(path, max_decisions=3).ok
    monkeypatch.setattr(shapely, "make_valid", lambda geometries: geometries)  # a repair that does not help
    check = check_scene(path, max_decisions=3)
    assert not check.ok and check.family == "straight"
    assert "cannot be combined" in check.reason and "area 'bow' (Self-intersection" in check.reason
    assert "Traceback" not in check.reason and check.reason.startswith(str(path))


def test_an_unexpected_error_is_a_failed_check_with_its_type_message_and_where_it_came_from(tmp_path, monkeypatch):
    """Any other exception (here the renderer's) fails the check with 'Type: message' and a short traceback."""
    from sim.envs.frames import FrameRenderer

    def broken(self, *args, **kwargs):
        raise RuntimeError("renderer out of order")

    monkeypatch.setattr(FrameRenderer, "composite", broken)
    check = check_scene(save_scene(generate_scene("curve", 0), tmp_path / "curve.npz"), max_decisions=3)
    assert not check.ok and check.family == "curve"
    assert check.reason.startswith("RuntimeError: renderer out of order\nTraceback")
    assert "in broken" in check.reason  # the frame that raised


def test_a_failed_check_names_the_file_it_checked(tmp_path, monkeypatch):
    """Whatever failed (the file's format, or anything raised while rendering or driving it), the check is of its
    path, so that a run over many files says which one failed."""
    from sim.envs.frames import FrameRenderer

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a scene")
    check = check_scene(garbage, max_decisions=3)
    assert not check.ok and check.path == str(garbage) and check.family == "?"

    def broken(self, *args, **kwargs):
        raise RuntimeError("renderer out of order")

    monkeypatch.setattr(FrameRenderer, "composite", broken)
    path = save_scene(generate_scene("curve", 0), tmp_path / "curve.npz")
    check = check_scene(path, max_decisions=3)
    assert not check.ok and check.path == str(path) and check.family == "curve"
