"""Content types of the inference server: request decoding, response encoding, Accept negotiation.

`REQUEST_CONTENT_TYPES` and `RESPONSE_CONTENT_TYPES` are the one declaration of what the server
speaks; the README table and the CreateAlgorithm spec derive from them. Decoded requests are
NaN-padded (N, L) float32 arrays, one row per input record, in input order.

An `application/json` body may hold several JSON documents, one per line: batch transform with
`SplitType=Line` and `BatchStrategy=MultiRecord` sends the lines of an input file, records split
"on a newline character boundary" (TransformInput.SplitType, SageMaker API reference), as one
body. Each document is then answered on its own line (`Batch.documents`), so that the `.out`
file of `AssembleWith=Line` ("a newline character at the end of every transformed record") keeps
one line per input line.
"""

from __future__ import annotations

import codecs as text_codecs
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from werkzeug.http import parse_list_header, parse_options_header

from cnn_kmeans.data import format_csv, pad_rows, parse_csv
from cnn_kmeans.errors import UserError
from cnn_kmeans.outputs import OUTPUT_CHOICES

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
REQUEST_CONTENT_TYPES = (CSV, JSON, JSONLINES)
RESPONSE_CONTENT_TYPES = (CSV, JSON, JSONLINES)  # in server preference order: CSV is the default

SOURCE = "request body"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_INT_DIGITS = 4000  # below sys.get_int_max_str_digits()'s default of 4300
_NUMBER_TYPES = (int, float, type(None))  # bool is excluded on purpose: it is not a number


class RequestError(UserError):
    """A request the server rejects; `status` is its HTTP status code."""

    status = 400


class PayloadTooLarge(RequestError):
    """The body is above the size limit."""

    status = 413


class ResponseTooLarge(RequestError):
    """The answer would be above the response size limit (the body was read whole)."""

    status = 413


class UnsupportedContentType(RequestError):
    """The Content-Type (or its charset) is not one the server decodes."""

    status = 415


class NotAcceptable(RequestError):
    """No acceptable response type, or an invalid `output` parameter."""

    status = 406


@dataclass(frozen=True)
class ResponseChoice:
    """What to answer with: a media type of RESPONSE_CONTENT_TYPES and an OUTPUT_CHOICES value."""

    media_type: str
    output: str


@dataclass(frozen=True)
class Batch:
    """A decoded request: raw series (N, L) float32, NaN for missing cells and padding.

    `documents` is the number of rows of each JSON document of a multi-document
    `application/json` body (one per line, as batch transform sends them), in order; None for
    any other body, which is answered as one document.
    """

    values: np.ndarray
    documents: tuple[int, ...] | None = None


# -- requests ------------------------------------------------------------------------------------


def decode_request(body: bytes, content_type: str | None) -> np.ndarray:
    """Decode a request body into raw series (N, L) float32, NaN for missing cells and padding.

    A missing Content-Type is read as CSV, SageMaker's default for batch transform.

    Raises:
        UnsupportedContentType: For a type or charset that is not supported (415).
        UserError: For a malformed body; the message names the line (or record) and column.
    """
    return decode_batch(body, content_type).values


def decode_batch(body: bytes, content_type: str | None) -> Batch:
    """`decode_request`, keeping the rows of each document of a multi-document JSON body."""
    media_type, charset = check_content_type(content_type)
    if media_type == CSV and charset == "utf-8":
        # UTF-8 bytes go to the parser as they are: it reports bad bytes by line and column.
        return Batch(parse_csv(body, source=SOURCE, skip_blank_lines=False))
    text = _text(body, charset)
    if media_type == JSON:
        return _decode_json(text)
    return Batch(_DECODERS[media_type](text))


