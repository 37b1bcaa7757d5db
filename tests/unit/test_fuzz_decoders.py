"""Property-based fuzzing of the request decoders (CSV, JSON, JSON Lines) and of Content-Type.

Every input either decodes to the values an independent, simple reading gives (below, written
from the data contract, not from the parser), or raises `UserError` naming where the problem is;
never another exception. The suite runs a modest number of examples per property; the long
campaign (`benchmarks/fuzz_campaign.py`) reruns the same properties with `CNN_KMEANS_FUZZ_EXAMPLES`
set high.
"""

from __future__ import annotations

import encodings.aliases
import json
import math
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from cnn_kmeans.container.codecs import decode_request
from cnn_kmeans.data import parse_csv
from cnn_kmeans.errors import UserError

EXAMPLES = int(os.environ.get("CNN_KMEANS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared CI machine: no timing in tests
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
F32_MAX = float(np.finfo(np.float32).max)
WHERE_CSV = re.compile(r"line \d+, column \d+")
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MISSING = {"", "nan", "na", "null"}


class Invalid(Exception):
    """The reference reader rejects the input."""


# -- the reference readers -------------------------------------------------------------------


def reference_cell(cell: str) -> float:
    """One CSV cell: optional spaces/tabs around a number, a missing token, or either in quotes."""
    cell = cell.strip(" \t")
    if len(cell) >= 2 and cell[0] == cell[-1] == '"':
        cell = cell[1:-1]  # quotes wrap a whole cell, with nothing (not even spaces) inside
    if cell.lower() in MISSING:
        return math.nan
    if not NUMBER.fullmatch(cell):
        raise Invalid(cell)
    value = float(cell)
    with np.errstate(over="ignore"):
        narrow = float(np.float32(value))
    if math.isinf(narrow):
        raise Invalid(cell)
    return value


def reference_csv(data: bytes) -> list[list[float]]:
    """A request body read line by line as the data contract (SPEC §3) describes it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("utf-8") from None
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    rows = []
    for line in lines:
        line = line.removesuffix("\r")
        if not line.strip(" \t"):
            raise Invalid("blank line")
        row = [reference_cell(cell) for cell in line.split(",")]
        if all(math.isnan(value) for value in row):
            raise Invalid("no values")
        rows.append(row)
    if not rows:
        raise Invalid("no rows")
    return rows


def reference_record(record: object) -> list[float]:
    """One JSON record: an array of numbers and nulls, or {"features": [...]}."""
    if isinstance(record, dict) and isinstance(record.get("features"), list):
        record = record["features"]
    if not isinstance(record, list):
        raise Invalid("record")
    row = []
    for value in record:
        if value is None:
            row.append(math.nan)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid("value")
        elif value != value:
            row.append(math.nan)  # JSON's non-standard NaN: a missing value, like null
        elif abs(float(value)) > F32_MAX:
            raise Invalid("too large")
        else:
            row.append(float(value))
    if all(math.isnan(value) for value in row):
        raise Invalid("no values")
    return row


def reference_json(document: object) -> list[list[float]]:
    if isinstance(document, dict) and "instances" in document:
        document = document["instances"]
    if not isinstance(document, list) or not document:
        raise Invalid("not a list")
    return [reference_record(record) for record in document]


def load_json(text: str) -> object:
    try:
        return json.loads(text, parse_int=lambda digits: float(digits))
    except (ValueError, RecursionError):
        raise Invalid("json") from None


def reference_jsonlines(data: bytes) -> list[list[float]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("utf-8") from None
    lines = text.split("\n")
    if not lines[-1].strip():
        lines.pop()
    if any(not line.strip() for line in lines):
        raise Invalid("blank line")
    records = [load_json(line) for line in lines]
    if not records:
        raise Invalid("no records")
    return [reference_record(record) for record in records]


def padded(rows: list[list[float]]) -> np.ndarray:
    out = np.full((len(rows), max(len(row) for row in rows)), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def check(decode, reference, data: bytes, *, where: re.Pattern | None) -> None:
    """decode(data) gives the reference's values, or a UserError where the reference fails."""
    try:
        expected = padded(reference(data))
    except Invalid:
        expected = None
    try:
        got = decode(data)
    except UserError as error:
        event("rejected: UserError")  # tallied by --hypothesis-show-statistics (the campaign)
        assert expected is None, f"rejected valid input {data[:200]!r}: {error}"
        message = str(error)
        assert message.startswith("request body"), message
        if where is not None and "no rows" not in message:
            assert where.search(message), message
        return
    # Any other exception propagates and fails the test: that is the property.
    event("decoded")
    assert expected is not None, f"accepted invalid input {data[:200]!r}: {got}"
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaN at the same places, values exact


def csv_request(data: bytes) -> np.ndarray:
    return decode_request(data, "text/csv")


# -- generators --------------------------------------------------------------------------------

plain_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["1e309", "-1e309", "1e39", "3.4028235e38", "3.4028236e38", "1e-50"]),
    st.sampled_from(["5e-324", ".5", "5.", "+1", "-0", "00012", "1E5", "1e+05", "1e-3"]),
)
odd_cells = st.sampled_from(
    [
        "nan", "NaN", "NA", "null", "NULL", "inf", "-Infinity", "+inf", "1e", ".", "-", "+-1",
        "١٢", "１", "½", "1\x00", "\x00", "0x10", "1_000", "1,5", "--1", "1..2", "e5", "\ufeff1",
        "\u00a01", "1\r", "'1'", '"1', '1"', '" 1"', '""', '"nan"', "true", "[1]", "1 2",
    ]
)  # fmt: skip
cells = st.one_of(
    plain_numbers,
    plain_numbers.map(lambda n: f'"{n}"'),
    plain_numbers.map(lambda n: f" \t{n} "),
    st.just(""),
    odd_cells,
    st.text(max_size=4),
)
clean_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-(10**9), 10**9).map(str),
    st.sampled_from([".5", "5.", "+1", "-0", "00012", "1E5", "1e+05", "1e-3", "3.4028235e38"]),
)
clean_cells = st.one_of(
    clean_numbers,
    clean_numbers,
    clean_numbers.map(lambda n: f'"{n}"'),
    clean_numbers.map(lambda n: f"\t{n}  "),
    st.sampled_from(["", "nan", "NA", "null", '""', '"NaN"']),
)
separators = st.sampled_from([",", ",", ",", ";", "\t", " ", "|", ", "])
endings = st.sampled_from(["\n", "\n", "\r\n", "\r", "\n\n", "\r\r\n"])


