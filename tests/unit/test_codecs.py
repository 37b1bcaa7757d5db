"""Content types: request decoding, response encoding and Accept negotiation, without HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnn_kmeans.container.codecs import (
    CSV,
    JSON,
    JSONLINES,
    REQUEST_CONTENT_TYPES,
    RESPONSE_CONTENT_TYPES,
    NotAcceptable,
    ResponseChoice,
    UnsupportedContentType,
    check_content_type,
    decode_batch,
    decode_request,
    encode_response,
    negotiate,
)
from cnn_kmeans.data import format_csv
from cnn_kmeans.errors import UserError

NAN = np.nan
EXPECTED = np.array([[1, 2, 3], [4, NAN, 6], [7, NAN, NAN]], dtype=np.float32)


def test_declared_content_types():
    assert REQUEST_CONTENT_TYPES == ("text/csv", "application/json", "application/jsonlines")
    assert RESPONSE_CONTENT_TYPES[0] == "text/csv"  # the default answer
    assert set(RESPONSE_CONTENT_TYPES) == set(REQUEST_CONTENT_TYPES)


@pytest.mark.parametrize(
    "body",
    [
        b"1,2,3\n4,,6\n7\n",
        b"1,2,3\r\n4,,6\r\n7\r\n",
        b"1,2,3\n4,nan,6\n7,,",
        b'\xef\xbb\xbf 1 , 2,"3"\n4,NA,6\n7',
    ],
)
def test_csv_rows_in_order_with_gaps_crlf_bom_and_optional_final_newline(body):
    np.testing.assert_array_equal(decode_request(body, "text/csv"), EXPECTED)


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("text/csv; charset=utf-8", "utf-8"),
        ("Text/CSV; Charset=UTF-8", "utf-8"),
        ("text/csv; charset=ISO-8859-1", "latin-1"),
        ("text/csv;charset=us-ascii", "ascii"),
        ("text/csv; charset=utf-16", "utf-16"),
        (None, "utf-8"),  # no Content-Type: CSV, as batch transform sends it
    ],
)
def test_csv_in_any_charset(content_type, encoding):
    body = "1,2,3\n4,,6\n7\n".encode(encoding)
    np.testing.assert_array_equal(decode_request(body, content_type), EXPECTED)


def test_csv_errors_name_line_and_column():
    with pytest.raises(UserError, match=r"line 2, column 3: not a number: 'x'"):
        decode_request(b"1,2,3\n4,5,x\n", CSV)
    with pytest.raises(UserError, match="line 2, column 1: blank line"):
        decode_request(b"1,2\n\n3,4\n", CSV)
    with pytest.raises(UserError, match="line 2, column 2: invalid UTF-8"):
        decode_request(b"1,2\n3,\xff\n", CSV)
    with pytest.raises(UserError, match="line 2, column 2: invalid utf-16"):
        decode_request("1,2\n3,".encode("utf-16") + b"\x00\xd8", "text/csv; charset=utf-16")
    with pytest.raises(UserError, match="no rows"):
        decode_request(b"", CSV)


def test_json_instances_bare_lists_and_features_objects():
    for document in (
        {"instances": [[1, 2, 3], [4, None, 6], [7]]},
        [[1, 2, 3], [4, None, 6], [7.0]],
        {"instances": [{"features": [1, 2, 3]}, {"features": [4, None, 6]}, [7, None]]},
    ):
        decoded = decode_request(json.dumps(document).encode(), "application/json")
        np.testing.assert_array_equal(decoded, EXPECTED)


def test_json_documents_one_per_line_keep_their_rows_apart():
    """Batch transform's MultiRecord body: input lines joined by newlines, one document each."""
    lines = [b'{"instances": [[1, 2, 3], [4, null, 6]]}', b"[[7]]", b'[{"features": [8, 9]}]']
    for body in (b"\n".join(lines), b"\n".join(lines) + b"\n", b"\r\n".join(lines) + b"\r\n"):
        batch = decode_batch(body, JSON)
        assert batch.documents == (2, 1, 1)
        np.testing.assert_array_equal(batch.values[:3], EXPECTED)
        np.testing.assert_array_equal(batch.values[3], [8, 9, NAN])
    pretty = json.dumps({"instances": [[1, 2, 3], [4, None, 6], [7]]}, indent=2).encode()
    one = decode_batch(pretty, JSON)  # one document over many lines is one document
    assert one.documents is None
    np.testing.assert_array_equal(one.values, EXPECTED)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[[1]]\n\n[[2]]\n", "line 2, column 1: blank line"),
        (b"[[1]] [[2]]\n", "line 1, column 6: invalid JSON: more data after the document"),
        (b"[[1]]\n[[2],]\n", r"line 2, column \d+: invalid JSON"),
        (b'[[1]]\n[[2]]\n{"instances": [[1, "x"]]}\n', "line 3: instance 1, value 2: not a"),
        (b"[[1]]\n[1, 2]\n", "line 2: instance 1: expected an array of numbers"),
        (b"[[1]]\n{}\n", 'line 2: expected {"instances"'),
    ],
)
def test_json_document_errors_name_the_line(body, message):
    with pytest.raises(UserError, match=message):
        decode_batch(body, JSON)


