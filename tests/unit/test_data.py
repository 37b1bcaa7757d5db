"""Tests for cnn_kmeans.data: strict CSV parsing, channel reading and padding."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from cnn_kmeans.data import pad_rows, parse_csv, read_channel
from cnn_kmeans.errors import UserError

NAN = np.nan


def assert_rows(values: np.ndarray, expected: list[list[float]]) -> None:
    """values (N, L) equals expected rows NaN-padded to the longest row, NaN == NaN."""
    width = max(len(row) for row in expected)
    want = np.array([row + [NAN] * (width - len(row)) for row in expected], dtype=np.float32)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, want)


def parse_error(data: bytes | str, **kwargs) -> str:
    """Message of the UserError that parse_csv raises for data."""
    with pytest.raises(UserError) as info:
        parse_csv(data, **kwargs)
    return str(info.value)


# --- accepted input -----------------------------------------------------------------------------


def test_ragged_rows_are_nan_padded():
    assert_rows(parse_csv("1,2,3\n4,5\n6\n"), [[1, 2, 3], [4, 5], [6]])


def test_trailing_empty_fields_are_missing_cells():
    assert_rows(parse_csv("1,2,,\n3\n"), [[1, 2, NAN, NAN], [3]])


@pytest.mark.parametrize(
    "token", ["", "nan", "NaN", "NAN", "na", "NA", "Na", "null", "NULL", "Null", '""', '"NA"']
)
def test_missing_tokens_any_case(token):
    assert_rows(parse_csv(f"1,{token},3\n{token},5\n"), [[1, NAN, 3], [NAN, 5]])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("-1.5e3", -1500.0),
        ("+2", 2.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("1E-3", 1e-3),
        ("-.5e+2", -50.0),
        ("007", 7.0),
        ("1e-50", 0.0),  # underflows float32 to zero: not an error
        ('"1.5"', 1.5),
        ('"-2e1"', -20.0),
    ],
)
def test_number_forms(text, value):
    values = parse_csv(f"0,{text}")
    assert values[0, 1] == np.float32(value)


def test_quoted_numbers_and_surrounding_spaces():
    assert_rows(parse_csv(' "1.5" ,\t"-2"\t, 3 \n'), [[1.5, -2, 3]])


def test_spaces_and_tabs_around_cells():
    assert_rows(parse_csv("  1 ,\t2\t,  ,nan \t\n"), [[1, 2, NAN, NAN]])


@pytest.mark.parametrize(
    "data",
    [
        "1,2\n3,4\n",
        "1,2\n3,4",
        "1,2\r\n3,4\r\n",
        "1,2\r\n3,4",
        "1,2\r\n3,4\n",
        "\ufeff1,2\n3,4\n",
        b"\xef\xbb\xbf1,2\r\n3,4\r\n",
        b"1,2\n3,4",
    ],
)
def test_line_endings_bom_and_final_newline(data):
    for skip in (True, False):
        assert_rows(parse_csv(data, skip_blank_lines=skip), [[1, 2], [3, 4]])


def test_blank_lines_are_skipped_in_training():
    assert_rows(parse_csv("\n1,2\n\n  \t\n\r\n3,4\n\n"), [[1, 2], [3, 4]])


def test_blank_line_in_request_is_an_error_naming_it():
    message = parse_error("1,2\n\n3,4\n", skip_blank_lines=False)
    assert message.startswith("request body: line 2, column 1: blank line")


def test_whitespace_line_in_request_is_an_error():
    message = parse_error("1,2\r\n3,4\r\n \r\n", skip_blank_lines=False)
    assert "request body: line 3, column 1" in message


def test_two_trailing_newlines_in_request_leave_an_empty_line():
    assert "line 2, column 1" in parse_error("1,2\n\n", skip_blank_lines=False)


# Independent reference grammar for fuzzing: the parser's fast path relies on float() and must
# accept exactly these cells.
_REFERENCE_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def test_random_cells_follow_the_number_grammar():
    rng = np.random.default_rng(0)
    alphabet = list("09.eE+- \t")
    for _ in range(3000):
        cell = "".join(rng.choice(alphabet, size=rng.integers(0, 7)))
        core = cell.strip(" \t")
        valid = not core or _REFERENCE_NUMBER.fullmatch(core)
        with np.errstate(over="ignore"):
            overflow = bool(valid and core and np.isinf(np.float32(float(core))))
        if overflow:
            with pytest.raises(UserError, match=r"line 1, column 2: value .* float32"):
                parse_csv(f"1,{cell}")
        elif valid:
            got = parse_csv(f"1,{cell}")[0, 1]
            assert np.isnan(got) if not core else got == np.float32(float(core)), cell
        else:
            with pytest.raises(UserError, match="line 1, column 2: not a number"):
                parse_csv(f"1,{cell}")


# --- rejected input -----------------------------------------------------------------------------


def test_non_numeric_cell_names_source_line_and_column():
    message = parse_error("1,2\n\n3,4,abc,5\n", source="data/train.csv")
    assert message.startswith("data/train.csv: line 3, column 3: not a number: 'abc'")
    assert "nan, NA or null" in message  # says what is accepted


@pytest.mark.parametrize(
    ("cell", "fragment"),
    [
        ("1_000", "not a number: '1_000'"),
        ("0x10", "not a number: '0x10'"),
        ("1.2.3", "not a number: '1.2.3'"),
        ("1e", "not a number: '1e'"),
        ("--1", "not a number: '--1'"),
        ("1 2", "not a number: '1 2'"),
        ('"1', "not a number: '\"1'"),
        ("١٢", "not a number: '١٢' (only ASCII"),
        ("１", "not a number: '１' (only ASCII"),
        ("+nan", "not a number: '+nan'"),
        ("inf", "infinite value 'inf'"),
        ("-Infinity", "infinite value '-Infinity'"),
        ('"+INF"', "infinite value '\"+INF\"'"),
    ],
)
def test_invalid_cells(cell, fragment):
    message = parse_error(f"1,2,3\r\n4, {cell} ,6\r\n")
    assert message.startswith("request body: line 2, column 2: ")
    assert fragment in message


@pytest.mark.parametrize("cell", ["1e39", "-3.5e38", "1e309", "1" * 400])
def test_float32_overflow_is_an_error(cell):
    message = parse_error(f"1,2\n3,4,{cell}\n")
    assert message.startswith("request body: line 2, column 3: value ")
    assert "float32" in message


def test_largest_float32_is_accepted():
    assert parse_csv("3.4e38,-3.4e38")[0, 0] == np.float32(3.4e38)


@pytest.mark.parametrize("row", [",,", "nan,NA", " , null ", '"",""'])
def test_row_without_values(row):
    message = parse_error(f"1,2\n{row}\n3\n", source="x.csv")
    assert message.startswith("x.csv: line 2, column 1: row has no values")


def test_first_error_in_file_order_is_reported():
    assert "line 2, column 1: row has no values" in parse_error("1\n,\n2,1e40\nx\n")
    assert "line 2, column 2: value '1e40'" in parse_error("1\n2,1e40\n,\nx\n")
    assert "line 3, column 1: not a number" in parse_error("1\n2\nx\n,\n")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ("a,b,c\n1,2,3\n", "line 1, column 1: 'a'"),
        ('"time","value"\n1,2\n', "line 1, column 1: '\"time\"'"),
        ("\n \n,name\n1,2\n", "line 3, column 2: 'name'"),
        ("\ufeffid,nan\n1,2\n", "line 1, column 1: 'id'"),
    ],
)
def test_header_row(data, where):
    message = parse_error(data)
    assert where in message
    assert "looks like a header: CSV must not contain column names" in message


def test_words_after_the_first_line_are_not_called_a_header():
    message = parse_error("1,2\na,b\n")
    assert "line 2, column 1: not a number: 'a'" in message
    assert "header" not in message


def test_first_line_with_numbers_is_not_a_header():
    message = parse_error("id,1,2\n")
    assert "line 1, column 1: not a number: 'id'" in message
    assert "header" not in message


def test_infinity_on_first_line_is_not_called_a_header():
    message = parse_error("inf,nan\n")
    assert "infinite value 'inf'" in message
    assert "header" not in message


@pytest.mark.parametrize("data", ["", b"", "\n", "\ufeff", " \n\r\n\t\n"])
def test_no_rows(data):
    message = parse_error(data, source="empty.csv")
    assert message.startswith("empty.csv: no rows")


def test_empty_request_body():
    assert parse_error("", skip_blank_lines=False).startswith("request body: no rows")


def test_invalid_utf8_names_line_and_column():
    message = parse_error(b"1,2\n3,4,\xff5\n", source="bad.csv")
    assert message.startswith("bad.csv: line 2, column 3: invalid UTF-8")


def test_invalid_utf8_after_bom_counts_lines_normally():
    message = parse_error(b"\xef\xbb\xbf1\n\n\xc3\x28\n")
    assert "line 3, column 1: invalid UTF-8" in message


def test_long_cell_is_truncated_in_the_message():
    message = parse_error("1," + "x" * 5000)
    assert "line 1, column 2: not a number: 'xxx" in message
    assert "...'" in message
    assert len(message) < 500


def test_lone_carriage_returns_are_explained():
    assert "carriage return" in parse_error("1,2\r3,4\r")


# --- channels -----------------------------------------------------------------------------------


def test_channel_reads_nested_files_in_sorted_path_order(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "a.csv").write_text("1,1\n")
    (tmp_path / "b" / "c" / "z.csv").write_text("3\n")
    (tmp_path / "b" / "a.csv").write_text("2,2,2\n2.5\n")
    (tmp_path / "c.txt").write_text("4,4\r\n")
    assert_rows(read_channel(tmp_path), [[1, 1], [2, 2, 2], [2.5], [3], [4, 4]])


def test_channel_reads_gzip_by_magic_bytes(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf1,2\r\n3\r\n"))
    (tmp_path / "b.data").write_bytes(gzip.compress(b"5,6\n"))  # no .gz suffix
    (tmp_path / "c.csv").write_text("7\n")
    assert_rows(read_channel(str(tmp_path)), [[1, 2], [3], [5, 6], [7]])


def test_hidden_files_and_folders_are_ignored(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.csv").write_text("not,numbers\n")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01binary")
    (tmp_path / "data.csv").write_text("1,2\n")
    assert_rows(read_channel(tmp_path), [[1, 2]])


def test_single_file_path(tmp_path):
    file = tmp_path / "one.csv"
    file.write_text("1,,3\n")
    assert_rows(read_channel(file), [[1, NAN, 3]])


def test_error_names_the_file_inside_the_channel(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "good.csv").write_text("1\n")
    bad = tmp_path / "sub" / "bad.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2\n3,oops\n"))
    with pytest.raises(UserError) as info:
        read_channel(tmp_path)
    assert str(info.value).startswith(f"{bad}: line 2, column 2: not a number: 'oops'")


def test_header_is_detected_per_file(tmp_path):
    (tmp_path / "a.csv").write_text("1,2\n")
    (tmp_path / "b.csv").write_text("x,y\n1,2\n")
    with pytest.raises(UserError, match=r"b\.csv: line 1, column 1: 'x' looks like a header"):
        read_channel(tmp_path)


def test_empty_channel_folder(tmp_path):
    (tmp_path / ".keep").write_text("")
    (tmp_path / "empty-sub").mkdir()
    with pytest.raises(UserError) as info:
        read_channel(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: no files found")
    assert "CSV" in message


def test_channel_with_only_empty_files(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("\n\n")
    with pytest.raises(UserError, match="no rows in the 2 file"):
        read_channel(tmp_path)


def test_empty_file_next_to_data_contributes_nothing(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("1\n")
    assert_rows(read_channel(tmp_path), [[1]])


def test_empty_single_file(tmp_path):
    file = tmp_path / "empty.csv"
    file.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.csv: no rows in the file"):
        read_channel(file)


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        read_channel(tmp_path / "nope")


def test_corrupt_gzip(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"1,2\n" * 100)[:-5])
    with pytest.raises(UserError, match=r"a\.csv\.gz: corrupt gzip data"):
        read_channel(tmp_path)


# --- padding ------------------------------------------------------------------------------------


def test_pad_rows():
    values = pad_rows([np.array([1.0, 2.0]), np.array([3.0]), np.array([], dtype=np.float64)])
    assert_rows(values, [[1, 2], [3], []])


def test_pad_rows_empty_and_invalid():
    assert pad_rows([]).shape == (0, 0)
    with pytest.raises(ValueError, match="1-D"):
        pad_rows([np.zeros((2, 2))])


def channel_text(rows: int, seed: int = 0) -> str:
    """Ragged rows of 1-9 plain numbers, some cells empty or quoted, CRLF on every third line."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        cells = [f"{v:.3f}" for v in rng.normal(size=rng.integers(1, 10))]
        if i % 5 == 0 and len(cells) > 1:
            cells[-1] = ""
        if i % 7 == 0:
            cells[0] = f'"{cells[0]}"'
        lines.append(",".join(cells) + ("\r\n" if i % 3 == 0 else "\n"))
    return "".join(lines)


