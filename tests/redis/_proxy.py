"""A TCP proxy on loopback that can lose Redis's replies: the fault of a network that
delivers a command and then breaks before the answer comes back.

``async with ReplyDropper(upstream_port) as proxy:`` listens on ``proxy.port`` and
forwards every connection to the server. While ``proxy.dropping`` is true, whatever the
server sends back is thrown away and the client's connection is cut: the server did run
the command, the client cannot know. Runs on asyncio (the tests that use it do).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class ReplyDropper:
    """Forwards loopback connections to ``127.0.0.1:upstream``, losing replies on demand."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.dropping = False
        self.dropped = 0  # replies (chunks of them) thrown away
        self.lost = asyncio.Event()  # set at each reply thrown away
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ReplyDropper:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_all(self) -> None:
        """Break every open connection now (both ways)."""
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                return  # the server is down: the client sees its connection closed
            self._writers.add(up_writer)
            pumps = [
                asyncio.ensure_future(self._pump(reader, up_writer, replies=False)),
                asyncio.ensure_future(self._pump(up_reader, writer, replies=True)),
            ]
            try:
                # Either way closing ends the connection both ways.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                up_writer.close()
                self._writers.discard(up_writer)
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if replies and self.dropping:
                    self.dropped += 1
                    self.lost.set()
                    break  # the reply is lost, and so is the connection
                writer.write(data)
                await writer.drain()
        writer.close()
