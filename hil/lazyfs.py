"""A FUSE file system that forgets what was not fsynced: power loss as storage engineers test it.

Modelled on LazyFS: file contents written through this mount are held in memory, page by page,
until the file is fsynced; only then do they reach the backing directory (the "disk"). Killing
this process (``cut``) discards every unsynced page, as a power cut discards the page cache. The
agent is then restarted on what the backing directory holds. Metadata (create, rename, unlink,
mkdir) reaches the backing directory at once: stricter for the ``write, fsync, rename`` pattern
(a rename that lands before its data would show up as a short file), and what SQLite's WAL needs.

``--fsync-delay-ms`` holds every fsync that long (a stalling SD card) without holding the other
operations, so reads go on while a commit waits, as they do from a real page cache.

SQLite's WAL index (``-shm``) is a shared ``mmap``: the mount keeps the kernel page cache (no
``direct_io``), so writable shared mappings work; the index is rebuilt from the WAL after a cut.

Run: ``python -m hil.lazyfs BACKING MOUNTPOINT [--fsync-delay-ms N]`` (foreground; needs
``/dev/fuse`` and Debian's ``fuse3``, i.e. libfuse3 and fusermount3). Unmount: ``fusermount3 -u``.
"""

from __future__ import annotations

import argparse
import errno
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mfusepy as fuse

PAGE = 4096


@dataclass
class _Dirty:
    """Unsynced state of one file: changed pages and the size it has for readers."""

    size: int
    pages: dict[int, bytearray] = field(default_factory=dict)


class LazyFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: str, *, fsync_delay_s: float = 0.0) -> None:
        self.root = os.path.realpath(backing)
        self.fsync_delay_s = fsync_delay_s
        self._lock = threading.RLock()
        self._dirty: dict[str, _Dirty] = {}
        self.fsyncs = 0

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # -- metadata: straight to the backing directory ----------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._lock:
            try:
                st = os.lstat(self._full(path))
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno) from exc
            attrs = {k: getattr(st, k) for k in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                "st_mtime_ns", "st_ctime_ns")}
            for k in ("st_atime", "st_mtime", "st_ctime"):
                attrs[k] = attrs.pop(k + "_ns")
            d = self._dirty.get(path)
            if d is not None:
                attrs["st_size"] = d.size
            return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._full(path), ns=times)
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        os.mknod(self._full(path), mode, dev)  # the agent's control socket lives here too
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def unlink(self, path: str) -> int:
        with self._lock:
            os.unlink(self._full(path))
            self._dirty.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._lock:
            os.rename(self._full(old), self._full(new))
            self._dirty.pop(new, None)
            if old in self._dirty:
                self._dirty[new] = self._dirty.pop(old)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._full(path))
        return {k: getattr(sv, k) for k in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
            "f_flag", "f_frsize", "f_namemax")}

    # -- contents: in memory until fsync ----------------------------------------------------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.close(fd)
        with self._lock:
            self._dirty.pop(path, None)
        return 0

    def open(self, path: str, flags: int) -> int:
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def release(self, path: str, fh: int) -> int:
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() is not fsync: the data stays in memory

    def _state(self, path: str) -> _Dirty:
        d = self._dirty.get(path)
        if d is None:
            d = self._dirty[path] = _Dirty(os.path.getsize(self._full(path)))
        return d

    def _page(self, path: str, d: _Dirty, index: int) -> bytearray:
        page = d.pages.get(index)
        if page is None:
            with open(self._full(path), "rb") as fh:
                fh.seek(index * PAGE)
                page = bytearray(fh.read(PAGE))
            page.extend(b"\0" * (PAGE - len(page)))
            end = d.size - index * PAGE  # past a pending truncation the old bytes are gone
            if end < PAGE:
                page[max(0, end):] = b"\0" * (PAGE - max(0, end))
            d.pages[index] = page
        return page

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            d = self._dirty.get(path)
            if d is None:
                with open(self._full(path), "rb") as f:
                    f.seek(offset)
                    return f.read(size)
            end = min(offset + size, d.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, at = divmod(pos, PAGE)
                take = min(PAGE - at, end - pos)
                out += self._page(path, d, index)[at:at + take]
                pos += take
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            d = self._state(path)
            pos, view = offset, memoryview(data)
            while view:
                index, at = divmod(pos, PAGE)
                take = min(PAGE - at, len(view))
                self._page(path, d, index)[at:at + take] = view[:take]
                view, pos = view[take:], pos + take
            d.size = max(d.size, offset + len(data))
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._lock:
            d = self._state(path)
            for index in [i for i in d.pages if i * PAGE >= length]:
                del d.pages[index]
            last = d.pages.get(length // PAGE)
            if last is not None:
                last[length % PAGE:] = b"\0" * (PAGE - length % PAGE)
            d.size = length
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if self.fsync_delay_s:
            time.sleep(self.fsync_delay_s)  # without the lock: other operations go on
        with self._lock:
            self.fsyncs += 1
            d = self._dirty.pop(path, None)
            if d is None:
                return 0
            with open(self._full(path), "r+b") as f:
                for index, page in sorted(d.pages.items()):
                    if index * PAGE < d.size:
                        f.seek(index * PAGE)
                        f.write(page[:min(PAGE, d.size - index * PAGE)])
                f.truncate(d.size)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # metadata is already on the backing directory

    # no ``lock``: the kernel keeps POSIX locks itself (SQLite locks the database and -shm)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hil.lazyfs", description=__doc__.split("\n")[0])
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("--fsync-delay-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    ops = LazyFS(args.backing, fsync_delay_s=args.fsync_delay_ms / 1000)
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=False, fsname="lazyfs")


if __name__ == "__main__":
    main()