@st.composite
def near_valid_csv(draw) -> bytes:
    """Rows of mostly valid cells, with random separators, line endings, BOMs and damage."""
    clean = draw(st.booleans())  # half valid by construction, so values get compared too
    width = draw(st.sampled_from([1, 2, 5, 30, 400]))  # many short rows to very long ones
    row = st.lists(clean_cells if clean else cells, min_size=1, max_size=width)
    rows = draw(st.lists(row, min_size=1, max_size=30))
    separator = "," if clean else draw(separators)
    lines = [separator.join(row) for row in rows]
    ending = st.sampled_from(["\n", "\r\n"]) if clean else endings
    text = "".join(line + draw(ending) for line in lines[:-1]) + lines[-1]
    text += draw(st.sampled_from(["", "\n", "\r\n"]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    data = text.encode("utf-8")
    if (
        not clean and draw(st.integers(0, 2)) == 0
    ):  # a byte-level mutation: insert, cut or overwrite
        at = draw(st.integers(0, len(data)))
        byte = bytes([draw(st.integers(0, 255))])
        data = draw(st.sampled_from([data[:at] + byte + data[at:], data[:at], data[:at] + byte]))
    return data


def valid_rows() -> st.SearchStrategy[list[list[float | None]]]:
    value = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.integers(-(10**6), 10**6),
        st.none(),
    )
    return st.lists(st.lists(value, min_size=1, max_size=40), min_size=1, max_size=20)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),  # NaN and infinities included: json.dumps writes NaN, Infinity
    st.integers(),
    st.integers(300, 4000).map(lambda digits: 10**digits + 7),  # beyond float64, int() reads it
    st.text(max_size=5),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=9), inner, max_size=3)
    ),
    max_leaves=30,
)


@st.composite
def json_documents(draw) -> bytes:
    """Valid-looking documents (bare, {"instances"}, {"features"} records), odd values, damage."""
    rows = draw(st.one_of(valid_rows(), st.lists(json_values, max_size=8)))
    if draw(st.booleans()):
        rows = [{"features": row} if draw(st.booleans()) else row for row in rows]
    document = draw(st.sampled_from(["bare", "instances", "any"]))
    if document == "instances":
        rows = {"instances": rows}
    elif document == "any":
        rows = draw(json_values)
    data = json.dumps(rows).encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(data)))
        # A number longer than int() reads (4300 digits) cannot come from json.dumps: insert one.
        insert = draw(st.one_of(st.binary(max_size=2), st.just(b"9" * 4400)))
        data = data[:at] + insert + data[at + draw(st.integers(0, 2)) :]
    return data


@st.composite
def json_lines(draw) -> bytes:
    records = draw(st.one_of(valid_rows(), st.lists(json_values, max_size=8)))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = "".join(json.dumps(record) + ending for record in records)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    data = text.encode()
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"", b"\n", b"\r", b"\x00", b"]"])) + data[at:]
    return data


