"""Re-measure every published figure of README.md, the model card and docs/results, and fail when one has moved.

    .venv/bin/python scripts/check_figures.py                 # every figure but the slow ones; exit 1 on a difference
    .venv/bin/python scripts/check_figures.py --list          # the figures, their cost, and what is not checked and why
    .venv/bin/python scripts/check_figures.py --only main-job navtest-agents
    .venv/bin/python scripts/check_figures.py --write         # rewrite moved figures (old value kept) and provenance

Each published figure sits between `<!-- figure: NAME -->` and `<!-- /figure -->` in its file. The script reads the
numbers there, re-measures them with the project's own CLI and benchmarks into a temporary folder (never into the
repository), and prints one row per value: figure, where, published, measured, tolerance, ok. A score compares to its
printed precision (0.779 holds for a measured value within 0.0005 of it); a wall-clock time within a stated ratio;
a hash or a status must be the same. `--write` puts each moved value's new figure in place with the old one beside
it, "0.930 (was 0.912)", and a provenance line (commit, commands, data hashes, date) at the end of each block.
Run it before each commit that changes a published figure. Figures that take hours (the data-scaling experiment,
training the shipped checkpoint) are measured only with `--slow` (or when named with `--only`).
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: the parts are in scripts/figures/

from scripts.figures.measures import CARLA, Context, MeasureError  # noqa: E402
from scripts.figures.published import PROVENANCE, WAS, FigureError, Place, Published, block_span, read_place  # noqa: E402
from scripts.figures.registry import FIGURES, NOT_CHECKED, Figure  # noqa: E402
from scripts.figures.tolerances import Prefix, Ratio, decimals_of, format_like  # noqa: E402


@dataclass
class Row:
    """One value compared: figure, where, published, measured, tolerance, verdict."""

    figure: str
    where: str
    key: str
    published: str
    measured: str
    tolerance: str
    ok: bool | None
    note: str = ""


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def shown_measured(published: str, measured: float | str, tolerance) -> str:
    """The measured value for the table: as printed, a score with six significant digits so that a near miss shows."""
    if isinstance(measured, str) or isinstance(tolerance, Prefix):
        return format_like(published, measured, tolerance)
    if not isinstance(tolerance, Ratio) and decimals_of(published) > 0:
        return f"{measured:.6g}"
    return format_like(published, measured, tolerance)


def compare(figure: Figure, place: Place, text: str, values: list[Published], measured: dict) -> list[Row]:
    """A row per published value of `place`, judged against `measured`."""
    rows = []
    for value_ in values:
        where = f"{place.file}:{line_of(text, value_.start)}"
        tolerance = figure.tolerance(value_.key, value_.text)
        if value_.key not in measured:
            rows.append(Row(figure.name, where, value_.key, value_.text, "-", tolerance.describe(value_.text), False,
                            "not measured"))
            continue
        got = measured[value_.key]
        ok = tolerance.ok(value_.text, got)
        rows.append(Row(figure.name, where, value_.key, value_.text, shown_measured(value_.text, got, tolerance),
                        tolerance.describe(value_.text), ok))
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("figure", "where", "value", "published", "measured", "tolerance", "ok")
    cells = [header] + [(r.figure, r.where, r.key, r.published, r.measured, r.tolerance, verdict(r)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def verdict(row: Row) -> str:
    if row.ok is None:
        return f"skip: {row.note}"
    return ("ok" if row.ok else "DIFFERS") + (f" ({row.note})" if row.note else "")


def moved(value_: Published, measured: dict, figure: Figure) -> bool:
    return value_.key in measured and not figure.tolerance(value_.key, value_.text).ok(value_.text, measured[value_.key])


def rewrite(text: str, values: list[Published], measured: dict, figure: Figure) -> str:
    """`text` with each value beyond its tolerance replaced by the measured one, the old one beside it. When one time
    of a block has moved, all its times are rewritten that printed differently (one measurement, not a mix of two)."""
    times_moved = any(isinstance(figure.tolerance(v.key, v.text), Ratio) and moved(v, measured, figure) for v in values)
    for value_ in sorted(values, key=lambda v: v.start, reverse=True):
        tolerance = figure.tolerance(value_.key, value_.text)
        refresh = times_moved and isinstance(tolerance, Ratio) and value_.key in measured
        if not moved(value_, measured, figure) and not (refresh and format_like(value_.text, measured[value_.key],
                                                                                  tolerance) != value_.text):
            continue
        text = replace_value(text, value_, format_like(value_.text, measured[value_.key], tolerance))
    return text


def replace_value(text: str, value_: Published, new: str) -> str:
    """`text` with `value_` replaced by `new` and the old value beside it, "new (was old)" (a value inside a code
    span: "`new…` (was `old…`)"), instead of any "(was ...)" already there."""
    start, end = value_.start, value_.end
    line_start = text.rfind("\n", 0, start) + 1
    close = text.find("`", end) if text.count("`", line_start, start) % 2 else -1
    if close < 0:
        annotation = WAS.match(text, end)
        return text[:start] + f"{new} (was {value_.text})" + text[annotation.end() if annotation else end:]
    rest = text[end:close]  # what the code span holds after the value, e.g. "…"
    annotation = WAS.match(text, close + 1)
    return (text[:start] + f"{new}{rest}` (was `{value_.text}{rest}`)"
            + text[annotation.end() if annotation else close + 1:])


def with_provenance(text: str, place: Place, line: str) -> str:
    """`text` with the provenance line of `place`'s block replaced by `line` (added at the block's end if absent)."""
    start, end = block_span(text, place.file, place.block)
    body = PROVENANCE.sub("\n", text[start:end]).rstrip("\n")
    return text[:start] + body + f"\n\n<sub>Provenance: {line}</sub>\n" + text[end:]


def commit_description() -> str:
    """The commit measured, and whether code outside tests and docs differed from it."""
    commit = git("rev-parse", "--short=7", "HEAD")
    changed = git("diff", "--name-only", "HEAD").splitlines()
    code = [p for p in changed if not p.endswith(".md") and not p.startswith(("tests/", "docs/"))]
    return f"`{commit}`" + (f" (plus uncommitted changes to {', '.join(code)})" if code else "")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def provenance_line(figure: Figure, ctx: Context, commit: str) -> str:
    commands = "; ".join(f"`{c}`" for c in dict.fromkeys(ctx.used))
    data = "; ".join(f"{k} `{v}…`" for k, v in ctx.data.items())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = " (OUT: a temporary folder)" if "OUT/" in commands else ""
    return (f"measured {date} at commit {commit} by {commands}{out}" + (f"; {data}" if data else "")
            + f"; check: `.venv/bin/python scripts/check_figures.py --only {figure.name}`")


# ---------------------------------------------------------------- the command


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these figures only (a slow one included when named)")
    parser.add_argument("--list", action="store_true", help="list the figures with their cost, and what is not checked")
    parser.add_argument("--write", action="store_true",
                        help="rewrite moved values (old beside new) and each measured block's provenance line")
    parser.add_argument("--slow", action="store_true", help="also the figures that take hours")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the runs (default: all cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> list[Figure]:
    names = {figure.name for figure in FIGURES}
    unknown = [name for name in args.only or () if name not in names]
    if unknown:
        raise FigureError(f"no figure named {', '.join(unknown)} (--list lists them)")
    if args.only:
        return [figure for figure in FIGURES if figure.name in args.only]
    return [figure for figure in FIGURES if args.slow or figure.slow is None]


def print_list() -> None:
    for figure in FIGURES:
        where = ", ".join(dict.fromkeys(place.file for place in figure.places))
        slow = f"  [not by default: {figure.slow}]" if figure.slow else ""
        carla = "  [needs the CARLA fixtures]" if figure.needs_carla else ""
        print(f"{figure.name:32s} {figure.cost}; in {where}{slow}{carla}")
    print("\nNot checked:")
    for where, what, why in NOT_CHECKED:
        print(f"- {where}: {what}: {why}")


def read_published(figures: list[Figure]) -> None:
    """Read every selected figure's published values before anything is measured (FigureError: one is not there)."""
    for figure in figures:
        for place in figure.places:
            read_place((ROOT / place.file).read_text(), place)


