"""P7's confinement: quota and weight arithmetic, cpu.stat, and a real cgroup where allowed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil.bench.confine import (
    CFS_NICE_0,
    NICE_WEIGHT,
    CgroupQuota,
    Competitor,
    favour,
    nice_for_share,
    parse_cpu_stat,
    quota_us,
)


def test_quota_is_the_share_of_the_period() -> None:
    assert quota_us(25) == 25_000
    assert quota_us(2.5, 10_000) == 1000
    assert quota_us(0.5, 10_000) == 1000  # the kernel's minimum quota is 1 ms
    with pytest.raises(ValueError):
        quota_us(0)
    with pytest.raises(ValueError):
        quota_us(150)


@given(st.floats(min_value=1.2, max_value=50))
def test_the_competitors_nice_leaves_the_nearest_weight_share(percent: float) -> None:
    nice = nice_for_share(percent)

    def share(n: int) -> float:
        return CFS_NICE_0 / (CFS_NICE_0 + NICE_WEIGHT[n]) * 100

    assert all(abs(share(nice) - percent) <= abs(share(n) - percent) for n in NICE_WEIGHT)
    assert nice_for_share(25) == -5


def test_cpu_stat_of_both_cgroup_versions() -> None:
    v1 = parse_cpu_stat("nr_periods 31\nnr_throttled 30\nthrottled_time 2278250123\n")
    assert v1["nr_throttled"] == 30 and v1["throttled_usec"] == 2_278_250
    v2 = parse_cpu_stat("usage_usec 10\nnr_periods 4\nnr_throttled 1\nthrottled_usec 77\n")
    assert v2["throttled_usec"] == 77 and v2["nr_periods"] == 4


def _busy() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(5)


def test_a_cgroup_quota_throttles_a_busy_process() -> None:
    quota = CgroupQuota.create(f"evse-test-confine-{os.getpid()}", period_us=10_000)
    if quota is None:
        pytest.skip("no writable cgroup with the cpu controller here")
    proc = _busy()
    try:
        quota.set_share(10)
        quota.add(proc.pid)
        deadline = time.monotonic() + 10
        while quota.stats().get("nr_throttled", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert quota.stats()["nr_throttled"] > 0
        assert str(proc.pid) in (quota.path / "cgroup.procs").read_text().split()
    finally:
        _stop(proc)
        quota.close()
    assert not quota.path.exists()


def test_a_competitor_is_pinned_at_the_nice_of_the_share() -> None:
    comp = Competitor(cpu=0)
    agent = _busy()
    try:
        comp.set_share(25)
        comp.add(agent.pid)
        assert os.getpriority(os.PRIO_PROCESS, comp.proc.pid) == -5
        assert os.sched_getaffinity(agent.pid) == {0} == os.sched_getaffinity(comp.proc.pid)
        assert "nice -5" in comp.share_text()
    finally:
        _stop(agent)
        comp.close()
    assert comp.proc.poll() is not None


def test_favour_renices_every_thread_of_the_rig() -> None:
    """Linux renices one thread per call: a rig's pty-bridge threads need their own."""
    code = ("import threading, time\n"
            "for _ in range(2): threading.Thread(target=time.sleep, args=(30,), daemon=True)"
            ".start()\n"
            "print('up', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(tids) == 3
        assert favour(proc.pid, 7)  # lower priority: allowed to anyone, so the test runs anywhere
        assert {os.getpriority(os.PRIO_PROCESS, t) for t in tids} == {7}
    finally:
        _stop(proc)
    assert not favour(proc.pid, 7)  # gone: says so, raises nothing
