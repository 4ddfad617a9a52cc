"""NAVSIM exports: one maps root that nuPlan and NAVSIM load as they are (all scenes in one city's map, each in its own
slot, the other cities empty), nuPlan's topology tables only, and scenes that read back and score as they were."""
from __future__ import annotations

import csv
import json
import math
import pickle
import sqlite3

import numpy as np
import pytest
import shapely
from typer.testing import CliRunner

from agents.registry import AgentSpec
from scenarios.generator import FAMILIES, generate_scene
from scenarios.navsim_log_writer import (
    MIN_MAP_GAP_M,
    SLOT_SIZE_M,
    ExportError,
    NavsimExport,
    check_slot_fit,
    slot_offset,
)
from scenarios.navsim_logs import filter_scenes, load_navsim_log, scene_from_frames
from scenarios.nuplan_map import LANE_LINKS_TABLE, MAP_VERSIONS, MAPS_INDEX_FILE, nuplan_map_path, read_nuplan_map
from scenarios.nuplan_map_writer import FID_BLOCK, SCHEMAS, translated_map
from sim.envs.navsim_env import NavsimSceneEnv
from sim.envs.scene_scoring import SceneScorer
from sim.world_view import WorldView
from w0sim.cli import app

CITY = "us-nv-las-vegas-strip"
SEED = 1


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """One scene per family, exported together in family order (slot k = family k)."""
    root = tmp_path_factory.mktemp("export")
    scenes = [generate_scene(family, SEED) for family in FAMILIES]
    with NavsimExport(root / "navsim_logs" / "navtest", root / "maps") as writer:
        logs = [writer.add(scene) for scene in scenes]
    return {"root": root, "maps": root / "maps", "scenes": scenes, "logs": logs,
            "city": nuplan_map_path(root / "maps", CITY)}


def _rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def _read_back(export, k):
    return scene_from_frames(filter_scenes(load_navsim_log(export["logs"][k]))[0], export["maps"])


def test_slots_fill_growing_squares_from_the_origin():
    cells = [slot_offset(k) for k in range(9)]
    assert cells[0] == (0, 0) and len(set(cells)) == 9
    assert {c for c in cells} == {(i * SLOT_SIZE_M, j * SLOT_SIZE_M) for i in range(3) for j in range(3)}
    assert all(isinstance(v, int) for c in cells for v in c)  # whole metres: moving a scene adds integers


def test_maps_root_lists_all_four_cities_and_the_others_are_empty(export):
    index = json.loads((export["maps"] / MAPS_INDEX_FILE).read_text())
    assert {city: entry["version"] for city, entry in index.items()} == MAP_VERSIONS
    tables = [t for t in SCHEMAS if t != LANE_LINKS_TABLE]
    for city in MAP_VERSIONS:
        path = nuplan_map_path(export["maps"], city)
        assert path == export["maps"] / city / MAP_VERSIONS[city] / "map.gpkg" and path.is_file()
        meta = dict(_rows(path, "SELECT key, value FROM meta"))
        assert meta["location"] == city and meta["projectedCoordSystem"].startswith("EPSG:326")
        if city == CITY:
            continue
        counts = {t: _rows(path, f'SELECT COUNT(*) FROM "{t}"')[0][0] for t in tables if t != "meta"}
        assert set(counts.values()) == {0}, counts  # every nuPlan table there, no rows
        assert read_nuplan_map(path).lanes == []
    for log in export["logs"]:
        assert {frame["map_location"] for frame in load_navsim_log(log)} == {CITY}