def check_content_type(content_type: str | None) -> tuple[str, str]:
    """The media type and codec name (default UTF-8) of a Content-Type; no body is needed.

    Raises:
        UnsupportedContentType: For a type or charset that is not supported (415).
    """
    media_type, params = parse_options_header(content_type or CSV)
    media_type = media_type.strip().lower()
    if media_type not in REQUEST_CONTENT_TYPES:
        raise UnsupportedContentType(
            f"unsupported Content-Type {content_type!r}; send one of "
            f"{', '.join(REQUEST_CONTENT_TYPES)}"
        )
    charset = params.get("charset", "utf-8")
    try:
        name = text_codecs.lookup(charset).name
        # Bytes-to-bytes codecs (base64, rot13, zlib) are no text encodings: bytes.decode refuses
        # them with LookupError (but not for b""); `undefined` and `idna` refuse any text.
        b"0".decode(name, "ignore")
        return media_type, name
    except (LookupError, UnicodeError):
        raise UnsupportedContentType(
            f"unsupported charset {charset!r}; send UTF-8 (charset=utf-8)"
        ) from None


def _text(body: bytes, codec: str) -> str:
    """body decoded with codec; bad bytes are reported by line and column."""
    if codec == "utf-8" and body.startswith(text_codecs.BOM_UTF8):
        # A leading BOM is not part of the data. Stripped here rather than with utf-8-sig, whose
        # error positions do not count the BOM (they sliced it and made a 500 of a bad byte).
        body = body[len(text_codecs.BOM_UTF8) :]
    try:
        return body.decode(codec)
    except UnicodeDecodeError as error:
        # Valid up to the bad byte; "replace" all the same, so reporting can never raise.
        prefix = body[: error.start].decode(codec, "replace")
        line = prefix.count("\n") + 1
        column = prefix[prefix.rfind("\n") + 1 :].count(",") + 1
        raise UserError(
            f"{SOURCE}: line {line}, column {column}: invalid {codec} data "
            f"(byte 0x{body[error.start]:02x}); send text in the declared charset"
        ) from None
    except UnicodeError as error:  # codecs like punycode fail without naming a position
        raise UserError(
            f"{SOURCE}: cannot decode the body as {codec} ({error}); send text in the declared "
            "charset"
        ) from None


_JSON_SPACE = re.compile(r"[ \t\r\n]*")


def _decode_json(text: str) -> Batch:
    """One JSON document, or several, one per line (batch transform's MultiRecord)."""
    if not text.strip(" \t\r\n"):  # JSON's whitespace only: json would say "Expecting value"
        raise UserError(
            f'{SOURCE}: the body is empty; send {{"instances": [[...], ...]}} or a list of '
            "lists of numbers, one series per inner list"
        )
    documents = _json_documents(text)
    if len(documents) == 1:
        return Batch(_instances(documents[0][0], SOURCE))
    arrays = [_instances(document, f"{SOURCE}: line {line}") for document, line in documents]
    width = max(array.shape[1] for array in arrays)
    values = np.full((sum(len(array) for array in arrays), width), np.nan, dtype=np.float32)
    row = 0
    for array in arrays:
        values[row : row + len(array), : array.shape[1]] = array
        row += len(array)
    return Batch(values, tuple(len(array) for array in arrays))


def _json_documents(text: str) -> list[tuple[Any, int]]:
    """The JSON documents of text with the line each starts on; each further one on a new line.

    A blank line between documents is an error, as in CSV and JSON Lines bodies: skipping it
    would misalign output lines with input lines.
    """
    decoder = json.JSONDecoder(parse_int=_parse_int)
    documents: list[tuple[Any, int]] = []
    position, line = _JSON_SPACE.match(text).end(), 1
    line += text.count("\n", 0, position)
    while True:
        try:
            document, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{SOURCE}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
            ) from None
        except RecursionError:
            raise UserError(f"{SOURCE}: line {line}: invalid JSON: nested too deeply") from None
        documents.append((document, line))
        line += text.count("\n", position, end)
        position = _JSON_SPACE.match(text, end).end()
        if position == len(text):
            return documents
        gap = text.count("\n", end, position)
        if gap == 0:
            column = end - text.rfind("\n", 0, end)
            raise UserError(
                f"{SOURCE}: line {line}, column {column}: invalid JSON: more data after the "
                "document; send one JSON document, or one per line"
            )
        if gap > 1:
            raise UserError(
                f"{SOURCE}: line {line + 1}, column 1: blank line; remove it, every line must "
                "hold one JSON document so output lines match input lines"
            )
        line += gap


