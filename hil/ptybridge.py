"""Virtual serial line: two pty pairs bridged by a thread that emulates RS-485 line timing.

A pty delivers bytes at once; a real 9600-baud line does not. The bridge holds every chunk until
it would have finished arriving on the wire (``bytes x bits_per_char / baud``), shares one
``next_free`` time between both directions (half duplex: one talker at a time) and keeps the
3.5-character silent interval between frames (1.75 ms above 19200 baud). Latency measured through
the bridge therefore means something.

Side A is the agent's port (``path_a``, optionally a stable symlink ``link_a``), side B the
simulated devices' port. Hooks let the rig watch and damage traffic:

- ``tap(direction, t_done, data)``: called with ``time.monotonic()`` when a chunk is delivered
  (the frame is complete on the virtual wire); ``direction`` is ``"a->b"`` or ``"b->a"``.
- ``mutate(direction, data) -> bytes | None``: may corrupt, truncate or drop (``None``) a chunk.
- ``vanish()`` / ``restore()``: the agent's side disappears like an unplugged USB adapter (the
  client sees a hang-up) and later comes back under the same ``link_a`` name.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable

from drivers.linetime import LineTiming

Tap = Callable[[str, float, bytes], None]
Mutate = Callable[[str, bytes], bytes | None]


LineSettings = LineTiming
"""The line the bridge emulates: the drivers' own line-time model (one arithmetic for the agent's
reaction bound and the virtual wire it is measured on)."""


def _open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class PtyBridge:
    """Bridge two ptys with line timing; use as a context manager or ``start()``/``close()``."""

    def __init__(
        self,
        line: LineSettings | None = None,
        *,
        link_a: str | None = None,
        timing: bool = True,
        tap: Tap | None = None,
        mutate: Mutate | None = None,
    ) -> None:
        self.line = line or LineSettings()
        self.timing = timing
        self.tap = tap
        self.mutate = mutate
        self.link_a = link_a
        self._m_a, self._s_a, self._path_a = _open_pty()
        self._m_b, self._s_b, self.path_b = _open_pty()
        self._lock = threading.Lock()
        self._vanished = False
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="ptybridge", daemon=True)
        self._next_free = 0.0
        self._update_link()

    # --- public ----------------------------------------------------------------------------

    @property
    def path_a(self) -> str:
        """Path the agent opens: the stable symlink when one was asked for."""
        return self.link_a or self._path_a

    def start(self) -> PtyBridge:
        self._thread.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in (self._m_a, self._s_a, self._m_b, self._s_b, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link_a:
            with contextlib.suppress(OSError):
                os.unlink(self.link_a)

    def __enter__(self) -> PtyBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vanish(self) -> None:
        """Unplug the agent's side: close its pty so the open port hangs up, remove the link."""
        with self._lock:
            if self._vanished:
                return
            self._vanished = True
            for fd in (self._m_a, self._s_a):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self.link_a:
                with contextlib.suppress(OSError):
                    os.unlink(self.link_a)
        self._wake()

    def restore(self) -> None:
        """Plug the agent's side back in: a new pty under the same link name."""
        with self._lock:
            if not self._vanished:
                return
            self._m_a, self._s_a, self._path_a = _open_pty()
            self._vanished = False
            self._update_link()
        self._wake()

    # --- internals -------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"w")

    def _update_link(self) -> None:
        if not self.link_a:
            return
        tmp = f"{self.link_a}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(self._path_a, tmp)
        os.replace(tmp, self.link_a)

    def _run(self) -> None:
        while True:
            with self._lock:
                fds = [self._stop_r, self._m_b] + ([] if self._vanished else [self._m_a])
            try:
                ready = select.select(fds, [], [], 1.0)[0]
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if self._stop_r in ready:
                if os.read(self._stop_r, 64).endswith(b"x"):
                    return
                continue
            for fd in ready:
                self._forward(fd)

    def _forward(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            time.sleep(0.005)  # other side closed or reopening the port: EIO until it returns
            return
        if not data:
            return
        direction = "a->b" if fd == self._m_a else "b->a"
        if self.timing:
            start = max(time.monotonic(), self._next_free)
            done = start + self.line.frame_time(len(data))
            _sleep_until(done)
            self._next_free = done + self.line.gap()
        if self.mutate is not None:
            mutated = self.mutate(direction, data)
            if mutated is None:
                return
            data = mutated
        target = self._m_b if direction == "a->b" else self._m_a
        with self._lock:
            if direction == "b->a" and self._vanished:
                return
            with contextlib.suppress(OSError):
                os.write(target, data)
        if self.tap is not None:
            self.tap(direction, time.monotonic(), data)


def _sleep_until(deadline: float) -> None:
    """Sleep until ``deadline``; no spinning, which would starve the simulators of the GIL."""
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)
