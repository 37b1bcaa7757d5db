"""Reading time series from headerless CSV: strict parsing, channel folders and padding.

Each CSV row is one series and each column one time step. Rows may be ragged; missing cells are
empty or one of the tokens ``nan``, ``NA``, ``null`` (any case). Parsed data travels as a
NaN-padded ``(N, L)`` float32 array. Cleaning and scaling live in :mod:`cnn_kmeans.preprocess`
and are re-exported here so callers can import the whole data API from one place.
"""

from __future__ import annotations

import array
import gzip
import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cnn_kmeans.errors import UserError
from cnn_kmeans.preprocess import SCALER_KINDS, Scaler, clean

__all__ = [
    "SCALER_KINDS",
    "Scaler",
    "clean",
    "format_csv",
    "pad_rows",
    "parse_csv",
    "read_channel",
]

logger = logging.getLogger(__name__)

# Every alternative below is unambiguous (one way to match a given text), so a failing line costs
# linear time instead of exponential backtracking across its cells.
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_MISSING = r"[nN][aA][nN]|[nN][aA]|[nN][uU][lL][lL]"
_CELL = rf'[ \t]*(?:(?:{_NUMBER}|"(?:{_NUMBER}|{_MISSING})?"|{_MISSING})[ \t]*)?'
_LINE_RE = re.compile(rf"{_CELL}(?:,{_CELL})*")
_CELL_RE = re.compile(_CELL)
# Fast path: on lines made only of these characters float() accepts exactly the _NUMBER grammar
# (it rejects "", "1e", "." and "+-1" just like the regex), so the strict check can be skipped.
_PLAIN_LINE_RE = re.compile(r"[0-9.eE+\-, \t]*")
_NUMERIC_CELL_RE = re.compile(rf'[ \t]*(?:{_NUMBER}|"{_NUMBER}")[ \t]*')
_INFINITY_RE = re.compile(r'[ \t]*"?[+-]?(?:inf|infinity)"?[ \t]*', re.IGNORECASE)

_GZIP_MAGIC = b"\x1f\x8b"
# Channel files are parsed in blocks of about this many bytes (see `_read_blocks`).
CHANNEL_BLOCK_BYTES = 32 * 2**20
_MAX_QUOTED = 40
_ACCEPTED = (
    "write plain decimal numbers such as 1.5, -2, .5 or 1e-3 (optionally in double quotes), "
    "and leave the cell empty or write nan, NA or null for a missing value"
)
_LAYOUT = "one series per line as comma-separated numbers, no header and no index column"


def parse_csv(
    data: bytes | str, source: str = "request body", *, skip_blank_lines: bool = True
) -> np.ndarray:
    """Parse headerless CSV into raw values (N, L) float32: NaN for missing cells and padding.

    Args:
        data: CSV text, or its UTF-8 bytes (a leading BOM is ignored).
        source: Name used in error messages, e.g. a file path or "request body".
        skip_blank_lines: Skip empty/whitespace-only lines (training files); when False (inference
            requests) such a line is an error, since skipping it would misalign output rows.

    Raises:
        UserError: On any invalid cell, a row without values, invalid UTF-8 or no rows at all.
    """
    flat, counts = _parse_flat(data, source, skip_blank_lines=skip_blank_lines)
    if counts.size == 0:
        raise UserError(f"{source}: no rows; send {_LAYOUT}")
    return _pad_flat(flat, counts)


def read_channel(path: str | os.PathLike) -> np.ndarray:
    """Read every non-hidden file under path (recursive, sorted, gzip-aware) into (N, L) float32.

    A path naming a single file is read on its own. Rows keep file order, files are taken in
    sorted path order, and shorter rows are NaN-padded.

    Raises:
        UserError: If the path does not exist, holds no files or no rows, or any file is invalid.
    """
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = _list_files(root)
    else:
        raise UserError(f"{root}: no such file or directory; point the channel at CSV data")
    if not files:
        raise UserError(
            f"{root}: no files found (hidden files and folders are ignored); put one or more CSV "
            f"files (optionally gzip-compressed, .csv.gz) with {_LAYOUT} in this folder"
        )
    flats: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for file in files:
        rows = len(counts)
        for flat, block_counts in _read_blocks(file):
            flats.append(flat)
            counts.append(block_counts)
        if not any(len(c) for c in counts[rows:]):
            logger.warning("%s holds no rows", file)
    all_counts = np.concatenate(counts) if counts else np.empty(0, dtype=np.int64)
    if all_counts.size == 0:
        where = "the file" if root.is_file() else f"the {len(files)} file(s) in this folder"
        raise UserError(f"{root}: no rows in {where}; put CSV data with {_LAYOUT} there")
    values = _assemble(flats, counts)
    logger.info(
        "read %d series (longest %d values) from %d file(s) under %s",
        values.shape[0],
        values.shape[1],
        len(files),
        root,
    )
    return values