def _instances(document: Any, where: str) -> np.ndarray:
    """The series of one JSON request document as NaN-padded (N, L) float32."""
    if isinstance(document, dict) and "instances" in document:
        document = document["instances"]
    if not isinstance(document, list):
        raise UserError(
            f'{where}: expected {{"instances": [[...], ...]}} or a list of lists of numbers '
            "(for one series per line, send application/jsonlines)"
        )
    return _to_array(document, "instance", where)


def _decode_jsonlines(text: str) -> np.ndarray:
    lines = text.split("\n")
    if lines[-1].strip() == "":
        lines.pop()  # the final newline ends the last record
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise UserError(
                f"{SOURCE}: line {number}, column 1: blank line; remove it, every line must hold "
                "one series so output rows match input rows"
            )
        records.append(_load_json(line, f"{SOURCE}: line {number}"))
    return _to_array(records, "line")


_DECODERS: dict[str, Callable[[str], np.ndarray]] = {
    CSV: lambda text: parse_csv(text, source=SOURCE, skip_blank_lines=False),
    JSONLINES: _decode_jsonlines,
}


def _load_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as error:
        at = f"{where}: line {error.lineno}" if where == SOURCE else where
        raise UserError(f"{at}, column {error.colno}: invalid JSON: {error.msg}") from None
    except RecursionError:
        raise UserError(f"{where}: invalid JSON: nested too deeply") from None


def _parse_int(text: str) -> int | float:
    # int() refuses more than 4300 digits (a ValueError, so a 500); as a float such a number is
    # infinite and is then reported by record and value like any other too-large number.
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def _to_array(records: list, unit: str, source: str = SOURCE) -> np.ndarray:
    """Validate JSON records into NaN-padded (N, L) float32; errors name the `unit` and value.

    A record is an array of numbers (null for missing) or SageMaker's `{"features": [...]}`.
    """
    if not records:
        raise UserError(f"{source}: no records; send at least one series")
    arrays = []
    for i, row in enumerate(records, 1):
        where = f"{source}: {unit} {i}"
        if isinstance(row, dict) and isinstance(row.get("features"), list):
            row = row["features"]
        if not isinstance(row, list):
            raise UserError(f"{where}: expected an array of numbers, got {type(row).__name__}")
        if not all(type(value) in _NUMBER_TYPES for value in row):
            j = next(j for j, v in enumerate(row) if type(v) not in _NUMBER_TYPES)
            raise UserError(
                f"{where}, value {j + 1}: not a number: {json.dumps(row[j])[:40]}; "
                "write numbers, and null for a missing value"
            )
        try:
            values = np.array(row, dtype=np.float64)  # None becomes NaN: a missing value
        except OverflowError:  # an integer beyond float64: report it like any too-large value
            values = np.array(
                [np.inf if type(v) is int and abs(v) > 1e300 else v for v in row],
                dtype=np.float64,  # as above, None becomes NaN (without it: an object array)
            )
        bad = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)
        if bad.size:
            raise UserError(
                f"{where}, value {bad[0] + 1}: {str(row[bad[0]])[:40]} is infinite or does not "
                "fit in float32 (magnitude above 3.4e38); send finite numbers of smaller magnitude"
            )
        if np.isnan(values).all():
            raise UserError(
                f"{where}: record has no values (empty, or every value is null); "
                "remove it or put at least one number in it"
            )
        arrays.append(values.astype(np.float32))
    return pad_rows(arrays)


# -- responses -----------------------------------------------------------------------------------