def test_a_json_answer_is_one_line_per_document():
    choice = ResponseChoice(JSON, "labels")
    body = encode_response(LABELS, None, choice, documents=(2, 1)).decode()
    assert body.splitlines() == [
        '{"predictions": [{"label": 2}, {"label": 0}]}',
        '{"predictions": [{"label": 1}]}',
    ]
    assert body.endswith("\n") and encode_response(LABELS, None, choice).count(b"\n") == 1
    csv = encode_response(LABELS, None, ResponseChoice(CSV, "labels"), documents=(2, 1))
    assert csv == b"2\n0\n1\n"  # CSV and JSON Lines: one line per series, documents or not


def test_json_lines_one_array_per_line():
    for body in (b"[1,2,3]\n[4,null,6]\n[7]\n", b"[1,2,3]\r\n[4,null,6]\r\n[7]"):
        np.testing.assert_array_equal(decode_request(body, "application/jsonlines"), EXPECTED)


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (JSON, b'{"instances": [[1, 2],', r"line 1, column 23: invalid JSON"),
        (JSON, b'[[1, 2], [3, "4"]]', r"instance 2, value 2: not a number: \"4\""),
        (JSON, b"[[1, true]]", "instance 1, value 2: not a number: true"),
        (JSON, b"[[1, 1e39]]", "instance 1, value 2: 1e.39 is infinite or does not fit"),
        (JSON, b"[[1, Infinity]]", "instance 1, value 2: inf is infinite"),
        (JSON, b"[[1], [1e999999]]", "instance 2, value 1: inf is infinite"),
        (JSON, b"[[1], [" + b"9" * 400 + b"]]", "instance 2, value 1: 9999"),
        (JSON, b"[[1], [null, null]]", "instance 2: record has no values"),
        (JSON, b"[[1], []]", "instance 2: record has no values"),
        (JSON, b"[[1], 2]", "instance 2: expected an array of numbers, got int"),
        (JSON, b'{"instances": []}', "no records"),
        (JSON, b"", "request body: the body is empty; send"),
        (JSON, b"\n \t\n", "request body: the body is empty; send"),
        (f"{JSON}; charset=utf-16", "".encode("utf-16"), "the body is empty"),
        (JSON, b'{"rows": [[1]]}', 'expected {"instances"'),
        (JSONLINES, b"[1]\n\n[2]\n", "line 2, column 1: blank line"),
        (JSONLINES, b"[1]\n[2,]\n", "line 2, column 4: invalid JSON"),
        (JSONLINES, b'[1]\n[2, "a"]\n', "line 2, value 2: not a number"),
        (JSONLINES, b"", "no records"),
    ],
)
def test_json_errors_name_the_record_and_value(content_type, body, message):
    with pytest.raises(UserError, match=message):
        decode_request(body, content_type)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/octet-stream", "application/x-npy", "csv"]
)
def test_unsupported_content_type_is_415(content_type):
    with pytest.raises(UnsupportedContentType, match="send one of text/csv") as caught:
        check_content_type(content_type)
    assert caught.value.status == 415
    with pytest.raises(UnsupportedContentType):
        decode_request(b"1,2", content_type)


