"""Mutation testing with mutmut on a seeded sample of each package's mutants; prints the survival table as JSON.

mutmut (configured in pyproject.toml, [tool.mutmut]) generates the mutants, records which tests reach which function
and runs each mutant against those tests. All mutants of the seven core packages (about 39,000) would take days on
two cores, so this script has mutmut test a seeded random sample per package and reports the survival rate with a
95 % interval. `--sample 0` tests every mutant (what `mutmut run` alone would do).

    .venv/bin/python scripts/mutation.py --packages metrics sim --sample 60

Work happens in a copy of the working tree (out/mutation/tree). mutmut keeps its verdicts there, so a rerun on the
same tree (code and tests unchanged) tests only what is left; a changed tree starts afresh. `--retest-survivors`
copies the current tests (and every other file but the packages' sources) into the kept tree and tests the
sample's survivors again, on the kept tree's code (for tests added since).
mutmut only sees tests reach code in the test's own process; a mutant of code that runs only in pool workers or CLI
subprocesses ("no tests" to mutmut) is run against its package's whole test folder instead. Mutants listed in
scripts/mutation_equivalents.txt (name, then why no input can tell it from the original) are left out of the rates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("metrics", "sim", "scenarios", "agents", "policies", "training", "w0sim")
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.txt"
SETTLED = ("killed", "timeout")  # mutmut's verdicts of a mutant some test noticed (an endless loop times out)
# mutmut's verdicts that the package's tests settle: no test reached the mutant in-process, the tests mutmut ran
# passed, or its test process crashed (mutmut reports "segfault" for pure-Python mutants too: not a verdict)
UNSETTLED = ("no tests", "survived", "segfault")
PACKAGE_TESTS = {"sim": ("tests/sim", "tests/envs")}  # the test folders of a package, where not tests/<package>

# Generation and the stats run (which tests reach which function) through mutmut's own steps, as `mutmut run` does
# before it tests mutants.
PREPARE = """
import os
from mutmut import __main__ as mm
from mutmut.workers.isolation import get_mutant_runner
mm.set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
mm.copy_src_dir(); mm.copy_also_copy_files(); mm.setup_source_paths(); mm.store_lines_covered_by_tests()
mm.create_mutants(int(os.environ["W0SIM_MUTATION_WORKERS"]))
mm.collect_or_load_stats(get_mutant_runner(1))
"""


def copy_tree(tree: Path) -> str:
    """Copy the tracked and untracked-but-not-ignored files into `tree`; return their content hash."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    digest = hashlib.sha256()
    for name in sorted(f for f in files if f and (ROOT / f).is_file()):
        data = (ROOT / name).read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return digest.hexdigest()


def mutmut_records(tree: Path) -> dict[str, list[tuple[str, str | None]]]:
    """Per package, each mutant's name and mutmut's verdict (None while untested), from mutants/**/*.py.meta."""
    from mutmut.stats import status_by_exit_code

    records: dict[str, list[tuple[str, str | None]]] = {package: [] for package in PACKAGES}
    for meta in sorted((tree / "mutants").glob("*/**/*.py.meta")):
        package = meta.relative_to(tree / "mutants").parts[0]
        if package in records:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            records[package] += [(name, None if codes[name] is None else status_by_exit_code[codes[name]])
                                 for name in sorted(codes)]
    return records


def verdicts(tree: Path) -> dict[str, str]:
    """mutmut's verdict per tested mutant."""
    return {name: status for records in mutmut_records(tree).values() for name, status in records if status is not None}


def read_equivalents() -> dict[str, str]:
    equivalents = {}
    for line in EQUIVALENTS.read_text().splitlines() if EQUIVALENTS.exists() else []:
        name, _, why = line.partition(" ")
        if name and not name.startswith("#"):
            if not why.strip():
                raise SystemExit(f"{EQUIVALENTS}: {name} is listed as equivalent without a reason")
            equivalents[name] = why.strip()
    return equivalents


def sync_tree(workdir: Path, retest_survivors: bool) -> None:
    """Bring workdir/tree up to the working tree: kept as it is when nothing changed, afresh when anything did; with
    `retest_survivors`, every file but the mutated packages' sources (the tests and what they import or read)."""
    tree = workdir / "tree"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    fresh = workdir / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    tree_hash = copy_tree(fresh)
    if retest_survivors:
        if not (tree / "mutants").is_dir():
            raise SystemExit(f"--retest-survivors needs a kept tree in {tree}: run without it first")
        for entry in fresh.iterdir():
            if entry.name in PACKAGES:
                continue
            for target in (tree / entry.name, tree / "mutants" / entry.name):
                if target.parent == tree / "mutants" and not target.exists():
                    continue  # mutmut copies only what its configuration names
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
        shutil.rmtree(fresh)
        (workdir / "package_tests.json").unlink(missing_ok=True)  # the package-test verdicts were of old tests
        (workdir / "tests.commit").write_text(head)
    elif (workdir / "tree.sha256").is_file() and (workdir / "tree.sha256").read_text() == tree_hash:
        shutil.rmtree(fresh)  # same code and tests: keep the mutants, the stats and the verdicts so far
    else:
        shutil.rmtree(tree, ignore_errors=True)
        fresh.rename(tree)
        (workdir / "tree.sha256").write_text(tree_hash)
        (workdir / "package_tests.json").unlink(missing_ok=True)
        for provenance in ("code.commit", "tests.commit"):
            (workdir / provenance).write_text(head)


