"""Request bodies: read once, within the size limit, decoded (gzip, deflate), checked for their content
type, and, for multipart, parsed by the action's form into files and text fields or one client error
that names every problem: {"error": summary, "detail": [{loc, msg, received, type}]}. JSON is
validated by the action's own type (service/errors.py: parse_json).

Multipart bodies are parsed here, once, in memory (they are bounded by NNSERVE_MAX_BODY_BYTES): no
temporary file per upload. Every part must be one the endpoint declares, named, once unless the field
takes several, a file where a file goes and UTF-8 text where text goes; anything else is a 400 naming
the part, never a 500.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Receive

from service.errors import (
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
    field_error,
    invalid,
    invalid_request,
    received_value,
)
from service.protocol.context import Context
from service.tasks.base import Form

JSON, MULTIPART = "application/json", "multipart/form-data"


class ClientDisconnected(Exception):
    """The client hung up before its request was read: there is no one to answer."""


async def read_body(ctx: Context, receive: Receive, limit: int, decode: bool = True) -> bytes:
    """The whole body, decoded when its Content-Encoding is gzip or deflate (`decode`); 413 past `limit`
    (at once when Content-Length says so; decoded, past `limit` too), 415 for another encoding,
    ClientDisconnected when the client goes away first."""
    body = await _read(ctx, receive, limit)
    encoding = ctx.header(b"content-encoding").strip().lower()
    return decoded(body, encoding, limit) if decode and encoding not in ("", "identity") else body


async def _read(ctx: Context, receive: Receive, limit: int) -> bytes:
    length = ctx.header(b"content-length")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit, length)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit, f"more than {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip- or deflate-encoded body, inflated in bounded steps: a zip bomb stops at `limit`."""
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding {received_value(encoding)!r} is not supported: send gzip, deflate or none",
            [field_error(["header", "content-encoding"], "gzip, deflate or none", received_value(encoding),
                         "unsupported_encoding")],
        )  # fmt: skip
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)  # wbits: gzip, or zlib-wrapped deflate
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        detail = [field_error(["body"], f"{encoding}-encoded data", f"{len(body)} bytes: {e}", "encoding")]
        raise InvalidInput(f"the body is not valid {encoding} data", detail) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit, f"more than {limit} bytes once decoded")
    return out


def too_large(limit: int, received: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body over {limit} bytes (NNSERVE_MAX_BODY_BYTES)",
        [field_error(["body"], f"at most {limit} bytes", received, "too_large")],
    )


def check_media_type(ctx: Context, expected: str) -> str:
    """The request's content type, when it is `expected` (JSON routes also take none and, as FastAPI,
    any application/...+json); 415 otherwise."""
    content_type = ctx.header(b"content-type")
    media = content_type.split(";")[0].strip().lower()
    if media == expected or (expected == JSON and (media == "" or _json_suffix(media))):
        return content_type
    raise UnsupportedMediaType(
        f"this route takes {expected}",
        [field_error(["header", "content-type"], expected, content_type or None, "unsupported_media_type")],
    )


def _json_suffix(media: str) -> bool:
    return media.startswith("application/") and media.endswith("+json")


# --- multipart ----------------------------------------------------------------------------------------
@dataclass
class Part:
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)

    @property
    def params(self) -> dict[bytes, bytes]:
        return parse_options_header(self.disposition)[1]


class _TooManyParts(Exception):
    pass


class _Collect:
    """python_multipart's callbacks: each part's Content-Disposition and data, in order, up to
    `max_parts` (then parsing stops)."""

    def __init__(self, max_parts: int) -> None:
        self.parts: list[Part] = []
        self.header, self.ended, self.max_parts = b"", False, max_parts

    def on_part_begin(self) -> None:
        if len(self.parts) == self.max_parts:
            raise _TooManyParts
        self.parts.append(Part())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        if self.header.lower() == b"content-disposition":
            self.parts[-1].disposition += data[start:end]

    def on_header_end(self) -> None:
        self.header = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data += data[start:end]

    def on_end(self) -> None:
        self.ended = True


