"""Line time of Modbus transactions and the worst-case reaction bound. Pure: no I/O, no clock.

RS-485 is half duplex, so every transaction holds the whole bus. ``evse-agent check-config``
uses this module to state, before anything runs, how long the agent can take from a change on
the control pilot to the contactor-open command being on the wire, and to refuse a schedule
that cannot meet the limit (``../shared/specs/design.md``, principle 5).

RTU frame sizes (address + PDU + CRC):

=====================  ====================  ====================
function               request (bytes)       response (bytes)
=====================  ====================  ====================
01/02 read bits (n)    8                     5 + ceil(n/8)
03/04 read regs (n)    8                     5 + 2n
05 write coil          8                     8 (echo)
06 write register      8                     8 (echo)
0F write coils (n)     9 + ceil(n/8)         8
10 write regs (n)      9 + 2n                8
exception              -                     5
=====================  ====================  ====================
"""

from __future__ import annotations

from dataclasses import dataclass, field

RTU_MAX_ADU = 256  # the longest RTU frame the serial line spec allows
EXCEPTION_RESPONSE_BYTES = 5
TCP_DEFAULT_TRANSACTION_S = 0.005  # Modbus TCP: no line timing; a small configured constant


def read_request_bytes() -> int:
    """FC 01/02/03/04 request: id, fc, address(2), count(2), crc(2)."""
    return 8


def read_registers_response_bytes(count: int) -> int:
    """FC 03/04 response: id, fc, byte count, 2 x count, crc(2)."""
    _check_count(count, 125)
    return 5 + 2 * count


def read_bits_response_bytes(count: int) -> int:
    """FC 01/02 response: id, fc, byte count, ceil(count/8), crc(2)."""
    _check_count(count, 2000)
    return 5 + (count + 7) // 8


def write_single_bytes() -> tuple[int, int]:
    """FC 05/06: (request, response); the response echoes the request."""
    return 8, 8


def write_coils_bytes(count: int) -> tuple[int, int]:
    """FC 0F: (request, response)."""
    _check_count(count, 1968)
    return 9 + (count + 7) // 8, 8


def write_registers_bytes(count: int) -> tuple[int, int]:
    """FC 10: (request, response)."""
    _check_count(count, 123)
    return 9 + 2 * count, 8


def read_bytes(function: int, count: int) -> tuple[int, int]:
    """(request, response) sizes of a read with function 1, 2, 3 or 4."""
    if function in (1, 2):
        return read_request_bytes(), read_bits_response_bytes(count)
    if function in (3, 4):
        return read_request_bytes(), read_registers_response_bytes(count)
    raise ValueError(f"not a read function code: {function}")


def frame_bytes(function: int, count: int) -> tuple[int, int]:
    """(request, response) sizes of any transaction the drivers make: FC 01-06, 0F, 10."""
    if function in (5, 6):
        return write_single_bytes()
    if function == 15:
        return write_coils_bytes(count)
    if function == 16:
        return write_registers_bytes(count)
    return read_bytes(function, count)


def _check_count(count: int, limit: int) -> None:
    if not 1 <= count <= limit:
        raise ValueError(f"count {count} out of 1..{limit}")


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Timing of one serial line: 1 start + 8 data + parity + stop bits per character."""

    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError(f"baud {self.baud} must be positive")
        if self.parity.upper() not in ("N", "E", "O"):
            raise ValueError(f"parity {self.parity!r} not one of N, E, O")
        if self.stopbits not in (1, 2):
            raise ValueError(f"stopbits {self.stopbits} not 1 or 2")

    @property
    def bits_per_char(self) -> int:
        return 1 + 8 + (0 if self.parity.upper() == "N" else 1) + self.stopbits

    def char_time(self) -> float:
        return self.bits_per_char / self.baud

    def frame_time(self, nbytes: int) -> float:
        """Seconds the bytes of one frame take on the wire (no silent interval)."""
        return nbytes * self.char_time()

    def gap(self) -> float:
        """t3.5 silent interval between frames; fixed 1.75 ms above 19200 baud."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_time()

    def transaction_time(
        self, request_bytes: int, response_bytes: int, device_latency_s: float = 0.0
    ) -> float:
        """request + gap + device latency + response + gap: the bus is held this long."""
        return (
            self.frame_time(request_bytes)
            + self.gap()
            + device_latency_s
            + self.frame_time(response_bytes)
            + self.gap()
        )

    def drain_time(self, device_latency_s: float, response_bytes: int = RTU_MAX_ADU) -> float:
        """How long a late answer can still arrive: latency + its frame + a gap.

        A late answer is the answer to the request that timed out, so its length is known:
        sizing the drain by it (not by the longest RTU frame) keeps a timeout on a fast
        control bus from holding the safety poll back for a 256-byte frame that cannot come.
        """
        return device_latency_s + self.frame_time(response_bytes) + self.gap()

    def failed_transaction_time(
        self,
        request_bytes: int,
        timeout_s: float,
        device_latency_s: float,
        response_bytes: int = RTU_MAX_ADU,
    ) -> float:
        """Bus occupancy of a transaction that times out: request + timeout + drain."""
        return (
            self.frame_time(request_bytes)
            + timeout_s
            + self.drain_time(device_latency_s, response_bytes)
        )


