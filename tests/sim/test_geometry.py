"""Geometry helpers: frames, angle wrapping and footprints against hand-computed values."""
import numpy as np
import pytest

from sim.geometry import PACIFICA, box_corners, ego_center, ego_corners, global_to_local, local_to_global, principal_value


def test_principal_value_wraps_to_half_open_interval():
    assert principal_value(np.pi) == pytest.approx(-np.pi)
    assert principal_value(-np.pi) == pytest.approx(-np.pi)
    assert principal_value(3 * np.pi / 2) == pytest.approx(-np.pi / 2)


def test_local_global_round_trip():
    rng = np.random.default_rng(0)
    origin = np.array([10.0, -4.0, 2.5])
    local = rng.normal(size=(20, 3))
    local[:, 2] = principal_value(local[:, 2])
    np.testing.assert_allclose(global_to_local(local_to_global(local, origin), origin), local, atol=1e-12)
    np.testing.assert_allclose(local_to_global(np.array([[1.0, 0.0, 0.0]]), np.array([0.0, 0.0, np.pi / 2]))[0],
                               [0.0, 1.0, np.pi / 2], atol=1e-12)


def test_global_to_local_takes_one_pose_or_any_batch_of_poses():
    """(..., 3) in, (..., 3) out: 2 m along a north-facing origin is (2, 0) ahead of it, 1 m west is 1 m to its left."""
    origin = np.array([10.0, -4.0, np.pi / 2])
    np.testing.assert_allclose(global_to_local(np.array([10.0, -2.0, np.pi / 2]), origin), [2.0, 0.0, 0.0], atol=1e-12)
    grid = np.broadcast_to(np.array([9.0, -4.0, np.pi]), (2, 4, 3))
    np.testing.assert_allclose(global_to_local(grid, origin), np.broadcast_to([0.0, 1.0, np.pi / 2], (2, 4, 3)),
                               atol=1e-12)


def test_pacifica_footprint_and_corner_order():
    corners = ego_corners(np.array([0.0, 0.0, 0.0]))
    # FL, RL, RR, FR around the box centre 1.461 m ahead of the rear axle.
    np.testing.assert_allclose(corners, [[4.049, 1.1485], [-1.127, 1.1485], [-1.127, -1.1485], [4.049, -1.1485]], atol=1e-12)
    np.testing.assert_allclose(ego_center(np.array([0.0, 0.0, 0.0])), [PACIFICA.rear_axle_to_center, 0.0])


def test_single_and_batched_ego_corners_agree():
    rng = np.random.default_rng(1)
    states = rng.normal(size=(7, 11)) * [50, 50, 3, 1, 1, 1, 1, 1, 1, 1, 1]
    batched = ego_corners(states)
    for state, expected in zip(states, batched):
        np.testing.assert_allclose(ego_corners(state), expected, atol=1e-12)
    np.testing.assert_allclose(box_corners(1.0, 2.0, 0.0, 4.0, 2.0), [[3, 3], [-1, 3], [-1, 1], [3, 1]])


def test_rectangle_overlap_agrees_with_shapely():
    import shapely

    from sim.geometry import rectangles_intersect

    rng = np.random.default_rng(3)
    a = box_corners(0.0, 0.0, 0.3, 4.6, 1.9)
    centres = rng.uniform(-6, 6, size=(400, 2))
    b = box_corners(centres[:, 0], centres[:, 1], rng.uniform(-np.pi, np.pi, 400), rng.uniform(0.4, 6, 400),
                    rng.uniform(0.4, 3, 400))
    expected = shapely.intersects(shapely.Polygon(a), shapely.polygons(b))
    assert 50 < expected.sum() < 350  # both outcomes are well represented
    np.testing.assert_array_equal(rectangles_intersect(a, b), expected)
    # Touching edges count as intersecting, as in shapely.
    assert rectangles_intersect(box_corners(0, 0, 0, 2, 2), box_corners(2, 0, 0, 2, 2)).all()


def test_nuplan_corner_formula_is_the_same_box_up_to_rounding():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-1e3, 1e3, (2, 300))
    heading, length, width = rng.uniform(-4, 4, 300), rng.uniform(0.4, 12, 300), rng.uniform(0.4, 3, 300)
    fast = box_corners(x, y, heading, length, width)
    nuplan = box_corners(x, y, heading, length, width, nuplan_formula=True)
    np.testing.assert_allclose(nuplan, fast, rtol=0, atol=1e-9)
    assert (nuplan != fast).any()  # the two float orders really differ in the last bits
    states = np.stack([x, y, heading], axis=-1)
    np.testing.assert_array_equal(ego_corners(states, center=ego_center(states), nuplan_formula=True),
                                  ego_corners(states, nuplan_formula=True))
    np.testing.assert_allclose(ego_corners(states, nuplan_formula=True), ego_corners(states), rtol=0, atol=1e-9)
