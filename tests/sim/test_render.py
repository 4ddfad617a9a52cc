"""Tests of the camera and BEV renderers on small hand-built road maps."""
from __future__ import annotations

import numpy as np
import pytest
import shapely

from sim.map import Area, Lane, RoadMap
from sim.render import (
    BEV_CHANNELS,
    BEVConfig,
    CameraConfig,
    CameraRenderer,
    bev_pixels,
    bev_to_rgb,
    draw_bev_polylines,
    render_bev_channels,
    render_map_overview,
)
from sim.render.bev import ROUTE_PLOT_COLOUR
from sim.state import AgentSlice, AgentType, TrafficLightStatus

W = 3.5  # lane width


def _lane(lane_id: str, a, b, n: int = 21, **kwargs) -> Lane:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    centre = a + np.linspace(0, 1, n)[:, None] * (b - a)
    d = (b - a) / np.linalg.norm(b - a)
    left = np.array([-d[1], d[0]]) * W / 2
    return Lane(lane_id, centre, centre + left, centre - left, 13.9, lane_id + "_g", **kwargs)


def _box(x0, y0, x1, y1) -> shapely.Polygon:
    return shapely.box(x0, y0, x1, y1)


def straight_road() -> RoadMap:
    """Two opposite lanes along x in [-100, 100] (eastbound at y < 0), sidewalks, a crosswalk at x = 30."""
    lanes = [_lane("east", (-100, -W / 2), (100, -W / 2)), _lane("west", (100, W / 2), (-100, W / 2))]
    areas = [
        Area("rb_e", "roadblock", _box(-100, -W, 100, 0)),
        Area("rb_w", "roadblock", _box(-100, 0, 100, W)),
        Area("walk_s", "walkway", _box(-100, -W - 2.5, 100, -W)),
        Area("walk_n", "walkway", _box(-100, W, 100, W + 2.5)),
        Area("cross", "crosswalk", _box(30, -W, 34, W)),
    ]
    return RoadMap(lanes, areas, name="straight")


def intersection() -> RoadMap:
    """A 4-way junction at the origin: one lane each way on four 60 m arms, signalised connectors."""
    lanes, areas, r = [], [Area("junction", "intersection", _box(-7, -7, 7, 7))], 7.0
    for k in range(4):
        h = k * np.pi / 2
        fwd, left = np.array([np.cos(h), np.sin(h)]), np.array([-np.sin(h), np.cos(h)])
        # Incoming lane towards the junction from direction -fwd, outgoing lane away along fwd.
        lanes.append(_lane(f"in{k}", -fwd * 67 - left * W / 2, -fwd * r - left * W / 2))
        lanes.append(_lane(f"out{k}", fwd * r - left * W / 2, fwd * 67 - left * W / 2))
        ext = np.array([-fwd * 67 - left * W, -fwd * r - left * W, -fwd * r + left * W, -fwd * 67 + left * W])
        areas.append(Area(f"rb{k}", "roadblock", shapely.Polygon(ext)))
    lane_ids = {l.id: l for l in lanes}
    connectors = []
    for k in range(4):
        start = lane_ids[f"in{k}"]
        for turn, out in (("s", k), ("l", (k + 1) % 4), ("r", (k + 3) % 4)):
            end = lane_ids[f"out{out}"]
            connectors.append(_lane(f"c{k}{turn}", start.centerline[-1], end.centerline[0], n=8,
                                    is_connector=True, traffic_light=f"light{k}"))
    succ = {f"in{k}": tuple(c.id for c in connectors if c.id.startswith(f"c{k}")) for k in range(4)}
    lanes = [Lane(l.id, l.centerline, l.left_boundary, l.right_boundary, l.speed_limit, l.lane_group,
                  successors=succ.get(l.id, ())) for l in lanes]
    return RoadMap(lanes + connectors, areas, name="cross")


