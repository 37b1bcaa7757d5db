"""The Flask app of the inference server: routes, the request size limit, errors to status codes.

The inference itself lives in `inference` (SageMaker's handler shape); this module only routes.
Every caller-fixable problem is a `UserError` and becomes a 4xx with its message; anything else
is a bug and becomes a 500 with a generic body, the traceback going to the log only.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import IO

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from cnn_kmeans.container import inference
from cnn_kmeans.container.codecs import (
    PayloadTooLarge,
    RequestError,
    ResponseTooLarge,
    check_content_type,
    negotiate,
)
from cnn_kmeans.container.environment import (
    DEFAULT_MAX_PAYLOAD_MB,
    MAX_RESPONSE_ENV,
    ServingSettings,
)
from cnn_kmeans.container.worker import InferenceGate
from cnn_kmeans.errors import UserError
from cnn_kmeans.model import CNNKMeans

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# After a 413 is sent, the rest of the body is read and discarded (never kept), within these
# bounds, so that a client still sending gets the 413 rather than a connection reset.
_DRAIN_BYTES = 128 << 20
_DRAIN_SECONDS = 5.0


class BodyTimeout(RequestError):
    """The client stopped sending the body it announced."""

    status = 408


def create_app(
    model: CNNKMeans, settings: ServingSettings, gate: InferenceGate | None = None
) -> Flask:
    """The WSGI app serving `model` with the limits and defaults of `settings`.

    `gate` is the worker's (`InferenceWorker.gate`): one inference at a time, while other
    threads answer `/ping`. Without one (tests, other servers) the app makes its own.
    """
    app = Flask(__name__)
    limit = settings.max_payload_bytes
    gate = gate or InferenceGate()
    parameters = {
        "MaxConcurrentTransforms": settings.workers,
        "BatchStrategy": "MULTI_RECORD",
        # What we advise batch transform to send, never above what we accept.
        "MaxPayloadInMB": max(1, min(int(DEFAULT_MAX_PAYLOAD_MB), int(settings.max_payload_mb))),
    }

    @app.get("/ping")
    def ping() -> Response:
        # The app exists only once the model is loaded, so answering is the health check.
        return Response(b"", status=200, mimetype="text/plain")

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return Response(json.dumps(parameters), mimetype="application/json")

    @app.post("/invocations")
    def invocations() -> Response:
        accept = request.headers.get("Accept")
        content_type = request.headers.get("Content-Type")
        # Headers are checked before the body is read: a wrong request costs no upload.
        negotiate(accept, settings.output)
        check_content_type(content_type)
        # The body is read outside the gate: a slow upload does not hold up inference. A client
        # that stops sending holds this thread for `timeout` seconds at most (then a 408).
        sock = request.environ.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(settings.timeout)
        try:
            body = _read_body(request.content_length, request.stream, limit)
        except TimeoutError:
            raise BodyTimeout(
                f"the request body stopped arriving (nothing for {settings.timeout} s); "
                "send the whole body at once"
            ) from None
        payload, media_type, rows = gate.run(_infer, body, content_type, accept)
        _check_response(len(payload), rows, settings.max_response_bytes)
        return Response(payload, mimetype=media_type)

    def _infer(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str, int]:
        """Decode, predict, encode: the CPU/GPU work, on the worker's inference thread."""
        data = inference.input_fn(body, content_type)
        prediction = inference.predict_fn(data, model)
        payload, media_type = inference.output_fn(prediction, accept, settings.output)
        return payload, media_type, len(prediction.labels)

    @app.errorhandler(UserError)
    def user_error(error: UserError) -> Response:
        status = getattr(error, "status", 400)
        log.info("%s %s: %d %s", request.method, request.path, status, error)
        return _error(status, str(error))

    @app.errorhandler(PayloadTooLarge)
    def too_large(error: PayloadTooLarge) -> Response:
        response = user_error(error)
        response.headers["Connection"] = "close"
        stream, sock = request.stream, request.environ.get("gunicorn.socket")
        response.call_on_close(lambda: _drain(stream, sock))
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return _error(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error in the cnn-kmeans model server; see the server log")

    return app


def _read_body(content_length: int | None, stream: IO[bytes], limit: int) -> bytes:
    """Read the request body, refusing it (413) as soon as it is known to exceed `limit` bytes.

    A declared Content-Length is checked before reading anything; a chunked body is counted while
    it is read, so at most `limit` + 1 MiB is ever held.
    """
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(_too_large(f"{content_length} bytes", limit))
    chunks, size = [], 0
    while chunk := stream.read(_CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(f"more than {limit} bytes", limit))
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> str:
    return (
        f"request body of {size} is above the limit of {limit} bytes "
        f"({limit / 2**20:g} MB); send fewer rows per request"
    )


def _check_response(size: int, rows: int, limit: int | None) -> None:
    """Refuse (413) an answer above the response limit, which SageMaker would not deliver."""
    if limit is None or size <= limit:
        return
    fitting = max(1, rows * limit // size)
    raise ResponseTooLarge(
        f"the response to these {rows} rows would be {size} bytes, above the limit of {limit} "
        f"bytes ({limit / 2**20:g} MB) of a real-time endpoint's answer; ask for the labels "
        f"only (Accept: text/csv;output=labels) or send fewer rows per request (about {fitting} "
        f"of these fit); {MAX_RESPONSE_ENV} sets the limit (0: none, for asynchronous endpoints)"
    )


def _drain(stream: IO[bytes], sock: socket.socket | None) -> None:
    """Discard what is left of a refused body, within bounds (after the response is sent)."""
    if sock is not None:
        sock.settimeout(_DRAIN_SECONDS)  # a client that sends nothing more must not hold us
    drained = 0
    try:
        while drained < _DRAIN_BYTES and (chunk := stream.read(_CHUNK)):
            drained += len(chunk)
    except (OSError, ValueError, HTTPException):  # the client closed, stalled or disconnected
        pass


def _error(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")
