"""Fuzzing the command line: garbage and odd arguments for the cheap commands (`eval` with at most one scene,
`scenes generate`, `scenes show`, `score`, `demo`'s checks, `agents`, and argument lists of random words). Every
answer is exit 0, 1 or 2 with a message, never a traceback (the exception CliRunner caught is a SystemExit or none)
and never an "unexpected" error (an exception the command did not expect: a w0sim bug)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from w0sim.cli import UNEXPECTED, app

runner = CliRunner()

# Not `demo` nor `experiment scaling`: they run whole without options (an episode; a collection and trainings).
COMMANDS = ["eval", "score", "scenes", "agents", "render", "collect", "train", "experiment", "generate", "show", "check",
            "export-navsim", "--help"]
OPTIONS = ["--agent", "--split", "--out", "--limit", "--workers", "--pdm-version", "--seed", "--count", "--scene",
           "--trajectories", "--version", "--family", "--traffic", "--families", "--repetitions", "--closed-loop", "-",
           "--", "--=", "--limit=-1", "--workers=0"]
words = st.one_of(st.text(max_size=12), st.sampled_from(OPTIONS), st.integers(-2**70, 2**70).map(str))
odd_ints = st.one_of(st.integers(-3, 3), st.sampled_from([2**31, 2**63, 2**64, -2**63, 10**30]), st.text(max_size=6))


def check(result) -> None:
    """Exit 0/1/2 with a message; no traceback; no unexpected error."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert result.output.strip(), "an error without a message"
    assert UNEXPECTED not in result.output, result.output


