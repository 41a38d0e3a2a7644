"""RTU frames reassembled from the pty bridge's chunks, described for the rig's timeline."""

from __future__ import annotations

from typing import Any

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse


class FrameDecoder:
    """Reassemble RTU frames from the bridge's chunks (per direction) with pymodbus's framer.

    Requests (``a->b``) are decoded as a server would, answers (``b->a``) as a client would.
    A gap of more than ``FRAME_GAP_S`` between chunks starts a new frame, like t3.5 on a line.
    """

    FRAME_GAP_S = 0.02

    def __init__(self) -> None:
        self._framers = {
            "a->b": FramerRTU(DecodePDU(is_server=True)),
            "b->a": FramerRTU(DecodePDU(is_server=False)),
        }
        self._buf = {"a->b": b"", "b->a": b""}
        self._last = {"a->b": 0.0, "b->a": 0.0}

    def feed(self, direction: str, t: float, data: bytes) -> list[dict[str, Any]]:
        if t - self._last[direction] > self.FRAME_GAP_S:
            self._buf[direction] = b""
        self._last[direction] = t
        buf = self._buf[direction] + data
        out: list[dict[str, Any]] = []
        while buf:
            try:
                used, pdu = self._framers[direction].handleFrame(buf, 0, 0)
            except Exception:  # undecodable PDU body
                used, pdu = len(buf), None
            if pdu is None:
                if used:  # consumed without a frame: CRC error or garbage
                    out.append({"t": t, "dir": direction, "bad": True, "len": len(buf)})
                    buf = b""
                break
            buf = buf[used:]
            out.append(_describe(direction, t, pdu))
        self._buf[direction] = buf[-512:]
        return out


def _describe(direction: str, t: float, pdu: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": t, "dir": direction, "unit": int(pdu.dev_id),
                             "fc": int(pdu.function_code) & 0x7F}
    if isinstance(pdu, ExceptionResponse):
        frame["exception"] = int(pdu.exception_code)
        return frame
    frame["address"] = int(getattr(pdu, "address", 0))
    if direction == "a->b" and frame["fc"] in (5, 15):
        frame["values"] = [int(bool(b)) for b in (pdu.bits or [])]
    elif direction == "a->b" and frame["fc"] in (6, 16):
        frame["values"] = [int(r) for r in (pdu.registers or [])]
    return frame
