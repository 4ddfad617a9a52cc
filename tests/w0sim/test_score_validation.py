"""`w0sim score` on bad inputs (issue 15): a scene with NaN / inf values is a ScoreInputError naming the file and the
field; implausible trajectories are failed rows with a reason; every valid row has a finite score in [0, 1]."""
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from scenarios.generator import generate_scene
from scenarios.scene import save_scene
from tests.scenarios.scene_mutation import with_column_set
from w0sim.cli import app
from w0sim.score import ScoreInputError, TrajectorySpec, score_trajectories

STRAIGHT = [[4.0 * i, 0.0, 0.0] for i in range(1, 9)]


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    return save_scene(generate_scene("straight", 1), tmp_path_factory.mktemp("score") / "straight.npz")


@pytest.mark.parametrize("field, column, value", [("agents_x", None, np.nan), ("agents_heading", None, np.inf),
                                                  ("ego_log", 3, np.inf), ("ego_log", 0, np.nan)])
def test_non_finite_scene_values_are_a_clean_error_naming_the_field(scene_path, tmp_path, field, column, value):
    path = with_column_set(scene_path, tmp_path / "bad.npz", field, 1 if column is None else column, value)
    with pytest.raises(ScoreInputError, match="non-finite") as info:
        score_trajectories(path, [TrajectorySpec("straight", STRAIGHT)])
    assert str(path) in str(info.value) and field.split("_")[0] in str(info.value)
    trajectories = tmp_path / "t.json"
    trajectories.write_text(json.dumps([{"poses": STRAIGHT}]))
    result = CliRunner().invoke(app, ["score", "--scene", str(path), "--trajectories", str(trajectories),
                                      "--out", str(tmp_path / "s.csv")])
    assert result.exit_code != 0 and "non-finite" in " ".join(result.output.split()), result.output
    assert not isinstance(result.exception, (ValueError, TypeError, IndexError))


def test_implausible_trajectories_are_failed_rows_and_the_rest_score_in_range(scene_path):
    far = [row[:] for row in STRAIGHT]
    far[3][0] = 1e5
    spinning = [row[:] for row in STRAIGHT]
    spinning[2][2] = 1e6
    huge = [[1e300, 1e300, 0.0]] * 8
    specs = [TrajectorySpec("straight", STRAIGHT), TrajectorySpec("far", far), TrajectorySpec("spinning", spinning),
             TrajectorySpec("huge", huge), TrajectorySpec("strings", [["1", "2", "0"]] * 8),
             TrajectorySpec("bool_interval", STRAIGHT, True), TrajectorySpec("slow_interval", STRAIGHT, 1e6),
             TrajectorySpec("many", [[0.1 * i, 0.0, 0.0] for i in range(5000)]),
             TrajectorySpec("at_the_bound", [[0.4 * i, 0.0, 0.0] for i in range(1, 1001)], 0.1)]  # 1,000 poses: allowed
    for version in ("v1.1", "v2.2"):
        rows = {row["name"]: row for row in score_trajectories(scene_path, specs, version).rows}
        assert rows["straight"]["valid"] and 0.0 <= rows["straight"]["score"] <= 1.0
        assert rows["at_the_bound"]["valid"], rows["at_the_bound"]
        expected = {"far": "trajectory: x 100000 at [3, 0] is beyond the plausibility bound +-10000",
                    "spinning": "heading 1e+06 at [2, 2]", "huge": "", "strings": "must be numbers",
                    "bool_interval": "interval", "slow_interval": "interval", "many": "5000 poses"}
        for name, fragment in expected.items():
            row = rows[name]
            assert not row["valid"] and math.isnan(row["score"]) and fragment in row["reason"], row