def run_package_tests(tree: Path, package: str, name: str, env: dict) -> str:
    """A mutant against its package's whole test folders, stopping at the first failure. For mutants no test
    reaches in-process (code run only in pool workers or CLI subprocesses, which mutmut's stats cannot see), and
    for those that survive the tests mutmut ran: mutmut credits a module-scoped fixture's calls to the first test
    that uses it, so the later tests of that fixture are never run on the mutant."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
               *PACKAGE_TESTS.get(package, (f"tests/{package}",))]
    done = subprocess.run(command, cwd=tree / "mutants", capture_output=True, timeout=3600,
                          env={**env, "MUTANT_UNDER_TEST": name, "PYTHONPATH": str(tree / "mutants")})
    return "killed" if done.returncode in (1, 3) else "survived" if done.returncode == 0 else f"error {done.returncode}"


def wilson_interval(survived: int, total: int) -> list[float]:
    if total == 0:
        return [0.0, 1.0]
    p, z = survived / total, 1.96
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=PACKAGES)
    parser.add_argument("--sample", type=int, default=150, help="mutants per package (0: all of them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "mutation")
    parser.add_argument("--retest-survivors", action="store_true",
                        help="keep the tree's code and mutants, take the current tests, test the survivors again")
    args = parser.parse_args()

    tree = args.workdir / "tree"
    sync_tree(args.workdir, args.retest_survivors)
    env = {**os.environ, "W0SIM_MUTATION_WORKERS": str(args.workers),
           "W0SIM_SHARED": os.environ.get("W0SIM_SHARED", str(ROOT.parent / "shared"))}
    print("generating mutants and recording which tests reach which function ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", PREPARE], cwd=tree, env=env, check=True, stdout=sys.stderr)

    names = {package: [name for name, _ in records] for package, records in mutmut_records(tree).items()}
    equivalents = read_equivalents()
    chosen = {package: names[package] if args.sample <= 0 else
              random.Random(f"{args.seed}:{package}").sample(names[package], min(args.sample, len(names[package])))
              for package in args.packages}
    done = verdicts(tree)
    todo = [name for package in args.packages for name in chosen[package] if name not in equivalents and
            (name not in done or args.retest_survivors and done[name] not in SETTLED)]
    print(f"{len(todo)} mutants to test", file=sys.stderr, flush=True)
    if todo:
        # mutmut runs each mutant in a process forked from one that has imported the suite, against the tests that
        # reach its function; PYTHONPATH makes the suite's own subprocesses (CLI tests) import the mutated tree too.
        subprocess.run([str(Path(sys.executable).with_name("mutmut")), "run", "--max-children", str(args.workers), *todo],
                       cwd=tree, env={**env, "PYTHONPATH": str(tree / "mutants")}, stdout=sys.stderr)
        done = verdicts(tree)

    # Unsettled mutants get their package's tests (verdicts kept in the work folder).
    fallback_path = args.workdir / "package_tests.json"
    fallback = json.loads(fallback_path.read_text()) if fallback_path.exists() else {}
    unsettled = [name for package in args.packages for name in chosen[package]
                 if done.get(name) in UNSETTLED and name not in equivalents and name not in fallback]
    for index, name in enumerate(unsettled, 1):
        fallback[name] = run_package_tests(tree, name.split(".")[0], name, env)
        fallback_path.write_text(json.dumps(fallback, indent=1))
        print(f"[{index}/{len(unsettled)}] {done[name]} in mutmut's run; its package's tests: {fallback[name]} {name}",
              file=sys.stderr, flush=True)
    for name, verdict in fallback.items():
        if verdict == "killed" and done.get(name) in UNSETTLED:
            done[name] = "killed"

    table = {}
    for package in args.packages:
        tested = [name for name in chosen[package] if name not in equivalents]
        survivors = sorted(name for name in tested if done.get(name, "not checked") not in SETTLED)
        table[package] = {
            "mutants": len(names[package]), "sampled": len(chosen[package]),
            "equivalent": len(chosen[package]) - len(tested), "tested": len(tested),
            "killed": len(tested) - len(survivors), "survived": len(survivors),
            "survival_rate": round(len(survivors) / max(1, len(tested)), 3),
            "survival_rate_95ci": wilson_interval(len(survivors), len(tested)),
            "survivors": {name: done.get(name, "not checked") for name in survivors},
        }
    provenance = {name: (args.workdir / f"{name}.commit").read_text() for name in ("code", "tests")}
    print(json.dumps({"seed": args.seed, "sample": args.sample, **provenance, "packages": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