def negotiate(accept: str | None, default_output: str = "features") -> ResponseChoice:
    """Choose the response type from an Accept header (q-values honoured) and the output choice.

    A missing or empty header, or `*/*`, gives CSV. Among acceptable types the highest q wins, then
    the more specific range, then the one listed first. The chosen range's `output` parameter
    overrides `default_output`.

    Raises:
        NotAcceptable: If no supported type is acceptable or `output` is not a known choice (406).
    """
    if not accept or not accept.strip():
        return ResponseChoice(CSV, default_output)
    ranges = []
    for index, item in enumerate(parse_list_header(accept)):
        media_range, params = parse_options_header(item)
        media_range = media_range.strip().lower()
        media_range = "*/*" if media_range == "*" else media_range
        ranges.append((media_range, params, _quality(params.get("q", "1"), accept), index))
    best = None
    for preference, media_type in enumerate(RESPONSE_CONTENT_TYPES):
        matching = [r for r in ranges if _matches(r[0], media_type)]
        if not matching:
            continue
        # The most specific range that matches decides (text/csv;q=0 overrides */*).
        media_range, params, quality, index = max(matching, key=lambda r: (_specific(r[0]), -r[3]))
        key = (quality, _specific(media_range), -index, -preference)
        if quality > 0 and (best is None or key > best[0]):
            best = (key, media_type, params)
    if best is None:
        raise NotAcceptable(
            f"cannot answer Accept {accept!r}; accept one of {', '.join(RESPONSE_CONTENT_TYPES)}"
        )
    _, media_type, params = best
    output = params.get("output", default_output).strip().lower()
    if output not in OUTPUT_CHOICES:
        raise NotAcceptable(
            f"unknown output={output!r} in Accept; use one of {', '.join(OUTPUT_CHOICES)}"
        )
    return ResponseChoice(media_type, output)


def _quality(text: str, accept: str) -> float:
    try:
        quality = float(text)
    except ValueError:
        quality = -1.0
    if not 0.0 <= quality <= 1.0:
        raise NotAcceptable(f"invalid q={text!r} in Accept {accept!r}; use a number in 0-1")
    return quality


def _matches(media_range: str, media_type: str) -> bool:
    kind = media_type.split("/")[0]
    return media_range in (media_type, f"{kind}/*", "*/*")


def _specific(media_range: str) -> int:
    return 2 - media_range.count("*")


def encode_response(
    labels: np.ndarray,
    values: np.ndarray | None,
    choice: ResponseChoice,
    documents: tuple[int, ...] | None = None,
) -> bytes:
    """One record per row, in order: the label and, unless values is None, the values.

    Args:
        labels: (N,) integer cluster labels.
        values: (N, D) features or (N, k) distances, named by `choice.output`; None for labels.
        choice: the negotiated media type and output.
        documents: rows per request document (`Batch.documents`): a JSON answer is then one
            `{"predictions": [...]}` line per document. CSV and JSON Lines answers are one line
            per row whatever the documents.
    """
    if choice.media_type == CSV:
        return format_csv(labels, values).encode()
    if values is None:
        records = [f'{{"label": {label}}}' for label in np.asarray(labels).tolist()]
    else:
        # As in CSV, %.9g round-trips float32; for finite values it is also a valid JSON number.
        numbers = ",".join(["%.9g"] * values.shape[1])
        template = f'{{"label": %d, "{choice.output}": [{numbers}]}}'
        rows = np.asarray(values, dtype=np.float32).tolist()
        records = [
            template % (label, *row)
            for label, row in zip(np.asarray(labels).tolist(), rows, strict=True)
        ]
    if choice.media_type == JSON:
        bounds = np.cumsum((0, *(documents or (len(records),)))).tolist()
        return "".join(
            '{"predictions": [' + ", ".join(records[start:end]) + "]}\n"
            for start, end in itertools.pairwise(bounds)
        ).encode()
    return "".join(record + "\n" for record in records).encode()