def agents(xs, ys, types, headings=None, length=4.5, width=1.9, height=1.6) -> AgentSlice:
    n = len(xs)
    types = np.asarray(types, dtype=np.int8)
    return AgentSlice(
        x=np.asarray(xs, dtype=np.float64), y=np.asarray(ys, dtype=np.float64),
        heading=np.zeros(n) if headings is None else np.asarray(headings, dtype=np.float64),
        vx=np.zeros(n), vy=np.zeros(n), valid=np.ones(n, dtype=bool),
        length=np.full(n, length), width=np.full(n, width), height=np.full(n, height),
        agent_type=types, track_ids=[f"a{i}" for i in range(n)],
    )


EGO = np.array([-20.0, -W / 2, 0.0])  # on the eastbound lane, looking east


@pytest.fixture(scope="module")
def road() -> RoadMap:
    return straight_road()


@pytest.fixture(scope="module")
def camera(road) -> CameraRenderer:
    return CameraRenderer(road, CameraConfig())


# --- camera ------------------------------------------------------------------------------------


def test_camera_intrinsics_keep_cam_f0_fov():
    small, large = CameraConfig(), CameraConfig(width=1920, height=1080)
    assert small.focal == pytest.approx(1545 * 256 / 1920)
    assert small.horizontal_fov == pytest.approx(large.horizontal_fov)
    assert small.intrinsics[0, 2] == 128 and small.intrinsics[1, 2] == 64


@pytest.mark.parametrize("size", [(256, 128), (512, 256), (200, 150)])
def test_camera_shape_dtype(road, size):
    img = CameraRenderer(road, CameraConfig(width=size[0], height=size[1])).render(EGO)
    assert img.shape == (size[1], size[0], 3) and img.dtype == np.uint8


def test_sky_above_road_below(camera):
    img = camera.render(EGO).astype(int)
    sky = img[:60].reshape(-1, 3)
    assert (sky[:, 2] > sky[:, 0] + 20).all() and (img[:20, :, 2] > img[:20, :, 0] + 80).all()  # blue sky
    road_px = img[120, 128]  # bottom centre: asphalt ~6 m ahead
    assert abs(road_px[0] - road_px[2]) < 15 and road_px.max() < 110
    off_road = CameraRenderer(straight_road()).render(np.array([0.0, 40.0, 0.0]))[120, 128].astype(int)
    assert off_road[1] > off_road[2] + 15  # grass is greener than the asphalt


def test_lane_markings_visible(camera):
    row = camera.render(EGO)[110].astype(int)
    # Ego on the eastbound lane centre: the yellow centre line lies to its LEFT (y > 0), the white edge right.
    yellow = np.flatnonzero((row[:, 0] > 120) & (row[:, 2] < row[:, 0] - 50))
    white = np.flatnonzero(row.min(1) > 150)
    assert yellow.size and yellow.mean() < 128
    assert white.size and white.mean() > 128


def test_vehicle_ahead_changes_centre_and_behind_changes_nothing(camera):
    empty = camera.render(EGO, agents([], [], []))
    assert np.array_equal(empty, camera.render(EGO, None))
    ahead = camera.render(EGO, agents([EGO[0] + 15.0], [EGO[1]], [AgentType.VEHICLE]))
    changed = np.abs(ahead.astype(int) - empty).sum(-1) > 0
    assert changed[50:80, 110:146].mean() > 0.5
    assert not changed[:, :60].any() and not changed[:, -60:].any()
    behind = camera.render(EGO, agents([EGO[0] - 10.0], [EGO[1]], [AgentType.VEHICLE]))
    assert np.array_equal(behind, empty)


def test_object_on_the_left_is_drawn_on_the_left(camera):
    empty = camera.render(EGO)
    img = camera.render(EGO, agents([EGO[0] + 20.0], [EGO[1] + 5.0], [AgentType.PEDESTRIAN], length=0.6, width=0.6,
                                    height=1.8))
    cols = np.flatnonzero((np.abs(img.astype(int) - empty).sum(-1) > 0).any(0))
    assert cols.size and cols.max() < 128


@pytest.mark.parametrize("dx", [-2.0, -1.5, 0.0, 1.3, 1.5, 2.5])
def test_agent_straddling_the_near_plane(camera, dx):
    # Camera at 1.5 m ahead of the rear axle: these boxes contain or straddle the camera plane.
    objects = agents([EGO[0] + 1.5 + dx, EGO[0] + 1.5 + dx], [EGO[1] + 1.5, EGO[1] - 0.5],
                     [AgentType.VEHICLE, AgentType.BARRIER], headings=[0.3, -1.2])
    img = camera.render(EGO, objects)
    assert img.shape == (128, 256, 3)
    assert np.array_equal(img, camera.render(EGO, objects))