def test_scenes_lie_in_their_own_slots_with_unique_fids(export):
    path = export["city"]
    fids = [fid for table in SCHEMAS if table not in ("meta", LANE_LINKS_TABLE)
            for (fid,) in _rows(path, f'SELECT fid FROM "{table}"')]
    assert len(fids) == len(set(fids))  # one counter per scene, blocks per slot: unique across tables too
    lanes = _rows(path, "SELECT fid FROM lanes_polygons")
    assert {fid // FID_BLOCK for (fid,) in lanes} == set(range(len(FAMILIES)))
    city = read_nuplan_map(path)
    outlines = []
    for k, scene in enumerate(export["scenes"]):
        own = [lane for lane in city.lanes if int(lane.id) // FID_BLOCK == k]
        assert len(own) == len(scene.map.lanes)
        offset = np.array(slot_offset(k), dtype=float)
        for lane, original in zip(own, scene.map.lanes):  # the same lanes, moved by the slot's whole metres
            np.testing.assert_allclose(lane.centerline, original.centerline + offset, rtol=0, atol=1e-9)
        outlines.append(shapely.union_all([lane.polygon() for lane in own] + [
            area.polygon for area in city.areas if int(area.id) // FID_BLOCK == k]))
        roadblocks = {r for frame in load_navsim_log(export["logs"][k]) for r in frame["roadblock_ids"]}
        assert roadblocks and {int(r) // FID_BLOCK for r in roadblocks} == {k}
    gaps = [shapely.distance(a, b) for i, a in enumerate(outlines) for b in outlines[i + 1:]]
    assert min(gaps) >= MIN_MAP_GAP_M


def test_topology_is_in_nuplans_tables_only(export):
    path = export["city"]
    assert not _rows(path, f"SELECT name FROM sqlite_master WHERE name = '{LANE_LINKS_TABLE}'")
    connectors = _rows(path, "SELECT fid, exit_lane_fid, entry_lane_fid, lane_group_connector_fid FROM lane_connectors")
    lanes = {fid for (fid,) in _rows(path, "SELECT fid FROM lanes_polygons")}
    assert connectors and all(exit_lane in lanes and entry in lanes for _, exit_lane, entry, _ in connectors)
    groups = _rows(path, "SELECT from_lane_group_fid, to_lane_group_fid FROM lane_group_connectors")
    roadblocks = {fid for (fid,) in _rows(path, "SELECT fid FROM lane_groups_polygons")}
    assert groups and all(a in roadblocks and b in roadblocks for a, b in groups)
    # Every link of every generated map is lane -> connector -> lane, so nuPlan sees all of them.
    exits = {exit_lane for _, exit_lane, _, _ in connectors}
    for k, scene in enumerate(export["scenes"]):
        for lane in scene.map.lanes:
            linked = [scene.map.lane(s).is_connector != lane.is_connector for s in lane.successors]
            assert all(linked), (scene.family, lane.id)
        with_successors = sum(1 for lane in scene.map.lanes if lane.successors and not lane.is_connector)
        assert with_successors == len([f for f in exits if f // FID_BLOCK == k])


def test_merge_route_reads_back_whole_through_lane_connectors(export):
    k = FAMILIES.index("merge")
    original, read_back = export["scenes"][k], _read_back(export, k)
    assert len(read_back.route) == len(original.route) >= 3
    offset = np.array(slot_offset(k), dtype=float)
    route = [original.map.route_polyline(original.route) + offset, read_back.map.route_polyline(read_back.route)]
    np.testing.assert_allclose(route[1], route[0], rtol=0, atol=1e-9)  # the whole route, not its first lane
    for lane_id, next_id in zip(read_back.route, read_back.route[1:]):
        assert next_id in read_back.map.lane(lane_id).successors


def test_every_connector_names_the_intersection_it_lies_in(export):
    path = export["city"]
    intersections = dict(zip((fid for (fid,) in _rows(path, "SELECT fid FROM intersections")),
                             read_nuplan_map(path).area_layer("intersection")[1]))
    rows = _rows(path, "SELECT fid, intersection_fid FROM lane_connectors")
    assert rows and all(fid is not None and fid in intersections for _, fid in rows)
    city = read_nuplan_map(path)
    for connector, fid in rows:
        line = shapely.LineString(city.lane(str(connector)).centerline)
        assert line.intersection(intersections[fid]).length >= 0.99 * line.length
    groups = _rows(path, "SELECT intersection_fid FROM lane_group_connectors")
    assert groups and all(fid in intersections for (fid,) in groups)


@pytest.fixture(scope="module")
def agents():
    return {name: AgentSpec(name).build() for name in ("constant_velocity", "human", "pdm_closed")}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_scene_of_the_city_map_scores_as_the_built_in_scene(export, agents, family):
    k = FAMILIES.index(family)
    original, read_back = export["scenes"][k], _read_back(export, k)
    assert read_back.family == family  # w0sim's extension key carries it, so per-family tables survive the export
    # The crop of the city map around the scene is the scene's whole map, nothing of its neighbours.
    assert [int(lane.id) // FID_BLOCK for lane in read_back.map.lanes] == [k] * len(original.map.lanes)
    assert len(read_back.map.areas) == len(original.map.areas)
    scenes = (original, read_back)
    inputs = [NavsimSceneEnv(scenes=[s], cameras=False, pdm_version=None).reset(seed=0)[1]["agent_input"]
              for s in scenes]
    for version in ("v1.1", "v2.2"):
        scorers = [SceneScorer(s, version) for s in scenes]
        for name, agent in agents.items():
            plans = [agent.compute_trajectory(i, WorldView.from_log(s) if agent.privileged else None)
                     for s, i in zip(scenes, inputs)]
            rows = [scorer.score(p.poses, p.sampling.interval) for scorer, p in zip(scorers, plans)]
            assert rows[1][1] == pytest.approx(rows[0][1], abs=1e-9), (name, version)
            columns = [{c: v for c, v in r.result(0).items() if np.isscalar(v)} for r, _ in rows]
            assert columns[1] == pytest.approx(columns[0], abs=1e-9, nan_ok=True), (name, version)


def test_export_refuses_a_used_folder_and_a_scene_too_large_for_its_slot(export, tmp_path):
    scene = export["scenes"][0]
    with pytest.raises(ExportError, match="not empty"):
        NavsimExport(export["root"] / "navsim_logs" / "navtest", export["maps"])
    with pytest.raises(ExportError, match="unknown nuPlan map location"):
        NavsimExport(tmp_path / "logs", tmp_path / "maps", location="atlantis")
    far = translated_map(scene.map, (SLOT_SIZE_M, 0))
    with pytest.raises(ExportError, match=rf"scene {scene.token}: .* within ±{(SLOT_SIZE_M - MIN_MAP_GAP_M) // 2} m"):
        check_slot_fit(type(scene)(**{**scene.__dict__, "map": far}))
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "old.txt").write_text("another export")
    with NavsimExport(tmp_path / "logs", tmp_path / "maps", "sg-one-north", overwrite=True) as writer:
        writer.add(scene)
    assert not (tmp_path / "maps" / "old.txt").exists()
    assert read_nuplan_map(nuplan_map_path(tmp_path / "maps", "sg-one-north")).lanes


def test_cli_export_in_another_city_and_builtin_scores_per_token(tmp_path):
    """Three tokens of builtin:navtest (both frames of its first log and the first frame of the next): the export
    holds 2 logs in Boston's map, a scene filter names the 3 tokens, and w0sim scores them as it scores the built-in
    split, v2.2's two-frame comfort of the second frame included."""
    runner = CliRunner()
    out = tmp_path / "data"
    args = ["scenes", "export-navsim", "--out", str(out), "--limit", "3", "--map-location", "us-ma-boston"]
    assert runner.invoke(app, args).exit_code == 0
    logs = sorted((out / "navsim_logs" / "navtest").glob("*.pkl"))
    assert len(logs) == 2 and all(f["map_location"] == "us-ma-boston" for f in pickle.loads(logs[0].read_bytes()))
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    wrong = runner.invoke(app, [*args[:-1], "atlantis"])
    assert wrong.exit_code == 2 and "not a nuPlan city" in wrong.output
    scores = {}
    for name, split in (("builtin", ["--split", "builtin:navtest", "--limit", "3"]),
                        ("export", ["--split", "navsim:navtest", "--navsim-logs", str(out / "navsim_logs"),
                                    "--nuplan-maps", str(out / "maps"),
                                    "--scene-filter", str(out / "scene_filters" / "navtest.yaml")])):
        result = runner.invoke(app, ["eval", "--agent", "constant_velocity", *split, "--pdm-version", "v2.2",
                                     "--workers", "1", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        with (tmp_path / name / "scores.csv").open() as handle:
            scores[name] = {row.pop("token"): row for row in csv.DictReader(handle)}
    assert set(scores["export"]) == set(scores["builtin"]) and len(scores["builtin"]) == 4  # 3 tokens + average
    second = list(scores["builtin"])[1]
    assert not math.isnan(float(scores["builtin"][second]["two_frame_extended_comfort"]))
    for token, row in scores["builtin"].items():
        for column, value in row.items():
            mine = scores["export"][token][column]
            assert value == mine or float(value) == pytest.approx(float(mine), abs=1e-9, nan_ok=True), (token, column)
