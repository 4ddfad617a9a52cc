"""Every published figure: where its values are, how it is measured, at what cost, and what is not checked and why."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from scripts.figures.measures import (
    CARLA_FILES,
    FAMILIES,
    Context,
    carla_file_artifacts,
    measure_baseline_scores,
    measure_carla_file,
    measure_carla_routes,
    measure_checkpoint,
    measure_collect_hash,
    measure_main_job,
    measure_navtest_100,
    measure_navtest_agents,
    measure_navtest_families,
    measure_routes_agents,
    measure_routes_drivevla,
    measure_scaling,
    measure_scaling_csv,
    measure_town_load,
    measure_training,
    measure_world_model,
)
from scripts.figures.published import NUMBER, Place, Prose, Table, text_value, value
from scripts.figures.tolerances import Absolute, Prefix, Printed, Ratio, Same

CARD = "checkpoints/drivevla-w0-tiny/README.md"
RESULTS = "docs/results/README.md"

# The data-scaling experiment's table (mean ± standard error over the seeds) and the README's sentence about it.
SCALING_TABLE = Table({"action-only": {0: "action_only", 1: "action_only_se"},
                       "world-model": {0: "world_model", 1: "world_model_se"}, "difference": {0: "difference"}},
                      {"500": "500", "2,000": "2000", "8,000": "8000"})
SCALING_PROSE = Prose(rf"scored {value('wm_500')} vs {value('ao_500')} PDMS \(action-only\) at 500 samples, "
                      rf"{value('wm_2000')} vs {value('ao_2000')} at 2,000 and {value('wm_8000')} vs {value('ao_8000')} "
                      rf"at 8,000")


@dataclass(frozen=True)
class Figure:
    """A set of published values, where they are, how to measure them, and at what cost. `slow`: why it is not
    measured by default. `tolerances`: key pattern (fnmatch) -> tolerance; numbers otherwise compare to their
    printed precision, texts as the same text. `artifacts`: files rewritten with the figure under --write."""

    name: str
    cost: str
    places: tuple[Place, ...]
    measure: Callable[[Context], dict]
    tolerances: dict = field(default_factory=dict)
    slow: str | None = None
    needs_carla: bool = False
    artifacts: Callable[[Context], dict[str, Path]] | None = None

    def tolerance(self, key: str, published: str):
        for pattern, tolerance in self.tolerances.items():
            if fnmatch.fnmatchcase(key, pattern):
                return tolerance
        return Printed() if NUMBER.fullmatch(published) else Same()


NAVTEST_COLUMN_HEADERS = {"NC": {0: "nc"}, "DAC": {0: "dac"}, "EP": {0: "ep"}, "TTC": {0: "ttc"}, "C": {0: "c"},
                          "DDC": {0: "ddc"}, "PDMS": {0: "pdms"}}
NAVTEST_ROWS = {"constant velocity": "constant_velocity", "human (log replay)": "human",
                "PDM-Closed, NAVSIM's (privileged)": "pdm_closed", "lane-following PDM (privileged)": "pdm_lane_following"}
FAMILY_ROWS = {"all": "all", **{family: family for family in FAMILIES}}
BASELINE_FAMILIES = {"straight": "straight", "curve": "curve", "intersection": "intersection",
                     "T-junction": "t_junction", "merge": "merge"}
BASELINE_COLUMNS = {"PDM-Closed, NAVSIM's": "pdm_closed", "lane-following PDM": "pdm_lane_following",
                    "constant velocity": "constant_velocity", "human": "human"}
ROUTE_TABLE = (Prose(rf"driving score {value('ds')}, route completion {value('rc')}, infraction penalty {value('ip')} over "
                     rf"{value('routes')} routes"),
               Table({"routes": {0: "routes"}, "driving score": {0: "ds"}, "route completion": {0: "rc"},
                      "penalty": {0: "ip"}}, header="family"),
               Table({"status": {"text": "status"}, "driving score": {0: "ds"}, "route completion": {0: "rc"},
                      "penalty": {0: "ip"}}, header="route"))
TIME = Ratio(3.0)
# The model card's world-model table (benchmarks/world_model_quality.py) and its code-space sentences.
WORLD_MODEL_FIGURES = (
    Table({"MAE": {0: "mae"}}, {"world model, greedy, the true plan": "wm_mae",
                                "world model, greedy, a stand-still plan": "wm_mae_standstill_plan",
                                "world model, each code from the true codes before it (teacher forced)":
                                    "wm_mae_teacher_forced",
                                "copy the current frame": "copy_mae",
                                "copy the current frame's codes (through the image tokenizer)": "copy_codes_mae",
                                "the true frame through the image tokenizer (the floor)": "reconstruction_mae"}),
    Prose(rf"greedy decoding gets {value('code_accuracy')} % of them right, teacher forcing "
          rf"{value('code_accuracy_teacher_forced')} % and copying the current frame's codes "
          rf"{value('code_accuracy_copy')} %"),
    Prose(rf"another scene's history frames in its context, teacher forcing still gets "
          rf"{value('code_accuracy_teacher_forced_other_scene')} %"))


def carla_file_figure(agent: str, split: str) -> Figure:
    return Figure(f"carla-{agent}-{split}", "~3-6 min (the same runs as carla-routes)",
                  (Place(f"docs/results/carla_routes/{agent}_routes_{split}.md", "routes", ROUTE_TABLE),),
                  measure_carla_file(agent, split), needs_carla=True, artifacts=carla_file_artifacts(agent, split))


FIGURES = (
    Figure("main-job", "~1 min (DriveVLA-W0 on 50 navtest tokens)",
           (Place("README.md", "main-job", (Table({"tokens": {0: "tokens"}, "PDMS": {0: "pdms"}}, FAMILY_ROWS),)),),
           measure_main_job),
    Figure("navtest-agents", "~8 min (5 agents on 500 navtest tokens; DriveVLA-W0 is most of it)",
           (Place("README.md", "navtest-agents",
                  (Table(NAVTEST_COLUMN_HEADERS, {"DriveVLA-W0 tiny (shipped)": "drivevla_w0", **NAVTEST_ROWS}),)),
            Place(CARD, "navtest-agents",
                  (Table(NAVTEST_COLUMN_HEADERS, {"DriveVLA-W0 tiny (this)": "drivevla_w0",
                                                  **{k: v for k, v in NAVTEST_ROWS.items() if v != "human"}}),))),
           measure_navtest_agents),
    Figure("navtest-families", "~5 min (DriveVLA-W0 on 500 navtest tokens; shared with navtest-agents)",
           (Place(CARD, "navtest-families",
                  (Prose(rf"Per family: straight {value('straight')}, curve {value('curve')}, intersection "
                         rf"{value('intersection')}, T-junction {value('t_junction')}, merge {value('merge')}"),)),),
           measure_navtest_families),
    Figure("navtest-100", "~1 min (3 agents on 100 navtest tokens; shared with navtest-agents)",
           (Place(RESULTS, "navtest-100",
                  (Prose(rf"constant velocity scores {value('constant_velocity')}"),
                   Prose(rf"NAVSIM's PDM-Closed {value('pdm_closed')}"),
                   Prose(rf"the lane-following planner {value('pdm_lane_following')}"))),),
           measure_navtest_100),
    Figure("routes-agents", "~3 min (4 agents on the 50 builtin:routes routes)",
           (Place("README.md", "routes-agents",
                  (Table({"driving score": {0: "ds"}, "route completion": {0: "rc"}, "infraction penalty": {0: "ip"}},
                         {"PDM-Closed, NAVSIM's": "pdm_closed", "lane-following PDM": "pdm_lane_following",
                          "constant velocity": "constant_velocity",
                          "DriveVLA-W0 tiny, from its own camera frames": "drivevla_w0"}),)),),
           measure_routes_agents),
    Figure("routes-drivevla", "~1 min (DriveVLA-W0 on builtin:routes; shared with routes-agents)",
           (Place("README.md", "routes-drivevla",
                  (Prose(rf"scores {value('straight')} on straight roads and {value('intersection')} at intersections, "
                         rf"in {value('seconds')} s on 2 cores"),)),
            Place(CARD, "routes-drivevla",
                  (Prose(rf"Driving score {value('ds')}, route completion {value('rc')}, infraction penalty {value('ip')}"),
                   Prose(rf"Per family: straight {value('straight')}, curve {value('curve')}, intersection "
                         rf"{value('intersection')}, T-junction {value('t_junction')}, merge {value('merge')}; "
                         rf"{value('deviated')} of the {value('routes')} routes end early")))),
           measure_routes_drivevla, tolerances={"seconds": TIME}),
    Figure("carla-routes", "~10-15 min (2 planners on the 30 fixture CARLA routes)",
           (Place("README.md", "carla-routes",
                  (Table({"routes": {-1: "routes"}, "completed": {-1: "completed"}, "driving score": {-1: "ds"},
                          "route completion": {-1: "rc"}, "infraction penalty": {-1: "ip"}},
                         {"lane-following PDM, routes_devtest.xml (Town01, 03, 04, 06)": "lf-devtest",
                          "lane-following PDM, routes_testing.xml (Town02, 04, 05)": "lf-testing",
                          "NAVSIM's PDM-Closed, routes_devtest.xml": "pc-devtest",
                          "NAVSIM's PDM-Closed, routes_testing.xml": "pc-testing"}),
                   Prose(rf"now {value('min_km')} to {value('max_km')} km long"),
                   Prose(rf"; {value('total_km')} km in all"),
                   Prose(rf"scores Town02 {value('lf_town02')}, Town04 {value('lf_town04')}, Town05 {value('lf_town05')} "
                         "on routes_testing.xml"),
                   Prose(rf"timed out at {value('lf_timeout_pct')} %"),
                   Prose(rf"Over all {value('lf_routes')} routes its infractions were {value('lf_min_speed')} min-speed, "
                         rf"{value('lf_outside')} outside route lanes, {value('lf_collisions')} vehicle collisions and "
                         rf"{value('lf_red')} red lights"),
                   Prose(rf"took {value('lf_minutes')} minutes on 2 cores"),
                   Prose(rf"gets blocked on {value('pc_blocked')} of the {value('pc_routes')} routes \(Town02 "
                         rf"{value('pc_town02')}, Town04 {value('pc_town04')}, Town05 {value('pc_town05')};"),
                   Prose(rf"\({value('pc_red')} red lights run\)"))),),
           measure_carla_routes, tolerances={"lf_minutes": TIME}, needs_carla=True),
    *(carla_file_figure(agent, split) for agent in ("pdm_closed", "pdm_lane_following") for split in CARLA_FILES),
    Figure("town-load", "~20 s (benchmarks/town_load.py)",
           (Place("README.md", "town-load",
                  (Table({"load": {0: "seconds"}, "lanes": {0: "lanes"}, "of which connectors": {0: "connectors"},
                          "traffic lights": {0: "lights"}, "stop signs": {0: "stop_signs"}, "lane km": {0: "lane_km"}},
                         {f"Town{n}": f"Town{n}" for n in ("01", "02", "03", "04", "05", "06", "07", "10HD")}),)),),
           measure_town_load, tolerances={"*.seconds": TIME}, needs_carla=True),
    Figure("baseline-scores", "~40 s (benchmarks/baseline_scores.py, v1.1 and v2.2)",
           (Place("README.md", "baseline-scores",
                  (Prose(rf"`--version v2.2`; {value('seconds')} s on 2 cores"),
                   Table({header: {0: f"{agent}.v1.1", 1: f"{agent}.v2.2"} for header, agent in BASELINE_COLUMNS.items()},
                         BASELINE_FAMILIES))),),
           measure_baseline_scores, tolerances={"seconds": TIME}),
    Figure("checkpoint", "~5 s (loads the shipped checkpoint)",
           (Place(CARD, "checkpoint-size", (Prose(rf"{value('params')}M parameters"),), provenance=False),
            Place(CARD, "checkpoint-file", (Prose(rf"sha256 begins `{text_value('sha', '[0-9a-f]+')}`"),),
                  provenance=False)),
           measure_checkpoint, tolerances={"sha": Prefix()}),
    Figure("world-model", "~1 min (benchmarks/world_model_quality.py on the shipped checkpoint)",
           (Place(CARD, "world-model", WORLD_MODEL_FIGURES),), measure_world_model),
    Figure("collect-hash", "~4-7 min (w0sim collect --scenes 4000, all workers)",
           (Place(CARD, "collect-hash", (Prose(rf"content hash `{text_value('hash', '[0-9a-f]+')}…`"),)),
            Place(RESULTS, "collect-hash", (Prose(rf"content hash `{text_value('hash', '[0-9a-f]+')}…`"),))),
           measure_collect_hash, tolerances={"hash": Prefix()}),
    Figure("scaling-csv", "instant (reads docs/results/scaling_tiny.csv)",
           (Place(RESULTS, "scaling", (SCALING_TABLE,), provenance=False),
            Place("README.md", "scaling", (SCALING_PROSE,), provenance=False),
            Place(CARD, "scaling", (SCALING_PROSE,), provenance=False)),
           measure_scaling_csv),
    Figure("scaling", "~6 h (collect, the image tokenizer, then 12 trainings, 4 and 2 epochs at 500, 2,000 and 8,000 "
           "samples, 2 seeds, and their evaluations)",
           (Place(RESULTS, "scaling", (SCALING_TABLE,)), Place("README.md", "scaling", (SCALING_PROSE,)),
            Place(CARD, "scaling", (SCALING_PROSE,))),
           measure_scaling, tolerances={"*": Absolute(0.05)},
           slow="about six hours of training; a re-run is compared within ±0.05 PDMS, not to the printed digit",
           artifacts=lambda ctx: {"docs/results/scaling_tiny.csv": ctx.out / "scaling" / "scaling.csv",
                                  "docs/results/scaling_tiny.png": ctx.out / "scaling" / "scaling.png"}),
    Figure("training", "~1 h (collect, then stages 0-2 of the tiny checkpoint on two threads)",
           (Place(CARD, "training-time", (Prose(rf"{value('seconds')} s \({value('minutes')} min\)"),), provenance=False),),
           measure_training, tolerances={"*": TIME},
           slow="an hour of training; only its wall time is published, compared within x3"),
)

NOT_CHECKED = (
    ("README.md, Benchmarks", "throughput and latency (benchmarks/sim_throughput.py, scoring_throughput.py, "
     "policy_latency.py, tracker_latency.py, route_densify.py; eval tokens/s)",
     "wall-clock figures that vary by up to 2x between runs of the shared 2-core machine; re-run the benchmarks by hand"),
    ("README.md, Reference suite; CARLA's route planner; the Leaderboard's statistics code",
     "agreement with NAVSIM's and CARLA's own code, and their timings",
     "need the reference venvs (tests/reference, pytest -m navsim / carla_reference), which are tests with their own verdict"),
    ("README.md, NAVSIM logs and nuPlan maps", "export round trip to 1.1e-12 / 2.8e-9",
     "a bound checked token by token by the reference suite's export, not a published score"),
    ("README.md main job; model card and docs/results commands", "'about a minute', '~7 min', '3 min' on 2 cores",
     "rough wall-clock guidance, not measurements"),
    ("docs/results/scaling_tiny.csv", "train_minutes", "stages 1-2 wall time summed over resumed processes (the "
     "training record's), beside other processes; runs trained before the record kept it: reconstructed from logs"),
    ("README.md, model card, docs/results", "figures marked before / was / first run, in brackets",
     "history: what earlier code measured"),
)