def invoke(args) -> None:
    check(runner.invoke(app, [str(a) for a in args]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A scene file, a file of garbage, a folder of garbage scene files, a plain file to pass as --out."""
    from scenarios.generator import generate_scene
    from scenarios.scene import save_scene

    root = tmp_path_factory.mktemp("fuzz_cli")
    scene = root / "scene.npz"
    save_scene(generate_scene("straight", 1), scene)
    garbage = root / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really")
    folder = root / "garbage_scenes"
    folder.mkdir()
    (folder / "a.npz").write_bytes(b"\x00" * 10)
    plain = root / "plain_file"
    plain.write_text("not a folder")
    return {"root": root, "scene": scene, "garbage": garbage, "folder": folder, "plain": plain}


@settings(max_examples=60)
@given(first=st.sampled_from(COMMANDS), rest=st.lists(words, max_size=5))
def test_random_words(first, rest):
    """A command and random words: usage errors (required options are never all there with valid values)."""
    if first == "experiment" and rest[:1] == ["scaling"]:
        rest = rest[1:]
    invoke([first, *rest])


EVAL_DEFAULTS = {"--agent": "constant_velocity", "--split": "builtin:navtest", "--limit": 1, "--pdm-version": "v1.1",
                 "--workers": 1, "--repetitions": 1, "--seed": 0, "--device": "cpu", "--dtype": "float32",
                 "--videos": 0, "--out": "a"}
EVAL_CHANGES = {
    "--agent": st.one_of(st.sampled_from(["pdm_closed", "nope", "os:path", "agents.base:Agent", "", ":",
                                          "agents.constant_velocity:Missing", "drivevla_w0"]), st.text(max_size=8)),
    "--split": st.sampled_from(["builtin:routes", "builtin:nope", "carla:missing.xml", "navsim:x", "FOLDER",
                                "GARBAGE", "PLAIN", "", "builtin:"]),
    "--limit": st.sampled_from([-1, 0, "", "x", "1.5"]),
    "--pdm-version": st.sampled_from(["v2.2", "v3", "", "V1.1"]),
    "--workers": odd_ints,
    "--repetitions": st.sampled_from([-1, 0, 2, "two"]),
    "--seed": odd_ints,
    "--device": st.sampled_from(["cuda", "cuda:7", "tpu", ""]),
    "--dtype": st.sampled_from(["bfloat16", "int8", ""]),
    "--videos": st.sampled_from([-1, 1, "many"]),
    "--out": st.sampled_from(["b", "PLAIN", "sub/dir", ""]),
    "--closed-loop": st.sampled_from(["--closed-loop", "--one-shot"]),
    "--checkpoint": st.sampled_from(["PLAIN", "FOLDER", "missing"]),
    "--scene-filter": st.sampled_from(["PLAIN", "missing.yaml"]),
}


@settings(max_examples=30)
@given(data=st.data())
def test_eval(files, data):
    """A valid one-scene run with one to three of its options changed (to another valid value or to garbage); at
    most two scenes (routes) run: --limit is 1 or refused. Output folders are shared between examples, so resumes
    with other settings are tried too."""
    names = {"FOLDER": files["folder"], "GARBAGE": files["garbage"], "PLAIN": files["plain"]}
    options = dict(EVAL_DEFAULTS)
    for option in data.draw(st.lists(st.sampled_from(sorted(EVAL_CHANGES)), min_size=1, max_size=3, unique=True)):
        options[option] = data.draw(EVAL_CHANGES[option], label=option)
    out = options.pop("--out")
    options["--out"] = names.get(out, files["root"] / "eval" / out)
    args = ["eval"]
    for option, value in options.items():
        if option == "--closed-loop":
            args.append(value)
        else:
            args += [option, names.get(value, value) if isinstance(value, str) else value]
    invoke(args)


@settings(max_examples=20)
@given(data=st.data())
def test_scenes_generate(files, data):
    """One generated scene at most, with one or two options changed."""
    options = {"--count": 1, "--seed": 0, "--families": "straight", "--out": "new"}
    changes = {"--count": st.sampled_from([-1, 0, "", "x", 2**64]), "--seed": odd_ints,
               "--families": st.one_of(st.sampled_from(["straight,bogus", ",", "", " merge ", "merge,merge"]),
                                       st.text(max_size=8)),
               "--out": st.sampled_from(["PLAIN", "", "other"])}
    for option in data.draw(st.lists(st.sampled_from(sorted(changes)), min_size=1, max_size=2, unique=True)):
        options[option] = data.draw(changes[option], label=option)
    out = options.pop("--out")
    target = files["plain"] if out == "PLAIN" else files["root"] / "generated" / out
    invoke(["scenes", "generate", *[str(x) for kv in options.items() for x in kv], "--out", target])


@settings(max_examples=15)
@given(content=st.one_of(st.binary(max_size=64), st.just(b"")), png=st.sampled_from([None, "x.png", "missing/x.png"]))
def test_scenes_show(files, content, png):
    path = files["root"] / "shown.npz"
    path.write_bytes(content)
    invoke(["scenes", "show", path, *(["--png", files["root"] / png] if png else [])])


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(-10**6, 10**6),
                                     st.text(max_size=5)),
                           lambda inner: st.one_of(st.lists(inner, max_size=9),
                                                   st.dictionaries(st.sampled_from(["name", "poses", "interval", "x"]),
                                                                   inner, max_size=4)),
                           max_leaves=30)
pose_lists = st.lists(st.lists(st.one_of(st.floats(-1e3, 1e3), st.sampled_from([float("nan"), float("inf"), 1e300])),
                               min_size=2, max_size=4), max_size=10)


@settings(max_examples=25)
@given(payload=st.one_of(json_values,
                         st.builds(lambda poses, interval: [{"name": "t", "poses": poses, "interval": interval}],
                                   pose_lists, st.one_of(st.floats(-1, 1), st.just(0.5)))),
       version=st.sampled_from(["v1.1", "v2.2", "v3"]), scene=st.sampled_from(["scene", "garbage", "missing"]))
def test_score(files, payload, version, scene):
    trajectories = files["root"] / "trajectories.json"
    trajectories.write_text(json.dumps(payload))
    scene_path = files.get(scene, files["root"] / "missing.npz")
    invoke(["score", "--scene", scene_path, "--trajectories", trajectories, "--version", version,
            "--out", files["root"] / "scores.csv"])


@settings(max_examples=15)
@given(family=st.one_of(st.sampled_from(["bogus", "", "Straight", "straight,curve"]), st.text(max_size=6)),
       traffic=st.sampled_from(["reactive", "replay", "bogus", ""]), seed=odd_ints)
def test_demo_arguments(files, family, traffic, seed):
    """Invalid families only (a valid demo drives a whole episode and writes its video)."""
    if family in ("straight", "curve", "intersection", "t_junction", "merge"):
        family = family + "!"
    invoke(["demo", "--family", family, "--traffic", traffic, "--seed", seed, "--out", files["root"] / "demo"])