def split_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """The parts of a multipart body, in order; 400 when it is not well-formed multipart, or has more
    than `max_parts` parts (each would be one more problem to report: 200,000 empty parts in 12 MB
    took a worker's event loop 5 s and answered 24 MB)."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    collect, problem = _Collect(max_parts), "no boundary in the content type" if not boundary else "the body ends early"
    try:
        if boundary:
            parser = MultipartParser(boundary, {n: getattr(collect, n) for n in dir(collect) if n.startswith("on_")})
            parser.write(body)
            parser.finalize()
    except FormParserError as e:  # a broken body, a part's headers over the parser's limits, a boundary over 256
        problem = str(e)
    except _TooManyParts:
        detail = [field_error(["body"], f"at most {max_parts} parts", f"more than {max_parts}", "too_many_parts")]
        raise InvalidInput("too many parts", detail) from None
    if not collect.ended:
        expected = "a multipart/form-data body with the boundary its content type names (1 to 70 characters)"
        received = received_value(f"{problem} ({content_type})")
        raise InvalidInput("malformed multipart body", [field_error(["body"], expected, received, "multipart")])
    return collect.parts


def parse_form(body: bytes, content_type: str, form: Form) -> tuple[list[bytes], BaseModel]:
    """A multipart body -> the files, and the text fields validated. Every problem with any part (one
    the form does not take, of any content and any name; a part without a name; a text value where
    the file goes or a file where text goes; text that is not UTF-8; a value given twice) is named in
    one 400."""
    names = [form.file, *form.fields.model_fields]
    files: list[bytes] = []
    texts: dict[str, str] = {}
    problems: list[dict[str, Any]] = []
    # Room for every part the form takes, and for a few strays, each of them named in the answer.
    max_parts = (form.max_files if form.many else 1) + len(form.fields.model_fields) + 32
    for i, part in enumerate(split_multipart(body, content_type, max_parts)):
        raw = part.params.get(b"name")
        name = raw.decode("utf-8", "replace") if raw else None
        is_file = b"filename" in part.params
        if name == form.file and is_file:
            files.append(bytes(part.data))
        elif name == form.file:
            problems.append(field_error([name], "a file upload (with a filename)", _describe(part), "not_a_file"))
        elif name in texts:
            problems.append(field_error([name], "one value", "a second part of that name", "duplicate"))
        elif name in form.fields.model_fields and not is_file:
            try:
                texts[name] = _unquote(part.data.decode("utf-8").strip())
            except UnicodeDecodeError:
                problems.append(field_error([name], "UTF-8 text", _describe(part), "text_encoding"))
        else:
            where = [name] if name is not None else ["body", "part", i]
            problems.append(field_error(where, f"one of the form's fields {names}", _describe(part), "extra_forbidden"))
    if not files and not any(p["loc"] == [form.file] for p in problems):
        problems.append(field_error([form.file], "a file upload", None, "missing"))
    elif not form.many and len(files) > 1:
        problems.append(field_error([form.file], "one file upload", f"{len(files)} files", "duplicate"))
    elif form.many and len(files) > form.max_files:
        problems.append(field_error([form.file], f"1 to {form.max_files} photos", len(files), "batch_size"))
    try:
        values = form.fields.model_validate(texts)
    except ValidationError as e:
        problems += invalid(e, b"").detail
    if problems:
        raise invalid_request(problems)
    return files, values


def _describe(part: Part) -> str:
    filename = part.params.get(b"filename")
    if filename is not None:
        return f"a file upload ({filename.decode('utf-8', 'replace')[:80]}, {len(part.data)} bytes)"
    try:
        return received_value(part.data.decode("utf-8"))
    except UnicodeDecodeError:
        return f"{len(part.data)} bytes of binary data"


def _unquote(text: str) -> str:
    """BentoML's client sends each text field JSON-encoded: '"image-tagging"' is image-tagging."""
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        return decoded if isinstance(decoded, str) else text
    return text
