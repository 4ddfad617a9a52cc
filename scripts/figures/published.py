"""Where a published figure's values are (a block of a Markdown file, a table cell, a phrase) and how they read."""
from __future__ import annotations

import re
from dataclasses import dataclass

NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUMBER = re.compile(rf"(?<![\w.]){NUM}")
WAS = re.compile(r"\s*\(was [^)]*\)")
END = "<!-- /figure -->"
PROVENANCE = re.compile(r"\n*<sub>Provenance: .*?</sub>\n?", re.S)


class FigureError(Exception):
    """A block or a value that is not where its figure says it is."""





@dataclass(frozen=True)
class Published:
    """One value as printed: its key, its text, and where the text is in the file."""

    key: str
    text: str
    start: int
    end: int


def value(name: str) -> str:
    """A regex group for a number named `name` in a prose pattern, with the "(was X)" a rewrite may have put after it."""
    return rf"(?P<{name}>{NUM})(?:\s*\(was [^)]*\))?"


def text_value(name: str, pattern: str) -> str:
    """A regex group for a text value (a hash, a status) named `name` in a prose pattern."""
    return rf"(?P<{name}>{pattern})(?:\s*\(was [^)]*\))?"


@dataclass(frozen=True)
class Prose:
    """Values in running text: a regex whose named groups are the values' keys; a space matches any white space
    (line breaks included), so the pattern reads as the sentence does."""

    pattern: str

    def extract(self, body: str, offset: int) -> list[Published]:
        regex = re.compile(self.pattern.replace(" ", r"\s+"))
        found = list(regex.finditer(body))
        if len(found) != 1:
            raise FigureError(f"the text {self.pattern!r} is {'not found' if not found else 'found more than once'}")
        match = found[0]
        return [Published(key, match.group(key), offset + match.start(key), offset + match.end(key))
                for key in regex.groupindex]


@dataclass(frozen=True)
class Table:
    """Values of a markdown table: a row by its first cell (`rows`: cell text -> key; None: every row, keyed by its
    own first cell), a column by the start of its header (`columns`: header start -> {pick: key}). A pick is the
    index of the number in the cell (0 the first, -1 the last; "(was X)" left out) or "text" for the whole cell.
    `header`: the start of the first header cell, to choose among several tables in one block."""

    columns: dict[str, dict[int | str, str]]
    rows: dict[str, str] | None = None
    header: str | None = None

    def extract(self, body: str, offset: int) -> list[Published]:
        lines = self._lines(body, offset)
        header_cells = [cell for cell, _ in lines[0]]
        column_picks = self._columns_of(header_cells)
        values, seen = [], set()
        for cells in lines[2:]:
            label = strip_markup(cells[0][0])
            key = label if self.rows is None else self.rows.get(label)
            if key is None:
                continue
            seen.add(label)
            for index, picks in column_picks.items():
                for pick, suffix in picks.items():
                    values.append(cell_value(f"{key}.{suffix}", *cells[index], pick))
        missing = [] if self.rows is None else [label for label in self.rows if label not in seen]
        if missing:
            raise FigureError(f"table rows not found: {', '.join(missing)}")
        return values

    def _lines(self, body: str, offset: int) -> list[list[tuple[str, int]]]:
        tables, current = [], []
        position = 0
        for line in body.splitlines(keepends=True):
            if line.lstrip().startswith("|"):
                current.append(split_cells(line, offset + position))
            elif current:
                tables.append(current)
                current = []
            position += len(line)
        if current:
            tables.append(current)
        chosen = [t for t in tables if self.header is None or strip_markup(t[0][0][0]).startswith(self.header)]
        if not chosen:
            raise FigureError(f"no markdown table{'' if self.header is None else f' headed {self.header!r}'}")
        return chosen[0]

    def _columns_of(self, header_cells: list[str]) -> dict[int, dict[int | str, str]]:
        found = {}
        for prefix, picks in self.columns.items():
            indices = [i for i, cell in enumerate(header_cells) if strip_markup(cell).startswith(prefix)]
            if not indices:
                raise FigureError(f"no table column headed {prefix!r}")
            found[indices[0]] = picks
        return found


def strip_markup(cell: str) -> str:
    """A cell's text without bold, code marks and the padding."""
    return cell.replace("**", "").replace("`", "").strip()


def split_cells(line: str, offset: int) -> list[tuple[str, int]]:
    """A table line's cells, each with the file offset where its text starts."""
    cells, start = [], line.index("|") + 1
    for part in line.rstrip("\n").strip().strip("|").split("|"):
        cells.append((part, offset + start))
        start += len(part) + 1
    return cells


def cell_value(key: str, cell: str, cell_offset: int, pick: int | str) -> Published:
    """The value `pick` of a cell (see `Table`)."""
    annotations = [m.span() for m in WAS.finditer(cell)]
    if pick == "text":
        text = WAS.sub("", cell).strip()
        start = cell.index(text) if text else 0
        return Published(key, text, cell_offset + start, cell_offset + start + len(text))
    numbers = [m for m in NUMBER.finditer(cell) if not any(a <= m.start() < b for a, b in annotations)]
    try:
        match = numbers[pick]
    except IndexError:
        raise FigureError(f"no number {pick} in the cell {cell.strip()!r} ({key})") from None
    return Published(key, match.group(), cell_offset + match.start(), cell_offset + match.end())


@dataclass(frozen=True)
class Place:
    """A block of a file holding a figure's values (`block`: the NAME of its `<!-- figure: NAME -->` marker).
    `provenance`: whether the block ends with the provenance line (not for a few words inside a sentence)."""

    file: str
    block: str
    readers: tuple[Prose | Table, ...]
    provenance: bool = True


def block_span(text: str, file: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the body of block `name` in `text` (file `file`); FigureError when it is missing,
    repeated, unclosed or holds another block."""
    opening = f"<!-- figure: {name} -->"
    count = text.count(opening)
    if count != 1:
        raise FigureError(f"{file}: {'no' if count == 0 else f'{count}'} '{opening}' marker"
                          f"{'' if count == 0 else 's'} (figure {name})")
    start = text.index(opening) + len(opening)
    end = text.find(END, start)
    if end < 0:
        raise FigureError(f"{file}: '{opening}' has no closing '{END}' (figure {name})")
    if "<!-- figure:" in text[start:end]:
        raise FigureError(f"{file}: '{opening}' is not closed before the next figure's marker (figure {name})")
    return start, end


def read_place(text: str, place: Place) -> list[Published]:
    """Every value of `place` in `text`, the file's content."""
    start, end = block_span(text, place.file, place.block)
    body = PROVENANCE.sub(lambda m: " " * len(m.group()), text[start:end])  # its commands and hashes are no figures
    values = []
    for reader in place.readers:
        try:
            values += reader.extract(body, start)
        except FigureError as error:
            raise FigureError(f"{place.file}: block '{place.block}': {error}") from None
    return values
