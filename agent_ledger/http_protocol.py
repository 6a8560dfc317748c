"""The HTTP/1.1 protocol ``agent-ledger serve`` runs: uvicorn's httptools protocol (the C parser,
llhttp), except that a request it cannot parse is answered with a problem document.

uvicorn refuses a malformed request (a NUL or another control character in a header, a broken
request line) before any application code runs, with a plain-text 400. Every other refusal of
this service is ``application/problem+json`` with a ``code``, and clients may rely on that, so
this one is too.

This service ran on h11 before, whose pure-Python parsing and writing took about a sixth of the
CPU of a charge. Where h11 refused what llhttp would take, this protocol refuses it too (the same
problem): a request head beyond h11's 16 KiB, an HTTP/1.1 request without a Host header, a
request with two. llhttp is stricter than h11 elsewhere, each refusal the same problem: lines
ended by a bare LF, any control character in a header value, folded header lines, a body
given both a Content-Length and a Transfer-Encoding, an HTTP version it does not know. And the
``Connection: close`` uvicorn adds to an answer is written ``connection: close`` now.
"""

from __future__ import annotations

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "ProblemHttpToolsProtocol"]

# h11's default bound on a request line and headers still incomplete (the 16 KiB it refused
# beyond); counted here as the parser hands them over.
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
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_RESPONSE)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1"):
            raise Unreadable("an HTTP/1.1 request names its Host once")
        super().on_headers_complete()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise Unreadable(f"the request head is larger than {MAX_HEAD_BYTES} bytes")
