"""The HTTP/1.1 protocol ``agent-ledger serve`` runs: uvicorn's httptools protocol (the C parser,
llhttp), except that a request it cannot parse is answered with a problem document.

uvicorn refuses a malformed request (a NUL or another control character in a header, a broken
request line) before any application code runs, with a plain-text 400. Every other refusal of
this service is ``application/problem+json`` with a ``code``, and clients may rely on that, so
this one is too.

This service ran on h11 before, whose pure-Python parsing and writing took about a sixth of the
CPU of a charge. Where h11 refused what llhttp would take, this protocol refuses it too (the same
problem): a request head still incomplete after 16 KiB, an HTTP/1.1 request without a Host
header, a request with two. llhttp is stricter than h11 elsewhere, each refusal the same
problem: lines ended by a bare LF, any control character in a header value, folded header
lines, a body given both a Content-Length and a Transfer-Encoding, an HTTP version it does not
know. Two answers differ in form only: the ``Connection: close`` uvicorn adds is written
``connection: close``, and a target in absolute form (``GET http://host/v1/me``) is routed by
its path (h11 passed the whole URL on as the path: a 404).
"""

from __future__ import annotations

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "ProblemHttpToolsProtocol"]

# h11's bound on the bytes of a request head received and not yet complete (its default
# max_incomplete_event_size). llhttp buffers a header until its end, however long.
MAX_HEAD_BYTES = 16 * 1024

_BODY = msgspec.json.encode(
    {
        "type": "https://agent-ledger.dev/problems/validation-error",
        "title": "Invalid request",
        "status": 400,
        "detail": "The HTTP request is malformed (for example, a header holds a control "
        "character such as NUL) and was not read.",
        "code": "validation-error",
    }
)
# The bytes h11 wrote for this answer: no Date or Server header, the connection closed after.
_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _BODY
)


class Unreadable(Exception):
    """Raised from a parser callback: httptools turns it into a parser error (the 400)."""


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    # Bytes received since the head being read began, and whether one is being read (between
    # a message's end and its successor's headers).
    _head_bytes = 0
    _reading_head = True

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_RESPONSE)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._reading_head
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self.send_400_response("the request head is too large")

    def on_headers_complete(self) -> None:
        hosts = [name for name, _ in self.headers].count(b"host")
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1"):
            raise Unreadable("an HTTP/1.1 request names its Host once")
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head, self._head_bytes = True, 0
        super().on_message_complete()
