"""A TCP proxy between agent and broker that can black-hole traffic (a partition, no reset).

Why: killing the broker closes the socket, so the agent learns of it at once. A real partition
(a cut uplink, a NAT that forgot the flow) sends nothing at all: no FIN, no RST. Only the MQTT
keepalive can find that out. ``blackhole()`` keeps every connection open but forwards nothing in
either direction (bytes are read and dropped, as on a dead path); ``resume()`` forwards again for
new connections. Connections that were black-holed stay dead (their stream is broken anyway),
so the agent must reconnect, as it would have to after a real partition.
"""

from __future__ import annotations

import asyncio
import contextlib

from hil.broker import HOST


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = HOST
        self.port = 0
        self.holed = False
        self.rejecting = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def reject(self, on: bool = True) -> None:
        """Refuse new connections at once (the broker's port is closed)."""
        self.rejecting = on

    def blackhole(self) -> None:
        self.holed = True

    def resume(self) -> None:
        """Forward again, for new connections; the black-holed flows stay dead."""
        self.holed = False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.rejecting:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            if self.holed:  # during the partition nothing answers: read and drop
                while await reader.read(65536):
                    pass
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self.connections += 1
            self._writers.add(up_w)
            dead = {"flag": False}
            a = asyncio.create_task(self._pipe(reader, up_w, dead))
            b = asyncio.create_task(self._pipe(up_r, writer, dead))
            self._tasks.update((a, b))
            await asyncio.gather(a, b, return_exceptions=True)
            self._tasks.difference_update((a, b))
            self._writers.discard(up_w)
            with contextlib.suppress(Exception):
                up_w.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    dead: dict[str, bool]) -> None:
        """Forward until EOF; once black-holed, read and drop (no FIN, no RST passed on)."""
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if self.holed:
                    dead["flag"] = True  # this flow is broken for good, like a real partition
                if dead["flag"]:
                    continue
                dst.write(data)
                await dst.drain()
            if not dead["flag"]:
                with contextlib.suppress(Exception):
                    dst.write_eof()