def skip_reason(figure: Figure) -> str | None:
    if figure.needs_carla and not (CARLA / "maps").is_dir():
        return f"no CARLA fixtures at {CARLA} (set W0SIM_SHARED)"
    return None


def check(figure: Figure, ctx: Context) -> tuple[list[Row], dict | None]:
    """Measure `figure` and compare; the measured values (None when skipped or failed) for --write."""
    reason = skip_reason(figure)
    if reason:
        return [Row(figure.name, place.file, "*", "", "", "", None, reason) for place in figure.places], None
    print(f"measuring {figure.name} ({figure.cost})", file=sys.stderr, flush=True)
    ctx.begin()
    try:
        measured = figure.measure(ctx)
    except Exception as error:  # one figure's failure is reported in its rows; the others are still measured
        reason = str(error) if isinstance(error, MeasureError) else f"{type(error).__name__}: {error}"
        return [Row(figure.name, place.file, "*", "", "", "", False, reason) for place in figure.places], None
    rows = []
    for place in figure.places:
        text = (ROOT / place.file).read_text()  # read again: --write may have moved the lines since
        rows += compare(figure, place, text, read_place(text, place), measured)
    return rows, measured


def write_figure(figure: Figure, ctx: Context, measured: dict, commit: str) -> list[str]:
    """Rewrite `figure`'s places (and artifacts when a value moved); the files changed."""
    changed, moved = [], False
    line = provenance_line(figure, ctx, commit)
    for place in figure.places:
        path = ROOT / place.file
        text = path.read_text()
        new = rewrite(text, read_place(text, place), measured, figure)
        moved = moved or new != text
        if place.provenance:
            new = with_provenance(new, place, line)
        if new != text:
            path.write_text(new)
            changed.append(place.file)
    if moved and figure.artifacts:
        for destination, source in figure.artifacts(ctx).items():
            shutil.copyfile(source, ROOT / destination)
            changed.append(destination)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.list:
        print_list()
        return 0
    try:
        figures = select(args)
        read_published(figures)
    except FigureError as error:
        print(f"check_figures: {error}", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="check_figures-"))
    ctx, commit, rows, started = Context(out, args.workers), commit_description(), [], time.perf_counter()
    try:
        for figure in figures:
            ctx_rows, measured = check(figure, ctx)
            rows += ctx_rows
            if args.write and measured is not None:
                changed = write_figure(figure, ctx, measured, commit)
                if changed:
                    print(f"  wrote {', '.join(dict.fromkeys(changed))}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"runs kept in {out}", file=sys.stderr)
        else:
            shutil.rmtree(out, ignore_errors=True)
    print_table(rows)
    return summarize(rows, figures, args, time.perf_counter() - started)


def summarize(rows: list[Row], figures: list[Figure], args: argparse.Namespace, seconds: float) -> int:
    failed = [r for r in rows if r.ok is False]
    checked = sum(r.ok is not None for r in rows)
    print(f"\n{checked} values of {len(figures)} figures checked in {seconds / 60:.1f} min: "
          f"{len(failed)} beyond tolerance{' (rewritten)' if args.write and failed else ''}; "
          f"{sum(r.ok is None for r in rows)} skipped")
    for figure in FIGURES:
        if figure.slow and figure not in figures:
            print(f"not measured: {figure.name} ({figure.cost}): {figure.slow}; --slow or --only {figure.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
