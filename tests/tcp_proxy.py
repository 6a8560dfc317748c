"""A TCP proxy between the service and Postgres that a test can freeze, thaw and cut.

Frozen, it accepts connections and reads what either side sends but forwards nothing: to the
service the database looks alive and silent, as a stopped or partitioned server does. Cut, it
drops every open connection at once, mid-transaction or not, as a network failure does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

__all__ = ["TcpProxy", "tcp_proxy"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def stop(self) -> None:
        self._call(self._stop)
        self._thread.join(10)

    def freeze(self) -> None:
        self._call(self._open.clear)

    def thaw(self) -> None:
        self._call(self._open.set)

    def cut(self) -> None:
        """Abort every connection open now (new ones are accepted as usual)."""
        self._call(self._cut)

    def connections(self) -> int:
        return len(self._writers)

    def _call(self, function: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                function()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the proxy's loop did not answer")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    def _stop(self) -> None:
        self._cut()
        self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        await self._open.wait()
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.transport.abort()
            return
        self._writers.update((client_out, server_out))
        await asyncio.gather(
            self._pipe(client_in, server_out, client_out),
            self._pipe(server_in, client_out, server_out),
            return_exceptions=True,
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, own: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await source.read(65536):
                await self._open.wait()
                if sink.transport.is_closing():
                    break
                sink.write(data)
                await sink.drain()
        finally:
            for writer in (sink, own):
                self._writers.discard(writer)
                writer.transport.abort()


@contextlib.contextmanager
def tcp_proxy(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
