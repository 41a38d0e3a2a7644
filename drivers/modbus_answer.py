"""Can this decoded answer be the answer to the request on the wire?

Modbus RTU pairs nothing: after a timeout a late answer to the previous request could arrive in
the next request's window. Every answer is therefore checked against what was asked (unit,
function, counts, write echoes, and on RTU the raw byte count) before its values are used.
"""

from __future__ import annotations

from typing import Protocol

from pymodbus.pdu import ModbusPDU

from drivers.linetime import (
    read_bytes,
    write_coils_bytes,
    write_registers_bytes,
    write_single_bytes,
)


class Asked(Protocol):
    """What a request asked for (``drivers.bus`` jobs have these fields)."""

    unit: int
    function: int
    address: int
    count: int
    values: tuple[int, ...]


def expected_answer_bytes(job: Asked) -> int:
    """Length of the answer a request expects (a late answer to it is at most this long)."""
    if job.function in (1, 2, 3, 4):
        return read_bytes(job.function, job.count)[1]
    if job.function == 15:
        return write_coils_bytes(job.count)[1]
    if job.function == 16:
        return write_registers_bytes(job.count)[1]
    return write_single_bytes()[1]


def mismatch(job: Asked, pdu: ModbusPDU) -> str | None:
    """Why ``pdu`` cannot be the answer to ``job`` (None when it can)."""
    if pdu.dev_id != job.unit:  # 0 (broadcast) never answers
        return f"unit {pdu.dev_id} answered, asked {job.unit}"
    if pdu.isError():
        if pdu.function_code != job.function | 0x80:
            return f"exception for function {pdu.function_code & 0x7F}, asked {job.function}"
        return None
    if pdu.function_code != job.function:
        return f"function {pdu.function_code}, asked {job.function}"
    fc = job.function
    if fc in (3, 4) and len(pdu.registers) != job.count:
        return f"{len(pdu.registers)} registers, asked {job.count}"
    if fc in (1, 2) and len(pdu.bits) != (job.count + 7) // 8 * 8:
        return f"{len(pdu.bits)} bits, asked {job.count}"
    if fc in (5, 6, 15, 16) and pdu.address != job.address:
        return f"write echo address {pdu.address}, sent {job.address}"
    if fc == 5 and (not pdu.bits or bool(pdu.bits[0]) != bool(job.values[0])):
        return "write coil echo differs"
    if fc == 6 and (not pdu.registers or pdu.registers[0] != job.values[0]):
        return "write register echo differs"
    if fc in (15, 16) and pdu.count != job.count:
        return f"write echo count {pdu.count}, sent {job.count}"
    return None


def raw_mismatch(job: Asked, pdu: ModbusPDU, frame: bytes) -> str | None:
    """Check an RTU read answer's byte count, which pymodbus 3.16.1 does not: an answer with one
    byte too many (valid CRC) is otherwise decoded shifted (found by hil.fuzz)."""
    if pdu.isError() or job.function not in (1, 2, 3, 4):
        return None
    expected = 2 * job.count if job.function in (3, 4) else (job.count + 7) // 8
    if len(frame) < 3 or frame[0] != job.unit or frame[1] != job.function:
        return "answer header does not match the request"
    if frame[2] != expected:
        return f"byte count {frame[2]}, expected {expected}"
    return None


def answer_values(job: Asked, pdu: ModbusPDU) -> list[int]:
    """Registers, or bits as 0/1 (trimmed to the count asked); nothing for writes."""
    if job.function in (3, 4):
        return [int(v) for v in pdu.registers]
    if job.function in (1, 2):
        return [int(bool(b)) for b in pdu.bits[: job.count]]
    return []