def pad_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack 1-D rows of different lengths into (N, max_len) float32, NaN-padded."""
    arrays = [np.asarray(row, dtype=np.float32) for row in rows]
    for i, row in enumerate(arrays):
        if row.ndim != 1:
            raise ValueError(f"row {i} has shape {row.shape}; expected a 1-D array")
    counts = np.array([row.size for row in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.float32)
    return _pad_flat(flat, counts)


def _pad_flat(flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Scatter row-major flat values (sum(counts),) into a NaN-padded (N, max(counts)) float32."""
    return _assemble([flat], [counts])


def _assemble(flats: list[np.ndarray], counts: list[np.ndarray]) -> np.ndarray:
    """`_pad_flat` of the concatenated blocks, each block freed once copied (emptying both
    lists): the peak is the result plus the blocks not yet copied, not two copies of it."""
    width = max((int(c.max()) for c in counts if c.size), default=0)
    out = np.full((sum(c.size for c in counts), width), np.nan, dtype=np.float32)
    row = 0
    flats.reverse()
    counts.reverse()
    while counts:
        flat, block = flats.pop(), counts.pop()
        rows = out[row : row + block.size]
        rows[np.arange(width) < block[:, None]] = flat
        row += block.size
    return out


def _list_files(root: Path) -> list[Path]:
    """Regular, non-hidden files under root, recursively, sorted by path."""
    found: list[str] = []
    for folder, subfolders, names in os.walk(root):
        # Pruning in place stops os.walk from descending into hidden folders.
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(
            os.path.join(folder, name)
            for name in names
            if not name.startswith(".") and os.path.isfile(os.path.join(folder, name))
        )
    return [Path(name) for name in sorted(found)]