@dataclass(frozen=True, slots=True)
class TcpTiming:
    """Modbus TCP has no line time; each transaction costs a configured constant."""

    transaction_s: float = TCP_DEFAULT_TRANSACTION_S

    def frame_time(self, nbytes: int) -> float:
        return 0.0

    def gap(self) -> float:
        return 0.0

    def transaction_time(
        self, request_bytes: int, response_bytes: int, device_latency_s: float = 0.0
    ) -> float:
        return self.transaction_s + device_latency_s

    def drain_time(self, device_latency_s: float, response_bytes: int = RTU_MAX_ADU) -> float:
        return 0.0  # transaction ids reject stale answers on TCP

    def failed_transaction_time(
        self,
        request_bytes: int,
        timeout_s: float,
        device_latency_s: float,
        response_bytes: int = RTU_MAX_ADU,
    ) -> float:
        return timeout_s


@dataclass(frozen=True, slots=True)
class ReactionBound:
    """Worst-case time from a CP change to the contactor-open request frame being complete."""

    total_s: float
    terms: dict[str, float] = field(default_factory=dict)

    def explain(self) -> str:
        parts = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in self.terms.items())
        return f"{self.total_s * 1000:.2f} ms = {parts}"


def worst_case_reaction(
    *,
    poll_period_s: float,
    debounce_samples: int,
    blocking_s: float,
    pilot_read_s: float,
    contactor_write_s: float,
    blocking_write_s: float | None = None,
    board_sample_s: float = 0.0,
    processing_s: float = 0.0,
) -> ReactionBound:
    """Upper bound on CP change -> contactor-open request frame complete on the wire.

    ``bound = board_sample + debounce_samples * poll_period + T_blocking + T_pilot_read
    + processing + T_blocking_write + T_contactor_write``

    - ``board_sample_s``: the board's own measurement period (hardware.md: at least every
      10 ms); the change is visible in its registers at most this late.
    - ``debounce_samples * poll_period_s``: the first poll that can see the change is scheduled
      at most one period later, and the agent needs ``debounce_samples`` agreeing samples, so
      the last of them is scheduled at most ``N x P`` after the change became visible. This
      assumes the poll loop runs on absolute deadlines (``t_k = t_0 + k x P``; a late poll does
      not push the next one) and that ``P >= T_blocking + T_pilot_read`` (else polls overrun:
      ``check_schedule`` refuses that).
    - ``T_blocking``: that poll cannot preempt a transaction already on the wire: the longest
      lower-priority transaction (a meter block read on a shared bus, a duty/heartbeat write),
      including its failure occupancy (request + timeout + drain) when the device may be
      silent. Use ``LineTiming.failed_transaction_time`` for a conservative figure.
    - ``T_pilot_read``: the FC 04 read of 8 registers, both frames, device latency, gaps.
    - ``processing_s``: the agent's own decision time (classifier, state machine, task switch).
    - ``T_blocking_write``: while the agent decides, the scheduler starts the next queued
      transaction; the SAFETY_WRITE waits for it. Defaults to ``max(T_blocking, T_pilot_read)``.
      On a separate relay bus pass the longest transaction of that bus.
    - ``T_contactor_write``: the silent interval plus the FC 05 request frame (``gap +
      frame_time(8)``), or a full ``transaction_time`` for a bound up to the acknowledgement.
    """
    if poll_period_s <= 0 or debounce_samples < 1:
        raise ValueError("poll period must be > 0 and debounce_samples >= 1")
    blocking_write = max(blocking_s, pilot_read_s) if blocking_write_s is None else blocking_write_s
    terms = {
        "board_sample": board_sample_s,
        "debounce": debounce_samples * poll_period_s,
        "blocking": blocking_s,
        "pilot_read": pilot_read_s,
        "processing": processing_s,
        "blocking_write": blocking_write,
        "contactor_write": contactor_write_s,
    }
    return ReactionBound(sum(terms.values()), terms)


def serial_reaction(
    line: LineTiming,
    *,
    poll_period_s: float,
    debounce_samples: int,
    longest_lower_priority_s: float,
    pilot_latency_s: float = 0.0,
    relay_line: LineTiming | None = None,
    relay_bus_longest_s: float | None = None,
    board_sample_s: float = 0.010,
    processing_s: float = 0.0,
) -> ReactionBound:
    """``worst_case_reaction`` with the pilot read and contactor frame computed from the line.

    ``longest_lower_priority_s`` is the longest occupancy of any non-safety transaction on the
    pilot board's bus (compute it with ``transaction_time``/``failed_transaction_time``).
    With the relay board on another bus, give that bus's line and its longest transaction.
    """
    pilot_read = line.transaction_time(
        read_request_bytes(), read_registers_response_bytes(8), pilot_latency_s
    )
    relay = relay_line or line
    request, _ = write_single_bytes()
    contactor = relay.gap() + relay.frame_time(request)
    blocking_write = (
        max(longest_lower_priority_s, pilot_read)
        if relay_bus_longest_s is None
        else relay_bus_longest_s
    )
    return worst_case_reaction(
        poll_period_s=poll_period_s,
        debounce_samples=debounce_samples,
        blocking_s=longest_lower_priority_s,
        pilot_read_s=pilot_read,
        contactor_write_s=contactor,
        blocking_write_s=blocking_write,
        board_sample_s=board_sample_s,
        processing_s=processing_s,
    )


def check_schedule(poll_period_s: float, blocking_s: float, pilot_read_s: float) -> str | None:
    """A reason the poll schedule cannot hold its period, or None when it can."""
    if poll_period_s < blocking_s + pilot_read_s:
        return (
            f"poll period {poll_period_s * 1000:.1f} ms is shorter than the blocking transaction"
            f" plus the pilot read ({(blocking_s + pilot_read_s) * 1000:.1f} ms)"
        )
    return None
