"""Line time arithmetic and the worst-case reaction bound (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import linetime as lt
from drivers.linetime import LineTiming, TcpTiming, serial_reaction, worst_case_reaction

ms = 1e-3


def test_frame_sizes_of_every_function_we_use() -> None:
    assert lt.read_bytes(4, 6) == (8, 17)
    assert lt.read_bytes(3, 125) == (8, 255)
    assert lt.read_bytes(1, 2) == (8, 6)
    assert lt.read_bytes(2, 9) == (8, 7)
    assert lt.write_single_bytes() == (8, 8)
    assert lt.write_coils_bytes(10) == (11, 8)
    assert lt.write_registers_bytes(2) == (13, 8)
    assert lt.EXCEPTION_RESPONSE_BYTES == 5
    with pytest.raises(ValueError):
        lt.read_registers_response_bytes(126)
    with pytest.raises(ValueError):
        lt.read_bytes(5, 1)


def test_hardware_md_example_9600_8n1_six_input_registers() -> None:
    line = LineTiming(9600, "N", 1)
    assert line.frame_time(8 + 17) == pytest.approx(26.04 * ms, abs=0.01 * ms)
    assert line.gap() == pytest.approx(3.5 * 10 / 9600)
    expected = (25 * 10 / 9600) + 2 * (35 / 9600) + 5 * ms
    assert line.transaction_time(8, 17, 5 * ms) == pytest.approx(expected)


def test_character_size_and_fixed_gap_above_19200() -> None:
    assert LineTiming(9600, "E", 1).bits_per_char == 11
    assert LineTiming(9600, "N", 2).bits_per_char == 11
    assert LineTiming(19200).gap() == pytest.approx(3.5 * 10 / 19200)
    assert LineTiming(38400).gap() == 1.75 * ms
    assert LineTiming(115200).gap() == 1.75 * ms
    with pytest.raises(ValueError):
        LineTiming(9600, "X", 1)


def test_failed_transaction_holds_the_bus_for_timeout_and_drain() -> None:
    line = LineTiming(9600)
    failed = line.failed_transaction_time(8, 0.2, 0.05)
    assert failed == pytest.approx(line.frame_time(8) + 0.2 + 0.05 + line.frame_time(256)
                                   + line.gap())
    assert failed > line.transaction_time(8, 17, 0.05)


def test_tcp_is_a_constant() -> None:
    tcp = TcpTiming(0.004)
    assert tcp.transaction_time(8, 255, 0.001) == pytest.approx(0.005)
    assert tcp.gap() == 0.0


def test_worst_case_formula_and_breakdown() -> None:
    bound = worst_case_reaction(
        poll_period_s=0.02, debounce_samples=2, blocking_s=0.03, pilot_read_s=0.004,
        contactor_write_s=0.002, blocking_write_s=0.01, board_sample_s=0.01, processing_s=0.001,
    )
    assert bound.total_s == pytest.approx(0.01 + 0.04 + 0.03 + 0.004 + 0.001 + 0.01 + 0.002)
    assert set(bound.terms) == {"board_sample", "debounce", "blocking", "pilot_read",
                                "processing", "blocking_write", "contactor_write"}
    assert "ms" in bound.explain()
    default = worst_case_reaction(poll_period_s=0.02, debounce_samples=1, blocking_s=0.03,
                                  pilot_read_s=0.004, contactor_write_s=0.002)
    assert default.terms["blocking_write"] == 0.03  # max(blocking, pilot read)


def test_shared_9600_bus_with_meter_is_slower_than_dedicated_115200() -> None:
    slow = LineTiming(9600)
    fast = LineTiming(115200)
    meter_block = slow.transaction_time(*lt.read_bytes(3, 32), 0.05)
    shared = serial_reaction(slow, poll_period_s=0.02, debounce_samples=2,
                             longest_lower_priority_s=meter_block)
    heartbeat = fast.transaction_time(*lt.write_single_bytes(), 0.002)
    dedicated = serial_reaction(fast, poll_period_s=0.02, debounce_samples=2,
                                longest_lower_priority_s=heartbeat)
    assert dedicated.total_s < 0.1 < shared.total_s
    assert lt.check_schedule(0.02, meter_block, shared.terms["pilot_read"]) is not None
    assert lt.check_schedule(0.02, heartbeat, dedicated.terms["pilot_read"]) is None


@given(
    period=st.floats(0.005, 0.5), n=st.integers(1, 5), blocking=st.floats(0, 0.5),
    extra=st.floats(0, 0.2),
)
def test_bound_grows_with_every_term(period: float, n: int, blocking: float,
                                     extra: float) -> None:
    base = worst_case_reaction(poll_period_s=period, debounce_samples=n, blocking_s=blocking,
                               pilot_read_s=0.003, contactor_write_s=0.001)
    longer = worst_case_reaction(poll_period_s=period + extra, debounce_samples=n + 1,
                                 blocking_s=blocking + extra, pilot_read_s=0.003,
                                 contactor_write_s=0.001)
    assert longer.total_s >= base.total_s + period - 1e-9
    assert base.total_s >= n * period + blocking - 1e-9