def _read_blocks(file: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Values (float32, row-major) and row lengths of one channel file, block by block.

    Blocks of about `CHANNEL_BLOCK_BYTES` end at a line end, so a file of any size is parsed in
    a bounded working set (its bytes, text, lines and float64 cells live one block at a time);
    errors name the line in the whole file. Gzip (by its magic bytes) is decompressed as a
    stream.
    """
    source = str(file)
    try:
        with open(file, "rb") as raw:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            line, rows, tail = 0, 0, b""
            while True:
                try:
                    chunk = stream.read(CHANNEL_BLOCK_BYTES)
                except (OSError, EOFError, zlib.error) as exc:
                    if not gzipped:
                        raise
                    raise UserError(
                        f"{file}: corrupt gzip data ({exc}); re-compress the file or store it "
                        "uncompressed"
                    ) from exc
                data = tail + chunk
                cut = data.rfind(b"\n") + 1 if chunk else len(data)
                block, tail = data[:cut], data[cut:]
                del data
                if block:
                    flat, counts = _parse_flat(
                        block, source, skip_blank_lines=True, line_base=line, rows_before=rows
                    )
                    line += block.count(b"\n")
                    rows += len(counts)
                    yield flat, counts
                if not chunk:
                    return
    except OSError as exc:
        raise UserError(
            f"{file}: cannot read file ({exc.strerror}); check its permissions"
        ) from exc


def _decode(data: bytes, source: str, line_base: int = 0) -> str:
    """UTF-8 text of data; invalid bytes are reported with their line (after `line_base`
    earlier lines) and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = line_base + data.count(b"\n", 0, exc.start) + 1
        column = data.count(b",", line_start, exc.start) + 1
        raise UserError(
            f"{source}: line {line}, column {column}: invalid UTF-8 "
            f"(byte 0x{data[exc.start]:02x}); save the data as UTF-8 or plain ASCII"
        ) from None


def _parse_flat(
    data: bytes | str,
    source: str,
    *,
    skip_blank_lines: bool,
    line_base: int = 0,
    rows_before: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert CSV; returns row-major values (sum(counts),) float32, counts (N,).

    A block of a longer file (`_read_blocks`) comes after `line_base` lines holding
    `rows_before` rows: messages name lines in the whole file, and a BOM or a header can only
    start it.
    """
    text = data if isinstance(data, str) else _decode(bytes(data), source, line_base)
    if line_base == 0 and text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    del text
    if lines[-1] == "":
        lines.pop()  # the final newline terminates the last line; it does not start a new one

    flat = array.array("d")
    counts: list[int] = []
    line_numbers: list[int] = []
    plain, strict = _PLAIN_LINE_RE.fullmatch, _LINE_RE.fullmatch
    for number, line in enumerate(lines, line_base + 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line or (line[0] in " \t" and not line.strip(" \t")):
            if skip_blank_lines:
                continue
            _check_values(flat, counts, line_numbers, lines, source, line_base)
            raise UserError(
                f"{source}: line {number}, column 1: blank line; remove it, every line of a "
                "request must hold one series so output rows match input rows"
            )
        start = len(flat)
        if plain(line) is not None:
            try:
                flat.extend(map(float, line.split(",")))
            except ValueError:  # an empty cell or a malformed number: take the strict path
                del flat[start:]
        if len(flat) == start:
            if strict(line) is None:
                _check_values(flat, counts, line_numbers, lines, source, line_base)
                first = not counts and not rows_before
                raise UserError(_diagnose(line, number, source, first_line=first))
            # Validated: quotes only ever wrap a whole cell, so they can simply go.
            flat.extend(map(_cell_value, line.replace('"', "").split(",")))
        counts.append(line.count(",") + 1)
        line_numbers.append(number)

    values = _check_values(flat, counts, line_numbers, lines, source, line_base)
    logger.debug("parsed %d rows from %s", len(counts), source)
    return values, np.array(counts, dtype=np.int64)


def _check_values(
    flat: array.array,
    counts: list[int],
    line_numbers: list[int],
    lines: list[str],
    source: str,
    line_base: int = 0,
) -> np.ndarray:
    """Reject float32 overflow and rows without values; returns flat as float32. `lines` are
    the lines after the first `line_base` (see `_parse_flat`)."""
    values = np.frombuffer(flat, dtype=np.float64) if len(flat) else np.empty(0)
    with np.errstate(over="ignore"):
        values32 = values.astype(np.float32)
    if not counts:
        return values32
    ends = np.cumsum(counts, dtype=np.int64)
    starts = ends - np.asarray(counts, dtype=np.int64)
    overflow = np.flatnonzero(np.isinf(values32))
    empty = np.flatnonzero(~np.logical_or.reduceat(~np.isnan(values), starts))
    bad_rows = []
    if overflow.size:
        bad_rows.append(int(np.searchsorted(starts, overflow[0], side="right")) - 1)
    if empty.size:
        bad_rows.append(int(empty[0]))
    if not bad_rows:
        return values32
    bad_row = min(bad_rows)  # whichever problem comes first in the file
    line = line_numbers[bad_row]
    if empty.size and empty[0] == bad_row:
        raise UserError(
            f"{source}: line {line}, column 1: row has no values (every cell is empty or missing); "
            "remove the line or put at least one number in it"
        )
    column = int(overflow[0] - starts[bad_row]) + 1
    cell = lines[line - line_base - 1].rstrip("\r").split(",")[column - 1].strip(" \t")
    raise UserError(
        f"{source}: line {line}, column {column}: value {_quote(cell)} does not fit in float32 "
        "(magnitude above 3.4e38); rescale the data to smaller magnitudes"
    )


def _diagnose(line: str, number: int, source: str, *, first_line: bool) -> str:
    """Error message for a line that failed the fast grammar check, naming the first bad cell."""
    cells = line.split(",")
    bad = [i for i, cell in enumerate(cells) if _CELL_RE.fullmatch(cell) is None]
    if not bad:  # unreachable while _LINE_RE is built from _CELL_RE; kept as a safety net
        return f"{source}: line {number}, column 1: cannot parse the line; {_ACCEPTED}"
    column = bad[0] + 1
    cell = cells[bad[0]].strip(" \t")
    wordy = [i for i in bad if _INFINITY_RE.fullmatch(cells[i]) is None]
    if first_line and wordy and not any(_NUMERIC_CELL_RE.fullmatch(c) for c in cells):
        header_cell = cells[wordy[0]].strip(" \t")
        return (
            f"{source}: line {number}, column {wordy[0] + 1}: {_quote(header_cell)} "
            "looks like a header: CSV must not contain column names; remove the header line "
            f"and keep {_LAYOUT}"
        )
    if _INFINITY_RE.fullmatch(cell):
        return (
            f"{source}: line {number}, column {column}: infinite value {_quote(cell)} is not "
            "allowed; use a finite number, or leave the cell empty for a missing value"
        )
    hint = ""
    if "\r" in cell:
        hint = " (a carriage return inside a line: use \\n or \\r\\n line endings)"
    elif not cell.isascii():
        hint = " (only ASCII digits and signs are accepted)"
    return (
        f"{source}: line {number}, column {column}: not a number: {_quote(cell)}{hint}; {_ACCEPTED}"
    )


def _cell_value(cell: str) -> float:
    """Value of a validated, unquoted cell: NaN for empty or missing tokens."""
    cell = cell.strip(" \t")
    return float(cell) if cell and cell[0] not in "nN" else np.nan


def _quote(text: str) -> str:
    """text as a quoted literal, shortened so huge cells do not flood the message."""
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 3] + "..."
    return repr(text)


def format_csv(labels: np.ndarray, values: np.ndarray | None = None) -> str:
    """CSV lines `label,v1,...,vD`, one per row, in order; floats printed to round-trip float32.

    Args:
        labels: (N,) integer cluster labels.
        values: (N, D) float values to follow each label (features or distances), or None.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if values is None:
        return "".join(f"{label}\n" for label in labels.tolist())
    # 9 significant digits always round-trip a float32 (and %-formatting is the fastest way).
    row = "%d," + ",".join(["%.9g"] * values.shape[1]) + "\n"
    return "".join(
        row % (label, *rest)
        for label, rest in zip(labels.tolist(), values.astype(np.float32).tolist(), strict=True)
    )