CHARSETS = sorted(set(encodings.aliases.aliases.values()) | {"utf-8", "rot13", "undefined"})


# -- properties --------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
@example(b"1,2\n3,\xff\n")
@example(b"\xef\xbb\xbf")
@example(b"\x00")
def test_arbitrary_bytes_as_csv(data):
    check(csv_request, reference_csv, data, where=WHERE_CSV)


@FUZZ
@given(near_valid_csv())
@example(b"1e309,2\n")
@example(b"3.4028235e38,3.4028236e38\n")
@example(b' "1" , "nan",\t\r\n,2\n')
@example("١,٢\n".encode())
@example(b"1,2\r\r\n3\n")
def test_near_valid_csv_decodes_like_the_reference_or_names_line_and_column(data):
    check(csv_request, reference_csv, data, where=WHERE_CSV)


@FUZZ
@given(near_valid_csv())
def test_the_training_parser_agrees_on_valid_files(data):
    # Training files may hold blank lines; without them the file parser reads what a request does.
    try:
        expected = padded(reference_csv(data))
    except Invalid:
        with pytest.raises(UserError, match=r"line \d+, column \d+|no rows"):
            parse_csv(data, source="f.csv", skip_blank_lines=False)
        return
    np.testing.assert_array_equal(parse_csv(data, source="f.csv"), expected)


def json_request(data: bytes) -> np.ndarray:
    return decode_request(data, "application/json")


def jsonlines_request(data: bytes) -> np.ndarray:
    return decode_request(data, "application/jsonlines")


def reference_json_body(data: bytes) -> list[list[float]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("utf-8") from None
    return reference_json(load_json(text))


@FUZZ
@given(st.one_of(json_documents(), st.binary(max_size=200)))
@example(b"[[" + b"1" * 5000 + b"]]")
@example(b"[[NaN, 1], [null, -Infinity]]")
@example(b"[" * 5000)
@example(b"[[null, 1" + b"0" * 320 + b"]]")
@example(b"\xef\xbb\xbf\x00\x80[]")
def test_json_decodes_like_the_reference_or_raises_user_error(data):
    check(json_request, reference_json_body, data, where=None)


@FUZZ
@given(st.one_of(json_lines(), st.binary(max_size=200)))
@example(b"[" + b"9" * 5000 + b"]\n")
@example(b"[1]\r\n\r\n[2]\n")
def test_json_lines_decode_like_the_reference_or_raise_user_error(data):
    check(jsonlines_request, reference_jsonlines, data, where=None)


@FUZZ
@given(
    st.sampled_from(["text/csv", "application/json", "application/jsonlines", "text/plain"]),
    st.one_of(st.sampled_from(CHARSETS), st.text(max_size=12)),
    st.binary(max_size=60),
)
@example("text/csv", "rot13", b"1,2\n")
@example("text/csv", "base64", b"MSwy")
@example("text/csv", "undefined", b"1,2\n")
@example("text/csv", "punycode", b"1,2\n")
def test_any_charset_and_body_decode_or_raise_user_error(media_type, charset, body):
    header = f"{media_type}; charset={json.dumps(charset)}"
    try:
        values = decode_request(body, header)
    except UserError:
        return
    assert values.dtype == np.float32 and values.ndim == 2 and values.shape[0] >= 1


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("text/csv; charset=rot13", b"1,2\n", "unsupported charset 'rot13'"),
        ("text/csv; charset=base64", b"MSwy", "unsupported charset 'base64'"),
        ("text/csv; charset=undefined", b"1,2\n", "unsupported charset 'undefined'"),
        ("text/csv; charset=punycode", b"1,2\n", "cannot decode the body as punycode"),
        ("application/json", b"[[" + b"1" * 5000 + b"]]", "instance 1, value 1: inf is infinite"),
        ("application/jsonlines", b"[2, " + b"9" * 4301 + b"]", "line 1, value 2: inf"),
        ("application/json", b"[[null, 1" + b"0" * 320 + b"]]", "instance 1, value 2: 1000"),
        ("application/json", b"\xef\xbb\xbf\x00\x80[]", "line 1, column 1: invalid utf-8"),
        ("application/jsonlines", b"\xef\xbb\xbf[1]\n[\xff]", "line 2, column 1: invalid utf-8"),
    ],
)
def test_what_the_fuzzing_found_is_a_user_error(content_type, body, message):
    # Found by the properties above and the long campaign: these raised LookupError,
    # UnicodeError, ValueError, TypeError and UnicodeDecodeError (so a 500) before the fixes in
    # codecs.py.
    with pytest.raises(UserError, match=re.escape(message)):
        decode_request(body, content_type)