def test_unknown_charset_is_415():
    with pytest.raises(UnsupportedContentType, match="charset 'klingon'"):
        check_content_type("text/csv; charset=klingon")


@pytest.mark.parametrize(
    ("accept", "media_type", "output"),
    [
        (None, CSV, "features"),
        ("", CSV, "features"),
        ("*/*", CSV, "features"),
        ("*", CSV, "features"),
        ("text/*", CSV, "features"),
        ("application/*", JSON, "features"),
        ("application/json", JSON, "features"),
        ("APPLICATION/JSONLINES", JSONLINES, "features"),
        ("text/csv;q=0.5, application/json", JSON, "features"),
        ("application/json;q=0.2, application/jsonlines;q=0.9, */*;q=0.1", JSONLINES, "features"),
        ("text/csv;q=0, */*", JSON, "features"),  # the specific range overrides */*
        ("application/json, text/csv", JSON, "features"),  # equal q: first listed
        ("*/*, application/jsonlines", JSONLINES, "features"),  # equal q: more specific
        ("image/png, text/csv;q=0.1", CSV, "features"),
        ("application/json; output=labels", JSON, "labels"),
        ('text/csv; output="Distances"', CSV, "distances"),
        ("*/*;output=labels", CSV, "labels"),
        ("text/csv; charset=utf-8", CSV, "features"),
    ],
)
def test_accept_negotiation(accept, media_type, output):
    assert negotiate(accept) == ResponseChoice(media_type, output)


def test_output_default_comes_from_the_caller_and_accept_overrides_it():
    assert negotiate(None, "labels") == ResponseChoice(CSV, "labels")
    assert negotiate("application/json", "distances").output == "distances"
    assert negotiate("text/csv;output=features", "labels").output == "features"


@pytest.mark.parametrize(
    ("accept", "message"),
    [
        ("image/png", "cannot answer Accept 'image/png'; accept one of text/csv"),
        ("text/csv;q=0", "cannot answer"),
        ("text/html, application/xml;q=0.9", "cannot answer"),
        ("text/csv;q=high", "invalid q='high'"),
        ("text/csv;q=2", "invalid q='2'"),
        ("text/csv;output=everything", "unknown output='everything'.*features, labels, distances"),
    ],
)
def test_unacceptable_is_406(accept, message):
    with pytest.raises(NotAcceptable, match=message) as caught:
        negotiate(accept)
    assert caught.value.status == 406


LABELS = np.array([2, 0, 1])
VALUES = np.array([[0.1, -2.5e-7, 3.0], [1e20, 0.0, -1.0], [1 / 3, 2 / 3, 7.0]], dtype=np.float32)


def test_csv_response_is_the_cli_format():
    body = encode_response(LABELS, VALUES, ResponseChoice(CSV, "features"))
    assert body.decode() == format_csv(LABELS, VALUES)
    assert encode_response(LABELS, None, ResponseChoice(CSV, "labels")) == b"2\n0\n1\n"


def test_json_and_json_lines_responses_round_trip_float32():
    body = encode_response(LABELS, VALUES, ResponseChoice(JSON, "distances"))
    records = json.loads(body)["predictions"]
    assert [r["label"] for r in records] == [2, 0, 1]
    np.testing.assert_array_equal(np.array([r["distances"] for r in records], np.float32), VALUES)

    lines = encode_response(LABELS, VALUES, ResponseChoice(JSONLINES, "features")).decode()
    assert lines.endswith("\n") and lines.count("\n") == 3
    records = [json.loads(line) for line in lines.splitlines()]
    np.testing.assert_array_equal(np.array([r["features"] for r in records], np.float32), VALUES)


def test_labels_only_responses():
    assert json.loads(encode_response(LABELS, None, ResponseChoice(JSON, "labels"))) == {
        "predictions": [{"label": 2}, {"label": 0}, {"label": 1}]
    }
    body = encode_response(LABELS, None, ResponseChoice(JSONLINES, "labels"))
    assert body == b'{"label": 2}\n{"label": 0}\n{"label": 1}\n'
