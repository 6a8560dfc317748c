"""structlog setup and the one canonical log line per request.

Each record is written whole with one ``write`` call: with several worker processes sharing one
stderr (``serve --workers N``) and Python's output unbuffered (``PYTHONUNBUFFERED=1``, as in the
container image), ``print``'s two writes, the message and then its newline, let another process's
record land in between and two JSON objects merge into one line. One write of the whole line
keeps each record on its own line: atomically for lines up to the pipe buffer (4 KiB) on a pipe
and for any length on a file opened for appending. A longer record on a pipe or socket (a
traceback, say) goes out in pieces, so there every record is written under an exclusive
``flock`` on a lock file named after the pipe, which every process writing to it opens for
itself. Log records from the standard library (uvicorn, alembic) go through the same renderer
and writer.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LineWriter", "RequestLogMiddleware", "RequestObserver", "configure_logging"]

# route template (None when no route matched), method, status, seconds
RequestObserver = Callable[[str | None, str, int, float], None]

REQUEST_ID_HEADER = b"x-request-id"
# A caller-supplied request id is echoed into logs and responses, so keep it short and inert.
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _shared_stream_lock(fd: int) -> int | None:
    """A lock file for the pipe or socket behind ``fd``, opened by this process, or None.

    Named after the stream's device and inode, so every process that inherited the same stderr
    finds the same file; each opens its own descriptor, so their ``flock`` calls exclude each
    other. Files and terminals need none (appends are atomic; a terminal is read by a person).
    """
    try:
        info = os.fstat(fd)
        if not (stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode)):
            return None
        name = f"agent-ledger-log-{info.st_dev}-{info.st_ino}.lock"
        return os.open(os.path.join(tempfile.gettempdir(), name), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # no writable temp dir: records up to 4 KiB stay whole all the same
        return None


class LineWriter:
    """A structlog logger that writes each record as one line, whole, with one write call."""

    def __init__(self, file: IO[str] | None = None) -> None:
        self._file = file if file is not None else sys.stderr
        try:
            self._fd: int | None = self._file.fileno()
        except (AttributeError, OSError, ValueError):  # a capture buffer in tests, say
            self._fd = None
        self._lock = None if self._fd is None else _shared_stream_lock(self._fd)

    def msg(self, message: str) -> None:
        line = message + "\n"
        if self._fd is None:
            self._file.write(line)
            self._file.flush()
            return
        data = memoryview(line.encode("utf-8", "backslashreplace"))
        if self._lock is None:
            self._write(data)
            return
        # Short records take the lock too: an atomic small write could still land between two
        # pieces of another process's long one.
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._write(data)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _write(self, data: memoryview) -> None:
        assert self._fd is not None
        while data:  # a signal may interrupt a long write part-way; finish it
            data = data[os.write(self._fd, data) :]

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineWriterFactory:
    """structlog asks for a logger on every log call (loggers are not cached, so that tests can
    capture them): the writer is made once per stream, ``sys.stderr`` as it is at the call."""

    def __init__(self, file: IO[str] | None) -> None:
        self.file = file
        self._writer: LineWriter | None = None
        self._stream: IO[str] | None = None

    def __call__(self, *args: Any) -> LineWriter:
        stream = self.file if self.file is not None else sys.stderr
        if self._writer is None or stream is not self._stream:
            self._writer, self._stream = LineWriter(stream), stream
        return self._writer


class _StdlibHandler(logging.Handler):
    """Renders standard-library records like our own and writes them the same way."""

    def __init__(self, formatter: logging.Formatter, writer: LineWriter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(
    log_format: str = "auto", level: str = "INFO", file: IO[str] | None = None
) -> None:
    """structlog and the standard library's root logger, both rendering to ``file`` (stderr)."""
    stream = file if file is not None else sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        # Plain tracebacks: rich ones print local variables, request headers (keys!) among them.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering = [structlog.processors.format_exc_info, renderer] if use_json else [renderer]
    numeric_level = logging.getLevelNamesMapping().get(level, logging.INFO)
    structlog.configure(
        processors=[*shared, *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_LineWriterFactory(file),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(handler)
    root.addHandler(_StdlibHandler(formatter, LineWriter(file)))
    root.setLevel(numeric_level)


def _request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            if _REQUEST_ID_PATTERN.match(candidate):
                return candidate
            break
    return _new_request_id()


def _new_request_id() -> str:
    """What ``uuid.uuid4().hex`` returns (random, version 4, RFC 4122 variant), without building
    a UUID object on every request."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class RequestLogMiddleware:
    """Outermost ASGI layer: request id in and out, and one log line per HTTP request.

    It wraps Litestar's exception-handling router rather than sitting in the per-route middleware
    stack, so unknown routes and refused methods are logged too.
    """

    def __init__(self, app: ASGIApp, observe: RequestObserver | None = None) -> None:
        self.app = app
        self.log = structlog.get_logger("agent_ledger.access")
        # Told of every request as it is logged (the metrics), with the same figures.
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers  # type: ignore[typeddict-unknown-key]
            await send(message)

        # Every log line written while serving this request carries its id (set and reset by
        # token: bound_contextvars would copy the whole context twice to do the same).
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            seconds = time.perf_counter() - started
            if self.observe is not None:
                self.observe(scope.get("path_template"), scope["method"], status, seconds)
            principal = state.get("principal")
            self.log.info(
                "request",
                method=scope.get("method"),
                route=scope.get("path_template") or scope.get("path"),
                status=status,
                duration_ms=round(seconds * 1000, 2),
                request_id=request_id,
                key_id=getattr(principal, "key_id", None),
            )