def test_a_box_beside_the_camera_cut_by_the_near_plane_is_drawn_on_its_side(camera):
    """A 16 m box 2 m right of the camera, centred on the camera plane: its clipped faces lie at camera x >= 2 > 0,
    so (pinhole, principal point at column 128) they project right of the centre column only."""
    box = agents([EGO[0] + 1.5], [EGO[1] - 2.5], [AgentType.BARRIER], length=16.0, width=1.0, height=1.0)
    changed = (np.abs(camera.render(EGO, box).astype(int) - camera.render(EGO)).sum(-1) > 0).any(0)
    assert not changed[:128].any()
    # Its near side runs from u = 128 + f * 2 m / 8 m ~ 179.5 (f = 1545 * 256 / 1920 ~ 206 px) out past the edge.
    assert changed[184:].all()


def test_camera_is_deterministic_and_history_free(road):
    objects = agents([0.0, 10.0, 25.0, -3.0], [-1.7, 1.7, -6.0, 5.0],
                     [AgentType.VEHICLE, AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.TRAFFIC_CONE],
                     headings=[0.0, np.pi, 0.5, 0.0])
    a = CameraRenderer(road).render(EGO, objects)
    warm = CameraRenderer(road)
    for x in np.linspace(-90, 80, 12):  # visit other texture tiles first
        warm.render(np.array([x, -W / 2, 0.3]), objects)
    assert np.array_equal(a, warm.render(EGO, objects))
    assert np.array_equal(a, CameraRenderer(road).render(EGO.copy(), objects))


def test_invalid_agents_are_ignored(camera):
    objects = agents([EGO[0] + 15.0], [EGO[1]], [AgentType.VEHICLE])
    objects.valid[:] = False
    assert np.array_equal(camera.render(EGO, objects), camera.render(EGO))


def test_project_and_full_state_pose(camera):
    state = np.zeros(11)
    state[:3] = EGO
    assert np.array_equal(camera.render(state), camera.render(EGO))
    uv, depth = camera.project(EGO, np.array([[EGO[0] + 1.5 + 20.0, EGO[1], 1.6], [EGO[0] + 21.5, EGO[1] + 2.0, 0.0]]))
    assert depth == pytest.approx([20.0, 20.0])
    assert uv[0] == pytest.approx([128.0, 64.0])  # on the optical axis: the image centre
    assert uv[1, 0] < 128 and uv[1, 1] > 64  # left of centre, below the horizon


def test_pitch_down_raises_the_horizon(road):
    level, down = CameraRenderer(road), CameraRenderer(road, CameraConfig(pitch=0.1))
    sky = lambda img: int((img[:, 128, 2].astype(int) > img[:, 128, 0] + 20).sum())  # noqa: E731
    assert sky(down.render(EGO)) < sky(level.render(EGO)) - 10


def test_side_cameras_see_their_side(road):
    ped = agents([EGO[0] + 5.0], [EGO[1] + 12.0], [AgentType.PEDESTRIAN], length=0.6, width=0.6, height=1.8)
    left = CameraRenderer(road, CameraConfig.side(left=True))
    right = CameraRenderer(road, CameraConfig.side(left=False))
    assert (left.render(EGO, ped) != left.render(EGO)).any()
    assert np.array_equal(right.render(EGO, ped), right.render(EGO))


def test_red_light_paints_stop_line_and_head():
    cam = CameraRenderer(intersection())
    ego = np.array([-30.0, -W / 2, 0.0])  # in0 runs east towards the junction
    red = {f"light{k}": int(TrafficLightStatus.RED) for k in range(4)}
    green = {f"light{k}": int(TrafficLightStatus.GREEN) for k in range(4)}
    img_red, img_green, img_none = cam.render(ego, None, red), cam.render(ego, None, green), cam.render(ego)
    reddish = lambda im: ((im[..., 0].astype(int) > 150) & (im[..., 1] < 90)).sum()  # noqa: E731
    assert reddish(img_red) > reddish(img_green) and reddish(img_none) == 0
    assert np.array_equal(img_red, CameraRenderer(intersection()).render(ego, None, red))  # repaint == fresh


