"""The HTTP/1.1 protocol ``agent-ledger serve`` runs: uvicorn's h11 protocol, except that a
request it cannot parse is answered with a problem document.

uvicorn refuses a malformed request (a NUL or another control character in a header, a broken
request line) before any application code runs, with a plain-text 400. Every other refusal of
this service is ``application/problem+json`` with a ``code``, and clients may rely on that, so
this one is too.
"""

from __future__ import annotations

import h11
import msgspec
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ProblemH11Protocol"]

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


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        # Same sequence as uvicorn's own, with a problem body; the connection is closed after.
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(_BODY)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=_BODY),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
