"""Offline validation of an AWS API request against botocore's service model.

botocore's `ParamValidator` checks required members, types and minimums, but not enum
membership, string patterns or maximum lengths and counts; AWS rejects those only when the call is
made. `problems` runs both, so a request is known good before anything reaches AWS.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Mapping
from typing import Any

from cnn_kmeans.errors import UserError

# Java's Unicode property classes (`\p{L}`), used in the model's patterns; `re` has none.
_PROPERTY = re.compile(r"\\p\{([A-Za-z]+)\}")
_NUMBERS = ("integer", "long", "float", "double")


class InvalidRequest(UserError):
    """The request would be rejected by the API; the message lists every problem."""


def input_shape(operation: str, service: str = "sagemaker") -> Any:
    """The input shape of an operation, from the service model botocore ships (no network)."""
    try:  # imported here: only the spec needs botocore
        import botocore.session
    except ModuleNotFoundError:
        raise UserError(
            "validating the request needs botocore: pip install boto3 (in the dev extra)"
        ) from None
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(operation).input_shape


def problems(request: Mapping[str, Any], operation: str, service: str = "sagemaker") -> list[str]:
    """Everything wrong with `request` for `operation`: botocore's checks, then the skipped ones."""
    shape = input_shape(operation, service)
    from botocore.validate import ParamValidator  # there, since input_shape found botocore

    report = ParamValidator().validate(dict(request), shape)
    found = [report.generate_report()] if report.has_errors() else []
    return found + skipped_problems(request, shape)


def validate(request: Mapping[str, Any], operation: str, service: str = "sagemaker") -> None:
    """Raise InvalidRequest listing the problems, if any."""
    found = problems(request, operation, service)
    if found:
        raise InvalidRequest(f"invalid {operation} request:\n" + "\n".join(found))


def skipped_problems(value: Any, shape: Any, path: str = "") -> list[str]:
    """The checks botocore's validator skips: enum, pattern, max length/count/value.

    Walks `value` along `shape`; members the shape does not know are botocore's to report.
    """
    where = path or shape.name
    meta = shape.metadata
    found: list[str] = []
    if shape.type_name == "structure" and isinstance(value, Mapping):
        for name, member in value.items():
            if name in shape.members:
                found += skipped_problems(member, shape.members[name], f"{path}.{name}".lstrip("."))
    elif shape.type_name == "list" and isinstance(value, list | tuple):
        found += _too_many(where, len(value), meta)
        for i, item in enumerate(value):
            found += skipped_problems(item, shape.member, f"{where}[{i}]")
    elif shape.type_name == "map" and isinstance(value, Mapping):
        found += _too_many(where, len(value), meta)
        for key, item in value.items():
            found += skipped_problems(key, shape.key, f"{where} key {key!r}")
            found += skipped_problems(item, shape.value, f"{where}[{key!r}]")
    elif shape.type_name == "string" and isinstance(value, str):
        found += _string_problems(where, value, shape)
    elif (
        shape.type_name in _NUMBERS
        and isinstance(value, int | float)
        and value > meta.get("max", value)
    ):
        found.append(f"{where}: {value} is above the maximum {meta['max']}")
    return found


def _too_many(where: str, count: int, meta: Mapping[str, Any]) -> list[str]:
    if "max" in meta and count > meta["max"]:
        return [f"{where}: {count} entries, at most {meta['max']} allowed"]
    return []


def _string_problems(where: str, value: str, shape: Any) -> list[str]:
    found = []
    if shape.enum and value not in shape.enum:
        found.append(f"{where}: {_short(value)} is not one of the {len(shape.enum)} allowed values")
    limit = shape.metadata.get("max")
    if limit is not None and len(value) > limit:
        found.append(f"{where}: {len(value)} characters, at most {limit} allowed")
    pattern = shape.metadata.get("pattern")
    compiled = python_pattern(pattern) if pattern else None
    # AWS matches the whole value (Java's `matches`), hence fullmatch.
    if compiled is not None and not compiled.fullmatch(value):
        found.append(f"{where}: {_short(value)} does not match the pattern {pattern!r}")
    return found


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


@functools.cache
def python_pattern(java: str) -> re.Pattern[str] | None:
    """A Python regex equivalent to a service-model (Java) pattern; None when there is none.

    Only `\\p{X}` with a one-letter general category, inside a character class, needs
    translating (the patterns botocore ships use exactly that); anything else is left unchecked
    rather than checked wrongly.
    """
    out, inside, i = [], False, 0
    while i < len(java):
        match = _PROPERTY.match(java, i)
        if match:
            if not inside or len(match.group(1)) != 1:
                return None
            out.append(_category_class(match.group(1)))
            i = match.end()
            continue
        char = java[i]
        if char == "\\":
            out.append(java[i : i + 2])
            i += 2
            continue
        inside = (inside or char == "[") and not (inside and char == "]")
        out.append(char)
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:
        return None


@functools.cache
def _category_class(major: str) -> str:
    """Ranges (for inside `[...]`) of every code point whose general category starts with major."""
    ranges, start = [], None
    for code in range(sys.maxunicode + 2):
        member = code <= sys.maxunicode and unicodedata.category(chr(code))[0] == major
        if member and start is None:
            start = code
        elif not member and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{code - 1:08x}")
            start = None
    return "".join(ranges)