# --- BEV ---------------------------------------------------------------------------------------


def test_bev_shapes_and_values(road):
    ch = render_bev_channels(road, EGO)
    assert ch.shape == (len(BEV_CHANNELS), 256, 256) and ch.dtype == np.uint8
    assert set(np.unique(ch)) <= {0, 1}
    rgb = bev_to_rgb(ch)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8


def test_bev_ego_at_centre_and_heading_up(road):
    ego = EGO.copy()
    ego[2] = 0.7  # any heading: ego forward is up in the raster
    cfg = BEVConfig()
    ch = dict(zip(BEV_CHANNELS, render_bev_channels(road, ego, None, config=cfg)))
    rows, cols = np.nonzero(ch["ego"])
    # Box centre 1.461 m ahead of the rear axle, which sits at pixel (128, 128) -> ~5.8 px above.
    assert cols.mean() == pytest.approx(127.5, abs=0.6)
    assert rows.mean() == pytest.approx(127.5 - 1.461 / 0.25, abs=0.6)
    assert np.ptp(rows) > np.ptp(cols)  # long axis vertical

    fwd, left = np.array([np.cos(0.7), np.sin(0.7)]), np.array([-np.sin(0.7), np.cos(0.7)])
    ahead = ego[:2] + 10 * fwd
    beside = ego[:2] + 8 * left
    objs = agents([ahead[0], beside[0]], [ahead[1], beside[1]], [AgentType.VEHICLE, AgentType.PEDESTRIAN],
                  headings=[0.7, 0.7], length=4.0, width=2.0)
    ch = dict(zip(BEV_CHANNELS, render_bev_channels(road, ego, objs, config=cfg)))
    rows, cols = np.nonzero(ch["vehicles"])
    assert rows.mean() == pytest.approx(127.5 - 40, abs=1) and cols.mean() == pytest.approx(127.5, abs=1)
    rows, cols = np.nonzero(ch["pedestrians"])
    assert cols.mean() == pytest.approx(127.5 - 32, abs=1)  # the ego's left is the image's left
    assert bev_pixels(ahead[None], ego, cfg)[0] == pytest.approx([127.5, 87.5])


def test_bev_drivable_lanes_route(road):
    ego = np.array([0.0, -W / 2, 0.0])
    ch = dict(zip(BEV_CHANNELS, render_bev_channels(road, ego, route_lane_ids=["east"])))
    # Heading east: north (y > 0) is the image's left, so row = 127.5 - dx / 0.25, col = 127.5 - dy / 0.25.
    px = lambda x, y: (int(round(127.5 - (x - ego[0]) / 0.25)), int(round(127.5 - (y - ego[1]) / 0.25)))  # noqa: E731
    assert ch["drivable"][px(5.0, -1.0)] == 1 and ch["drivable"][px(5.0, 2.5)] == 1
    assert ch["drivable"][px(5.0, -6.0)] == 0 and ch["drivable"][px(5.0, 9.0)] == 0
    assert ch["route"][px(5.0, -1.0)] == 1 and ch["route"][px(5.0, 2.0)] == 0
    assert ch["lanes"][px(5.0, -W / 2)] == 1 and ch["lanes"][px(5.0, -0.6)] == 0


def test_bev_ahead_shift_and_empty(road):
    cfg = BEVConfig(width=128, height=192, resolution=0.5, ahead_m=20.0)
    ch = render_bev_channels(road, EGO, agents([], [], []), config=cfg)
    rows, cols = np.nonzero(ch[BEV_CHANNELS.index("ego")])
    assert ch.shape == (7, 192, 128)
    assert rows.mean() == pytest.approx(95.5 + 40 - 1.461 / 0.5, abs=0.6)
    assert cols.mean() == pytest.approx(63.5, abs=0.6)