@pytest.mark.parametrize("block", [7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("compress", [False, True])
def test_a_channel_file_read_in_blocks_is_the_whole_file_parsed(
    tmp_path, monkeypatch, block, compress
):
    monkeypatch.setattr("cnn_kmeans.data.CHANNEL_BLOCK_BYTES", block)
    text = "\ufeff" + channel_text(300) + "1,2"  # a BOM first, no newline at the end
    data = text.encode()
    (tmp_path / "a.csv").write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(read_channel(tmp_path), parse_csv(data))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("1,x,3\n", "line 251, column 2: not a number: 'x'"),
        ("1,2e99\n", "line 251, column 2: value '2e99' does not fit in float32"),
        (",,\n", "line 251, column 1: row has no values"),
        ("1,\xff\n", "line 251, column 2: invalid UTF-8"),
    ],
)
def test_errors_name_the_line_in_the_whole_file_whatever_block_it_falls_in(
    tmp_path, monkeypatch, bad, expected
):
    monkeypatch.setattr("cnn_kmeans.data.CHANNEL_BLOCK_BYTES", 97)
    good = channel_text(250).replace("\r\n", "\n").encode()
    payload = bad.encode("latin-1") if "\xff" in bad else bad.encode()
    (tmp_path / "a.csv").write_bytes(good + payload + b"4,5\n")
    with pytest.raises(UserError, match=re.escape(expected)):
        read_channel(tmp_path)


