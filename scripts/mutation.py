"""Mutation testing with mutmut on a seeded sample of each package's mutants; prints the survival table as JSON.

mutmut (configured in pyproject.toml, [tool.mutmut]) generates the mutants and records which tests reach which
function. Every mutant of the seven core packages (about 39,000) would take days on two cores, so this script
tests a seeded random sample per package, each mutant against the tests that reach its function, and reports the
survival rate with a 95 % interval. `--sample 0` tests every mutant (the same verdicts `mutmut run` would give).

    .venv/bin/python scripts/mutation.py --packages metrics sim --sample 150

Work happens in a copy of the working tree (out/mutation/tree); verdicts are appended to out/mutation/verdicts.jsonl
as they come, so an interrupted run resumes where it stopped (a changed tree starts afresh). Mutants listed in
scripts/mutation_equivalents.txt (name, then why it cannot change behaviour) are left out of the rates.
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
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("metrics", "sim", "scenarios", "agents", "policies", "training", "w0sim")
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.txt"

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


def mutant_names(tree: Path) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {package: [] for package in PACKAGES}
    for meta in sorted((tree / "mutants").glob("*/**/*.py.meta")):
        package = meta.relative_to(tree / "mutants").parts[0]
        if package in names:
            names[package] += sorted(json.loads(meta.read_text())["exit_code_by_key"])
    return names


def read_equivalents() -> dict[str, str]:
    equivalents = {}
    for line in EQUIVALENTS.read_text().splitlines() if EQUIVALENTS.exists() else []:
        name, _, why = line.partition(" ")
        if name and not name.startswith("#"):
            if not why.strip():
                raise SystemExit(f"{EQUIVALENTS}: {name} is listed as equivalent without a reason")
            equivalents[name] = why.strip()
    return equivalents


def run_mutant(tree: Path, name: str, tests: list[str], durations: dict[str, float], timeout_s: float) -> dict:
    """Run the tests that reach the mutant's function, fastest first, stopping at the first failure."""
    if not tests:
        return {"mutant": name, "status": "no tests", "seconds": 0.0}
    tests = sorted(tests, key=lambda test: durations.get(test, 0.0))
    env = {**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONPATH": str(tree / "mutants"), "PY_IGNORE_IMPORTMISMATCH": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:randomly",
               "--rootdir=.", *tests]
    start = time.monotonic()
    try:
        code = subprocess.run(command, cwd=tree / "mutants", env=env, capture_output=True, timeout=timeout_s).returncode
        status = {0: "survived", 1: "killed", 3: "killed"}.get(code, f"error (pytest exit {code})")
    except subprocess.TimeoutExpired:
        status = "timeout"
    return {"mutant": name, "status": status, "seconds": round(time.monotonic() - start, 1)}


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
    parser.add_argument("--timeout-factor", type=float, default=10.0,
                        help="a mutant times out after this many times its tests' unmutated duration, plus 60 s")
    args = parser.parse_args()

    tree = args.workdir / "tree"
    verdicts_path = args.workdir / "verdicts.jsonl"
    fresh = args.workdir / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    tree_hash = copy_tree(fresh)
    if (args.workdir / "tree.sha256").is_file() and (args.workdir / "tree.sha256").read_text() == tree_hash:
        shutil.rmtree(fresh)  # same code and tests: keep the mutants, the stats and the verdicts so far
    else:
        shutil.rmtree(tree, ignore_errors=True)
        fresh.rename(tree)
        verdicts_path.unlink(missing_ok=True)
        (args.workdir / "tree.sha256").write_text(tree_hash)

    env = {**os.environ, "W0SIM_MUTATION_WORKERS": str(args.workers),
           "W0SIM_SHARED": os.environ.get("W0SIM_SHARED", str(ROOT.parent / "shared"))}
    os.environ.update(env)
    print("generating mutants and recording which tests reach which function ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", PREPARE], cwd=tree, env=env, check=True, stdout=sys.stderr)
    stats = json.loads((tree / "mutants" / "mutmut-stats.json").read_text())
    tests_by_function, durations = stats["tests_by_mangled_function_name"], stats["duration_by_test"]

    names, equivalents = mutant_names(tree), read_equivalents()
    done = {}
    if verdicts_path.exists():
        done = {v["mutant"]: v for v in map(json.loads, verdicts_path.read_text().splitlines())}
    chosen = {}
    for package in args.packages:
        candidates = [n for n in names[package] if n not in equivalents]
        count = len(candidates) if args.sample <= 0 else min(args.sample, len(candidates))
        chosen[package] = random.Random(f"{args.seed}:{package}").sample(candidates, count)

    todo = [name for package in args.packages for name in chosen[package] if name not in done]
    print(f"{len(todo)} mutants to test ({len(done)} already tested)", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(args.workers) as pool, verdicts_path.open("a") as verdicts:
        futures = []
        for name in todo:
            tests = sorted(tests_by_function.get(name.partition("__mutmut_")[0], ()))
            timeout_s = 60 + args.timeout_factor * sum(durations.get(t, 0.0) for t in tests)
            futures.append(pool.submit(run_mutant, tree, name, tests, durations, timeout_s))
        for index, future in enumerate(as_completed(futures), 1):
            verdict = future.result()
            done[verdict["mutant"]] = verdict
            verdicts.write(json.dumps(verdict) + "\n")
            verdicts.flush()
            print(f"[{index}/{len(todo)}] {verdict['status']:>9} {verdict['seconds']:6.1f}s {verdict['mutant']}",
                  file=sys.stderr, flush=True)

    table = {}
    for package in args.packages:
        statuses = [done[name]["status"] for name in chosen[package]]
        killed = sum(s in ("killed", "timeout") for s in statuses)
        survivors = sorted(name for name in chosen[package] if done[name]["status"] not in ("killed", "timeout"))
        table[package] = {
            "mutants": len(names[package]), "equivalent": sum(n.startswith(package + ".") for n in equivalents),
            "tested": len(statuses), "killed": killed, "survived": len(survivors),
            "survival_rate": round(len(survivors) / max(1, len(statuses)), 3),
            "survival_rate_95ci": wilson_interval(len(survivors), len(statuses)),
            "survivors": {name: done[name]["status"] for name in survivors},
        }
    print(json.dumps({"seed": args.seed, "sample": args.sample, "tree_sha256": tree_hash, "packages": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