def test_bev_draws_agents_out_to_the_rasters_corners_at_any_resolution(road):
    # 2 m/px: the 64 x 64 px raster spans +-64 m; agents 58 m ahead and 58 m to either side are inside it.
    cfg = BEVConfig(width=64, height=64, resolution=2.0)
    xs, ys = EGO[0] + np.array([58.0, 58.0, -58.0]), EGO[1] + np.array([58.0, -58.0, -58.0])
    ch = dict(zip(BEV_CHANNELS, render_bev_channels(road, EGO, agents(xs, ys, [AgentType.VEHICLE] * 3,
                                                                       headings=[EGO[2]] * 3), config=cfg)))
    for x, y in zip(xs, ys):
        col, row = np.rint(bev_pixels(np.array([[x, y]]), EGO, cfg)[0]).astype(int)
        assert ch["vehicles"][row, col] == 1, (x, y)


def test_draw_polylines(road):
    rgb = bev_to_rgb(render_bev_channels(road, EGO))
    before = rgb.copy()
    line = np.stack([EGO[0] + np.arange(8) * 2.0, np.full(8, EGO[1])], -1)
    out = draw_bev_polylines(rgb, EGO, [line, np.zeros((0, 2))], [(0, 200, 0), (0, 0, 0)])
    assert out is rgb and (out != before).any()
    assert tuple(out[int(127.5 - 8 / 0.25), 128]) == (0, 200, 0)


def test_map_overview_size_capped():
    road = intersection()
    img = render_map_overview(road, px_per_m=4.0)
    assert img.dtype == np.uint8 and img.ndim == 3 and max(img.shape[:2]) <= 2048
    assert img.shape[0] == pytest.approx((134 + 20) * 4, abs=2)
    big = render_map_overview(road, agents([0.0], [-20.0], [AgentType.VEHICLE]), ego_pose=np.array([-30, -1.75, 0]),
                              route_lane_ids=["in0", "c0s", "out0"], px_per_m=100.0, max_side=512)
    assert max(big.shape[:2]) <= 512


def test_map_overview_tints_the_route_lanes_with_the_route_colour_over_the_ground():
    """Route lanes are 55 % of the ground beneath (asphalt and markings alike) and 45 % route colour; nothing else
    changes. At 4 px/m with 10 m margins the eastbound lane (x in [-100, 100], y in [-3.5, 0]) lies between pixel
    columns 39.5 and 839.5 and rows 63.5 and 77.5 of the straight road's overview."""
    road = straight_road()
    ground = render_map_overview(road)
    routed = render_map_overview(road, route_lane_ids=["east"])
    tinted = (ground != routed).any(-1)
    rows, cols = np.nonzero(tinted)
    assert tinted[65:77, 41:839].all()
    assert rows.min() >= 63 and rows.max() <= 78 and cols.min() >= 39 and cols.max() <= 840
    blend = 0.55 * ground[tinted].astype(np.float64) + 0.45 * ROUTE_PLOT_COLOUR
    assert np.abs(routed[tinted] - np.floor(blend)).max() <= 1.0
    assert len(np.unique(ground[tinted], axis=0)) > 1  # asphalt and markings beneath, each blended


def test_render_handles_empty_map():
    empty = RoadMap([], [], name="empty")
    img = CameraRenderer(empty).render(np.zeros(3))
    assert img.shape == (128, 256, 3)
    assert render_bev_channels(empty, np.zeros(3)).sum() > 0  # the ego only
    assert render_map_overview(empty).shape[2] == 3


