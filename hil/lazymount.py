"""Mount ``hil.lazyfs`` over a directory, cut its power, mount it again.

A cut is what power loss does to the agent's state directory: the agent is gone (SIGKILL, by the
caller) and every write that was not fsynced is gone (the file system process is SIGKILLed and
unmounted, so its memory and the kernel's page cache of the mount go with it). Mounting again
shows what the "disk" (the backing directory) kept.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def fuse_missing() -> str | None:
    """Why a LazyFS mount cannot work here, or None (``make test`` installs fuse3)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fusermount3 not found (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse3: {exc}"
    return None


class LazyMount:
    """``hil.lazyfs`` at ``mountpoint`` over ``backing``; ``cut()`` then ``mount()`` again."""

    def __init__(self, backing: Path, mountpoint: Path, *, fsync_delay_ms: float = 0.0,
                 log: Path | None = None) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.fsync_delay_ms = fsync_delay_ms
        self.log = log or backing.with_name(backing.name + "-lazyfs.log")
        self.cuts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def mount(self, timeout_s: float = 10.0) -> None:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "hil.lazyfs", str(self.backing), str(self.mountpoint),
                 "--fsync-delay-ms", str(self.fsync_delay_ms)],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not self.mounted():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lazyfs did not mount {self.mountpoint} (see {self.log})")
            time.sleep(0.02)

    def cut(self) -> None:
        """Power loss: unsynced data is gone. The agent must already be dead (SIGKILL)."""
        self.cuts += 1
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(5)
            self._proc = None
        self._unmount()

    def unmount(self) -> None:
        """Clean unmount (what was not fsynced is still lost: that is the point)."""
        if self._proc is not None:
            self._unmount()
            self._proc.wait(5)
            self._proc = None

    def mounted(self) -> bool:
        """In the mount table (a dead FUSE process leaves it there, unreadable)."""
        target = os.path.realpath(self.mountpoint)
        with open("/proc/self/mounts") as fh:
            return any(line.split()[1] == target for line in fh)

    def _unmount(self) -> None:
        for _ in range(50):
            if not self.mounted():
                return
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)],
                           capture_output=True, check=False)
            time.sleep(0.05)
        raise RuntimeError(f"cannot unmount {self.mountpoint}")
