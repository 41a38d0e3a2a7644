"""P7's starved CPU: confine the agent process to a share of one core.

Where the machine allows it, a cgroup CPU quota: a cgroup of its own for the agent (cgroup v2
``cpu.max``, or the v1 ``cpu`` controller's ``cpu.cfs_quota_us``), quota = share x period, so
the kernel throttles the agent for the rest of a period once it has used its share; the bench
process (rig, broker client) never joins it. The period defaults to 100 ms, what systemd's
``CPUQuota=`` uses. Otherwise (no writable cgroup): one CPU-bound competitor process pinned with
the agent to the same core at a higher priority (a lower nice value), whose scheduler weight
leaves the agent the share when both want the core; the share is then set only as a weight, and
the bench reports the agent's measured share beside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

PERIOD_US = 100_000
RIG_NICE = -10  # the rig's scheduler weight: ~9x a nice-0 process's (NICE_WEIGHT)
CFS_NICE_0 = 1024
# the kernel's sched_prio_to_weight for nice -20..-1 (kernel/sched/core.c)
NICE_WEIGHT = {-20: 88761, -19: 71755, -18: 56483, -17: 46273, -16: 36291, -15: 29154,
               -14: 23254, -13: 18705, -12: 14949, -11: 11916, -10: 9548, -9: 7620, -8: 6100,
               -7: 4904, -6: 3906, -5: 3121, -4: 2501, -3: 1991, -2: 1586, -1: 1277, 0: 1024}


class Confinement(Protocol):
    """A way to hold a process to a share of one core."""

    method: str

    def add(self, pid: int) -> None: ...
    def set_share(self, percent: float) -> None: ...
    def share_text(self) -> str: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def quota_us(percent: float, period_us: int = PERIOD_US) -> int:
    """The quota per period for a share of one core (the kernel's minimum is 1 ms)."""
    if not 0 < percent <= 100:
        raise ValueError(f"share must be in (0, 100] %, not {percent}")
    return max(1000, round(period_us * percent / 100))


def nice_for_share(percent: float) -> int:
    """The competitor's nice value whose weight leaves a nice-0 task closest to ``percent``."""
    def share(nice: int) -> float:
        return CFS_NICE_0 / (CFS_NICE_0 + NICE_WEIGHT[nice]) * 100
    return min(NICE_WEIGHT, key=lambda n: abs(share(n) - percent))


def parse_cpu_stat(text: str) -> dict[str, int]:
    """``cpu.stat`` (v1: throttled_time in ns; v2: throttled_usec) -> {key: int}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    if "throttled_time" in out:  # v1 counts nanoseconds
        out["throttled_usec"] = out["throttled_time"] // 1000
    return out


def _cpu_v1_mount() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[2] == "cgroup" and "cpu" in parts[3].split(","):
                return Path(parts[1])
    return None


class CgroupQuota:
    """A cgroup of its own with a CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``)."""

    def __init__(self, path: Path, version: int, period_us: int = PERIOD_US) -> None:
        self.path, self.version, self.period_us = path, version, period_us
        self.percent = 100.0
        path.mkdir()
        if version == 1:
            (path / "cpu.cfs_period_us").write_text(str(period_us))
        mount = "cgroup v2 cpu.max" if version == 2 else "cgroup v1 cpu.cfs_quota_us"
        self.method = f"{mount} quota ({path}), period {period_us / 1000:g} ms"

    @classmethod
    def create(cls, name: str, period_us: int = PERIOD_US) -> CgroupQuota | None:
        """A quota cgroup if this machine lets this process make one, else None."""
        v2 = Path("/sys/fs/cgroup")
        with contextlib.suppress(OSError):
            if "cpu" in (v2 / "cgroup.controllers").read_text().split():
                with contextlib.suppress(OSError):
                    (v2 / "cgroup.subtree_control").write_text("+cpu")
                if "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
                    return cls(v2 / name, 2, period_us)
        v1 = _cpu_v1_mount()
        if v1 is not None and os.access(v1, os.W_OK):
            with contextlib.suppress(OSError):
                return cls(v1 / name, 1, period_us)
        return None

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def set_share(self, percent: float) -> None:
        quota = quota_us(percent, self.period_us)
        if self.version == 2:
            (self.path / "cpu.max").write_text(f"{quota} {self.period_us}")
        else:
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        self.percent = quota / self.period_us * 100

    def share_text(self) -> str:
        return f"{self.percent:g} % quota"

    def stats(self) -> dict[str, int]:
        return parse_cpu_stat((self.path / "cpu.stat").read_text())

    def close(self) -> None:
        """Move whatever is left to the parent (nothing, once the agent stopped), remove."""
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.path.parent / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()


class Competitor:
    """A CPU-bound process pinned with the agent to one core, at a higher priority."""

    def __init__(self, cpu: int = 0) -> None:
        self.cpu = cpu
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                     stdin=subprocess.DEVNULL)
        os.sched_setaffinity(self.proc.pid, {cpu})
        self.nice = 0
        self.method = (f"CPU-bound competitor (pid {self.proc.pid}) pinned with the agent to "
                       f"CPU {cpu} at a lower nice value; the agent's share is a scheduler "
                       "weight when both want the core, measured over the window")

    def add(self, pid: int) -> None:
        os.sched_setaffinity(pid, {self.cpu})

    def set_share(self, percent: float) -> None:
        self.nice = nice_for_share(percent)
        os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.nice)

    def share_text(self) -> str:
        weight = CFS_NICE_0 / (CFS_NICE_0 + NICE_WEIGHT[self.nice]) * 100
        return f"{weight:.3g} % weight (competitor nice {self.nice})"

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def favour(pid: int, nice: int = RIG_NICE) -> bool:
    """Give every thread of ``pid`` (the rig: simulated boards and the pty bridges' line timing)
    the nice value ``nice``, so other load on the machine delays it less: the hardware it
    stands for has CPUs of its own. Linux renices one thread per call; threads started later
    inherit from their creator. False when this process may not (an unprivileged user)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        for tid in tids:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, ValueError):
        return False
    return True


def confinement(name: str, method: str = "auto", period_us: int = PERIOD_US) -> Confinement:
    """``auto``: a cgroup quota if possible, else a competitor; ``cgroup``/``competitor``: that."""
    if method in ("auto", "cgroup"):
        quota = CgroupQuota.create(name, period_us)
        if quota is not None:
            return quota
        if method == "cgroup":
            raise RuntimeError("no writable cgroup with the cpu controller on this machine")
    return Competitor()