def test_broken_lines_are_3_m_dashes_every_9_m_of_the_lines_own_arc_length():
    """A boundary sampled every metre over 20 m: dashes over [0, 3], [9, 12] and [18, 20] m, each from its start
    through the samples inside to its end, every point once."""
    from sim.render.map_paint import _dashes

    s = np.arange(21.0)
    pts = np.stack([s, np.full(21, 5.0)], -1)
    dashes = _dashes(pts, s)
    assert [d[:, 0].tolist() for d in dashes] == [[0.0, 1.0, 2.0, 3.0], [9.0, 10.0, 11.0, 12.0], [18.0, 19.0, 20.0]]
    assert all((d[:, 1] == 5.0).all() for d in dashes)


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_light_heads_stand_across_the_junction_as_far_as_the_farthest_signalised_connector_reaches(seed):
    """On a generated signalised 4-way junction (centred on the origin, its stop lines ~13 m out), each incoming lane
    that feeds signalised connectors has its stop line at the lane's end; one head per distinct light of those
    connectors stands ahead of the line's middle, along the lane's final direction, by the farthest reach of those
    connectors' ends along that direction clipped to [8, 40] m, the heads 0.6 m apart across the lane and facing along
    it. Every approach has a straight-through connector, so each head lies past the junction's centre, on its far
    edge: over the junction, not down the road beyond it."""
    from scenarios.generator import generate_scene
    from sim.render.map_paint import map_paint

    road_map = generate_scene("intersection", seed).map
    paint = map_paint(road_map)
    junction = shapely.union_all(road_map.area_layer("intersection")[1])
    centre = np.asarray(junction.centroid.coords[0])
    by_id = {lane.id: lane for lane in road_map.lanes}
    heads, head_lights = paint.heads, list(paint.head_lights)
    claimed = np.zeros(len(heads), dtype=bool)
    approaches = 0
    for lane in road_map.lanes:
        if lane.is_connector:
            continue
        signalised = [by_id[c] for c in lane.successors if by_id[c].is_connector and by_id[c].traffic_light]
        if not signalised:
            continue
        approaches += 1
        mid = (lane.left_boundary[-1] + lane.right_boundary[-1]) / 2
        d = lane.centerline[-1] - lane.centerline[-2]
        d = d / np.linalg.norm(d)
        across = lane.left_boundary[-1] - lane.right_boundary[-1]
        across = across / np.linalg.norm(across)
        reach = max(float(np.dot(c.centerline[-1] - mid, d)) for c in signalised)
        ahead = float(np.clip(reach, 8.0, 40.0))
        lights = sorted({c.traffic_light for c in signalised})
        rel = heads[:, :2] - mid
        along, side = rel @ d, rel @ across
        facing = np.abs(np.angle(np.exp(1j * (heads[:, 2] - np.arctan2(d[1], d[0]))))) < 0.2
        mine = facing & (along > 0) & (np.abs(side) < 1.0) & np.isin(head_lights, lights)
        assert sorted(np.asarray(head_lights)[mine].tolist()) == lights, (lane.id, lights)
        assert along[mine] == pytest.approx(np.full(len(lights), ahead), abs=1e-6), lane.id
        n = len(lights)
        assert np.sort(side[mine]) == pytest.approx([(k - (n - 1) / 2) * 0.6 for k in range(n)], abs=1e-6)
        for x, y in heads[mine, :2]:
            assert np.dot((x, y) - centre, d) > 5.0  # past the junction's middle, on its far side
            assert junction.distance(shapely.Point(x, y)) < 1.0  # over the junction's far edge, not down the road
        assert not claimed[mine].any()
        claimed |= mine
    assert approaches >= 4 and claimed.all()


def test_lane_lines_are_dashed_between_same_way_lanes_yellow_against_oncoming_and_white_at_the_kerb():
    """Two eastbound lanes and one westbound, 3.5 m wide, 100 m long: the line between the eastbound lanes is
    broken (3 m dashes), the line against the oncoming lane solid yellow, the kerbs solid (white on a lane's right,
    yellow on its left, US style)."""
    from sim.render.map_paint import _lane_markings

    road = RoadMap([_lane("east_in", (-50, -W / 2), (50, -W / 2)), _lane("east_out", (-50, -1.5 * W), (50, -1.5 * W)),
                    _lane("west", (50, W / 2), (-50, W / 2))])
    white, yellow, dashed = _lane_markings(road)
    solid = sorted((colour, float(piece[0, 1])) for colour, pieces in (("white", white), ("yellow", yellow))
                   for piece in pieces if np.ptp(piece[:, 0]) > 10.0)  # a lane's first metre probes off its start
    assert solid == [("white", -7.0), ("white", 3.5), ("yellow", 0.0), ("yellow", 0.0)]
    assert {float(y) for dash in dashed for y in dash[:, 1]} == {-3.5}
    assert all(np.ptp(dash[:, 0]) <= 3.0 for dash in dashed) and len(dashed) >= 10
