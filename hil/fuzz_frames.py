"""Malformed Modbus RTU answers: pure mutators ``(valid response frame, random draw) -> bytes on
the wire`` (``b""`` is silence).

Every frame with a valid CRC is built or sealed by pymodbus itself (``FramerRTU``), never by
hand. A mutator never produces a frame that no receiver could tell from a valid answer (same
unit, function and length as the genuine one, valid CRC, other data): ``mutate`` draws again in
that (CRC-collision) case, so a wrongly accepted answer is always a fault of the receiver.
``hil.fuzz`` puts them on the virtual wire.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

Mutator = Callable[[bytes, random.Random], bytes]

_FRAMER = FramerRTU(DecodePDU(is_server=False))
_READS = (1, 2, 3, 4)

# --- frame helpers (pymodbus does the framing and the CRC) ----------------------------------


def seal(body: bytes) -> bytes:
    """``unit + PDU`` -> RTU frame with its CRC, built by pymodbus' own RTU framer."""
    return _FRAMER.encode(body[1:], body[0], 0)


def decode_frame(frame: bytes) -> ModbusPDU:
    """The response pymodbus decodes from ``frame`` (``ValueError`` when there is none)."""
    _, pdu = _FRAMER.handleFrame(frame, 0, 0)
    if pdu is None:
        raise ValueError(f"not a valid RTU response: {frame.hex()}")
    return pdu


def _build(pdu: ModbusPDU) -> bytes:
    return _FRAMER.buildFrame(pdu)


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


# --- mutators --------------------------------------------------------------------------------


def flip_crc(frame: bytes, rng: random.Random) -> bytes:
    """Same frame, CRC xor-ed with a non-zero mask."""
    crc = int.from_bytes(frame[-2:], "big") ^ rng.randrange(1, 0x10000)
    return frame[:-2] + crc.to_bytes(2, "big")


def flip_bits(frame: bytes, rng: random.Random) -> bytes:
    """1-3 distinct bits flipped before the CRC (line noise); CRC-16 catches all of these."""
    data = bytearray(frame)
    for bit in rng.sample(range((len(frame) - 2) * 8), rng.randint(1, 3)):
        data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def _resize(body: bytes, delta: int, rng: random.Random) -> bytes:
    """Reads: half the time the byte count follows the new length (a well-formed frame of
    the wrong size), else it keeps the old one."""
    if body[1] in _READS and len(body) > 3 and rng.random() < 0.5:
        return body[:2] + bytes([(body[2] + delta) % 256]) + body[3:]
    return body


def extra_bytes(frame: bytes, rng: random.Random) -> bytes:
    """1-8 random bytes inserted after the unit id (reads: after the byte count); CRC valid."""
    body, n = frame[:-2], rng.randint(1, 8)
    at = rng.randint(3 if body[1] in _READS else 1, len(body))
    return seal(_resize(body[:at] + _random_bytes(rng, n) + body[at:], n, rng))


def missing_bytes(frame: bytes, rng: random.Random) -> bytes:
    """1-4 bytes removed after the function code (reads: after the byte count); CRC valid."""
    body = frame[:-2]
    first = 3 if body[1] in _READS else 2
    n = rng.randint(1, min(4, len(body) - first))
    at = rng.randint(first, len(body) - n)
    return seal(_resize(body[:at] + body[at + n :], -n, rng))


def bad_count_field(frame: bytes, rng: random.Random) -> bytes:
    """Reads: byte count field off (payload unchanged); writes: echoed field off. CRC valid."""
    body = bytearray(frame[:-2])
    if body[1] in _READS:
        body[2] = (body[2] + rng.randint(1, 255)) % 256
    else:  # address, value or count echo (bytes 2-5) of FC 05/06/0F/10
        at = rng.choice((2, 4))
        word = int.from_bytes(body[at : at + 2], "big") ^ rng.randrange(1, 0x10000)
        body[at : at + 2] = word.to_bytes(2, "big")
    return seal(bytes(body))


def wrong_unit(frame: bytes, rng: random.Random) -> bytes:
    """Another unit id (0-255), CRC recomputed."""
    unit = rng.choice([u for u in range(256) if u != frame[0]])
    return seal(bytes([unit]) + frame[1:-2])