def test_a_header_is_recognised_only_on_the_first_row_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("cnn_kmeans.data.CHANNEL_BLOCK_BYTES", 16)
    (tmp_path / "a.csv").write_text("\n\nvalue,other\n1,2\n")
    with pytest.raises(UserError, match="line 3, column 1: 'value' looks like a header"):
        read_channel(tmp_path)
    (tmp_path / "a.csv").write_text("1,2\n" * 20 + "value,other\n")
    with pytest.raises(UserError, match="line 21, column 1: not a number: 'value'"):
        read_channel(tmp_path)


def test_reading_a_channel_holds_the_values_not_copies_of_the_file(tmp_path, monkeypatch):
    """A training channel of 10^6 series is ~1.2 GB of CSV: the reader's peak is the result
    plus a bounded working set, not the bytes, the text, its lines and float64 cells at once."""
    import tracemalloc

    monkeypatch.setattr("cnn_kmeans.data.CHANNEL_BLOCK_BYTES", 1 << 18)
    rng = np.random.default_rng(3)
    rows = rng.integers(100, 999, size=(20_000, 50))
    (tmp_path / "a.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    tracemalloc.start()
    values = read_channel(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(values, rows.astype(np.float32))
    assert peak < 2.5 * values.nbytes, f"peak {peak:,} bytes for {values.nbytes:,} of values"
