"""Reading a request: the body under its byte limit, the image's refusals as HTTP statuses, the feedback JSON.

Every refusal is an :class:`ApiError` (status, metrics reason, one-line message). A client that goes
away mid-body is counted as ``client_disconnected`` (499) and one cut off by the read deadline of
:mod:`src.serving.http` as ``read_timeout`` (408): neither is a server error. The bodies held at
once are bounded by a :class:`BodyBudget`: without it, 512 clients each sending 10 MB slowly would
hold 5 GB.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from src.core.errors import DataError
from src.core.limits import LIMITS
from src.serving.http import TIMED_OUT

MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around the file
MAX_FEEDBACK_BYTES = LIMITS.max_feedback_bytes


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a metrics ``reason`` and a one-line message."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason = status, reason


# why an image was refused (ImageRefused.kind) -> HTTP status and metrics reason
REFUSALS = {"empty": (400, "empty_body"), "format": (415, "not_an_image"), "too_large": (413, "decompression_bomb"),
            "aspect": (422, "bad_aspect_ratio"), "corrupt": (422, "corrupt_image")}


def classify(e: DataError) -> tuple[int, str]:
    """HTTP status and metrics reason for an image that could not be decoded."""
    return REFUSALS.get(getattr(e, "kind", "corrupt"), (422, "corrupt_image"))


class BodyBudget:
    """The bytes of request bodies held at once (being read, or waiting for their inference); past ``limit``
    a request gets 503 ``busy`` instead of the server's memory growing with the number of clients.
    Used from the event loop only, so a plain counter."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    @contextlib.contextmanager
    def hold(self):
        """A request's share, given back when the request ends."""
        held = _Held(self)
        try:
            yield held
        finally:
            self.used -= held.n


class _Held:
    def __init__(self, budget: BodyBudget):
        self.budget, self.n = budget, 0

    def take(self, n: int) -> None:
        b = self.budget
        if b.used + n > b.limit:
            raise ApiError(503, "busy", f"the server holds {b.used:,} bytes of uploads, near its "
                                        f"{b.limit:,}-byte limit; retry shortly")
        b.used += n
        self.n += n


async def read_body(request, limit: int, what: str, held: _Held | None = None) -> bytes:
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, "bad_request", "invalid Content-Length header")
        if int(length) > limit:
            raise ApiError(413, "too_large", f"{what} is {int(length):,} bytes, over the {limit:,}-byte limit")
        if held is not None:
            held.take(int(length))  # the parser never delivers more than Content-Length
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"{what} is over the {limit:,}-byte limit")
            if held is not None and length is None:
                held.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect as e:  # nobody reads the answer; counted, but not as a server error
        if request.scope.get(TIMED_OUT):
            raise ApiError(408, "read_timeout", f"the {what} did not arrive within the read timeout") from e
        raise ApiError(499, "client_disconnected", f"the client closed the connection during the {what}") from e
    return b"".join(chunks)


MAX_JSON_DEPTH = 32  # feedback is one flat object; deeper nesting is refused before parsing


def _json_depth(body: bytes) -> int:
    """The deepest ``[``/``{`` nesting of ``body`` outside strings, counted without parsing: json's own limit
    is the interpreter's recursion limit, which differs between Python builds and threads."""
    depth = deepest = 0
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_feedback(body: bytes) -> Any:
    if _json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_json", f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body)
    except RecursionError as e:  # json's C parser stops at the interpreter's recursion limit, safely
        raise ApiError(400, "bad_json", "malformed JSON: nested too deeply") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad_json", f"malformed JSON: {e}") from e


async def image_bytes(request, limit: int, held: _Held | None = None) -> bytes:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return await read_body(request, limit, "upload", held)
    from starlette.formparsers import MultiPartException, MultiPartParser

    body = await read_body(request, limit + MULTIPART_OVERHEAD, "upload", held)

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=8).parse()
    except MultiPartException as e:
        raise ApiError(400, "bad_multipart", f"malformed multipart upload: {e.message}") from e
    file = form.get("file")
    if file is None or isinstance(file, str):
        raise ApiError(400, "missing_file", "multipart upload needs the image in a field named 'file'")
    data = await file.read()
    if len(data) > limit:
        raise ApiError(413, "too_large", f"upload is {len(data):,} bytes, over the {limit:,}-byte limit")
    return data