def exception_reply(frame: bytes, rng: random.Random) -> bytes:
    """A valid exception response (function | 0x80, code 1-11) from the asked unit."""
    return _build(ExceptionResponse(frame[1] & 0x7F, rng.randint(1, 11), device_id=frame[0]))


def truncated(frame: bytes, rng: random.Random) -> bytes:
    """The first 1..len-1 bytes only."""
    return frame[: rng.randrange(1, len(frame))]


def stale_answer(frame: bytes, rng: random.Random) -> bytes:
    """A valid frame that answers another question (other unit, count or write address)."""
    pdu = decode_frame(frame)
    if rng.random() < 0.25:
        return wrong_unit(frame, rng)
    fc = pdu.function_code
    stale: ModbusPDU
    if fc in (3, 4):
        n = rng.choice([c for c in range(1, 126) if c != len(pdu.registers)][:12])
        stale = type(pdu)(registers=[rng.randrange(0x10000) for _ in range(n)])
    elif fc in (1, 2):
        nbytes = rng.choice([b for b in range(1, 9) if b * 8 != len(pdu.bits)])
        stale = type(pdu)(bits=[rng.random() < 0.5 for _ in range(nbytes * 8)])
    else:
        stale = decode_frame(frame)
        stale.address = (pdu.address + rng.randint(1, 0xFFFF)) % 0x10000
    stale.dev_id = pdu.dev_id
    return _build(stale)


def stale_then_right(frame: bytes, rng: random.Random) -> bytes:
    """A late answer to an earlier question, then the right answer, back to back."""
    return stale_answer(frame, rng) + frame


def right_then_garbage(frame: bytes, rng: random.Random) -> bytes:
    """The right answer followed by 1-16 random bytes (may be benign: the answer is intact)."""
    return frame + _random_bytes(rng, rng.randint(1, 16))


def garbage(frame: bytes, rng: random.Random) -> bytes:
    """1-64 random bytes instead of the answer."""
    return _random_bytes(rng, rng.randint(1, 64))


def silence(frame: bytes, rng: random.Random) -> bytes:
    """No answer at all."""
    return b""


MUTATORS: dict[str, Mutator] = {
    "crc_flip": flip_crc,
    "bit_flip": flip_bits,
    "extra_bytes": extra_bytes,
    "missing_bytes": missing_bytes,
    "bad_count_field": bad_count_field,
    "wrong_unit": wrong_unit,
    "exception": exception_reply,
    "truncated": truncated,
    "stale_then_right": stale_then_right,
    "right_then_garbage": right_then_garbage,
    "garbage": garbage,
    "silence": silence,
}
KINDS = tuple(MUTATORS)


def indistinguishable(wire: bytes, genuine: bytes) -> bool:
    """True when the first frame pymodbus takes from ``wire`` is a CRC-valid read answer of
    the same unit, function and length as ``genuine`` but other data: no receiver can tell
    it from the genuine one (a write echo carries the request's fields, so it can be told)."""
    if genuine[1] not in _READS or len(wire) < len(genuine) or wire.startswith(genuine):
        return False
    used, unit, _, pdu = _FRAMER.decode(wire)
    taken = bytes([unit]) + pdu
    return bool(used and pdu) and len(taken) == len(genuine) - 2 and taken[:2] == genuine[:2]


def benign(wire: bytes, genuine: bytes) -> bool:
    """Whether a receiver may take ``wire`` as the genuine answer: it starts with it, or one
    complete frame of another unit (cross-talk) comes first."""
    if wire.startswith(genuine):
        return True
    head = wire[: wire.rfind(genuine)] if wire.endswith(genuine) else b""
    return len(head) >= 4 and head[0] != genuine[0] and FramerRTU.check_CRC(
        head[:-2], int.from_bytes(head[-2:], "big"))


def mutate(kind: str, frame: bytes, rng: random.Random) -> bytes:
    """``MUTATORS[kind]`` applied to ``frame``, drawn again on a CRC collision."""
    mutator = MUTATORS[kind]
    for _ in range(100):
        wire = mutator(frame, rng)
        if wire != frame and not indistinguishable(wire, frame):
            return wire
    raise RuntimeError(f"{kind}: 100 draws in a row collided with {frame.hex()}")
