"""The expectations of a scenario (``expect`` / ``wait_until`` steps), judged from the rig.

Contactor and duty conditions are measured on the rig's timeline (frames completing on the
virtual wire, duty writes the pilot board accepted); ``fault``/``state``/``energy_wh_min`` ask
the agent's control socket. ``Conditions`` is mixed into ``ScenarioRunner``, which provides
the rig, the mark and labels of earlier steps, and ``connector_status``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hil.ev import current_from_duty
from hil.report import Timeline
from hil.rig import Rig
from hil.scenario import CONDITIONS as CONDITION_KEYS
from hil.scenario import Check

POLL_S = 0.005


class Conditions:
    rig: Rig
    mark: float
    labels: dict[str, float]

    @property
    def timeline(self) -> Timeline:
        return self.rig.timeline

    async def connector_status(self, connector: int | None) -> dict[str, Any]:
        raise NotImplementedError

    async def evaluate(self, cond: dict[str, Any], connector: int | None) -> Check:
        cond = dict(cond)
        connector = cond.pop("connector", connector)
        start = self.labels[cond["from"]] if "from" in cond else self.mark
        within = _within(cond)
        name = str(cond.get("measure") or _describe(cond))
        if "contactor" in cond or "cut_between_s" in cond:
            return await self._contactor(name, cond, start, within, connector)
        if "pwm" in cond or "offered_a" in cond:
            return await self._duty(name, cond, start, within, connector)
        return await self._polled(name, cond, start, within, connector)

    async def _contactor(self, name: str, cond: dict[str, Any], start: float,
                         within: float | None, connector: int | None) -> Check:
        cid = self.rig.connector(connector).config.id
        window = cond.get("cut_between_s")
        target = "open" if window is not None else str(cond["contactor"])
        if target not in ("open", "closed"):
            raise ValueError(f"contactor: open|closed, not {target!r}")
        want_closed = target == "closed"
        if "hold_s" in cond:
            hold = float(cond["hold_s"])
            t0 = self.rig.now()
            await asyncio.sleep(hold)
            wrong = [e for e in self.timeline.events("signal", since=t0, name="contactor",
                                                     connector=cid)
                     if e.data["value"] != want_closed]
            wrong += [e for e in self.timeline.events("frame", since=t0)
                      if e.data.get("what") == ("contactor_open" if want_closed
                                                else "contactor_close")]
            ok = self.rig.contactor_closed(connector) == want_closed and not wrong
            text = "stayed " + target if ok else f"left {target} at t={wrong[0].t:.3f} s" \
                if wrong else f"not {target}"
            return Check(name, ok, text, f"{target} for {hold} s")
        if within is None and window is None:
            ok = self.rig.contactor_closed(connector) == want_closed
            state = "closed" if self.rig.contactor_closed(connector) else "open"
            return Check(name, ok, state, target, "mirror contact now")
        lo, hi = (float(window[0]), float(window[1])) if window is not None else (0.0, within)
        assert hi is not None
        what = "contactor_close" if want_closed else "contactor_open"
        was = self._signal_at("contactor", start, cid)
        deadline = start + hi + max(1.0, hi)
        while True:
            frame = self.timeline.first("frame", start, what=what)
            if frame is not None or self.rig.now() > deadline:
                break
            if was == want_closed and self.rig.now() > start + hi:
                break
            await asyncio.sleep(POLL_S)
        limit = f"{lo:g}-{hi:g} s" if window is not None else _fmt_limit(cond, hi)
        if frame is None:
            if was == want_closed:
                return Check(name, True, f"already {target} at the mark", limit,
                             "no switching needed", 0.0)
            return Check(name, False, f"no {what} frame", limit,
                         f"waited {deadline - start:.2f} s")
        measured = frame.t - start
        ok = lo <= measured <= hi
        return Check(name, ok, _fmt_s(measured, cond), limit,
                     f"{what} frame completed on {frame.data.get('bus')}", measured)

    async def _duty(self, name: str, cond: dict[str, Any], start: float, within: float | None,
                    connector: int | None) -> Check:
        c = self.rig.connector(connector)
        profile = self.rig.config.profile

        def duty_now() -> int:
            return int(self.rig.probe(connector)["duty"])
        if "pwm" in cond:
            want_on = str(cond["pwm"]).lower() in ("on", "true", "1")

            def pred(duty: int) -> bool:
                return (0 < duty < 1000) == want_on
            limit_txt = "PWM " + ("on" if want_on else "off")
        else:
            target, tol = float(cond["offered_a"]), float(cond.get("tol_a", 0.5))

            def pred(duty: int) -> bool:
                return abs(current_from_duty(duty, profile) - target) <= tol
            limit_txt = f"{target:g} A ±{tol:g}"
        hold = cond.get("hold_s")
        deadline = start + (within or 0.0)
        while True:
            if pred(duty_now()) or self.rig.now() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        duty = duty_now()
        live = f"duty {duty / 10:g} % = {current_from_duty(duty, profile):g} A"
        if not pred(duty):
            return Check(name, False, live, _with_time(limit_txt, cond))
        if hold is not None:
            end = self.rig.now() + float(hold)
            while self.rig.now() < end:
                if not pred(duty_now()):
                    return Check(name, False, "changed during hold", f"{limit_txt} for {hold} s")
                await asyncio.sleep(POLL_S)
            return Check(name, True, live, f"{limit_txt} for {hold} s")
        writes = [e for e in self.timeline.events("board_write", since=start,
                                                  register="duty_cmd", connector=c.config.id)
                  if pred(int(e.data["value"]))]
        if "offered_a" in cond:  # a retrofitted wallbox: its current register writes
            writes += [e for e in self.timeline.events("wallbox_write", since=start,
                                                       connector=c.config.id)
                       if abs(float(e.data["offered_a"]) - float(cond["offered_a"]))
                       <= float(cond.get("tol_a", 0.5))]
            writes.sort(key=lambda e: e.t)
        measured = writes[0].t - start if writes else 0.0
        if within is None:
            return Check(name, True, live, limit_txt)
        return Check(name, measured <= within, f"{live} after {_fmt_s(measured, cond)}",
                     _with_time(limit_txt, cond), "from the accepted duty write", measured)

    async def _polled(self, name: str, cond: dict[str, Any], start: float,
                      within: float | None, connector: int | None) -> Check:
        key = next(k for k in cond if k in CONDITION_KEYS)
        deadline = start + (within if within is not None else 0.0)
        uses_agent = key in ("fault", "no_fault", "state", "energy_wh_min")
        first = True
        while True:
            ok, measured = await self._probe(key, cond[key], cond, connector)
            if ok or self.rig.now() >= deadline:
                break
            first = False
            await asyncio.sleep(0.1 if uses_agent else POLL_S)
        t = self.rig.now() - start
        detail = ""
        if ok and within is not None:
            detail = "already true at this step" if first else f"after {t:.3f} s"
        return Check(name, ok, measured, _with_time(f"{key}: {cond[key]}", cond), detail,
                     t if ok else None)

    async def _probe(self, key: str, want: Any, cond: dict[str, Any],
                     connector: int | None) -> tuple[bool, str]:
        if key in ("current_a", "lock", "cp_v"):
            hw = self.rig.probe(connector)
        if key == "current_a":
            got = float(hw["current_a"])
            return abs(got - float(want)) <= float(cond.get("tol_a", 0.5)), f"{got:g} A"
        if key == "lock":
            locked = bool(hw["lock"])
            return locked == (str(want) == "locked"), "locked" if locked else "released"
        if key == "cp_v":
            volts = float(hw["cp_v"])
            return abs(volts - float(want)) <= 0.8, f"{volts:.2f} V"
        status = await self.connector_status(connector)
        faults = [str(f) for f in status.get("faults") or []]
        if key == "fault":
            hit = any(f == want or f.endswith("." + str(want)) or str(want) in f for f in faults)
            return hit, "faults: " + (", ".join(faults) or "none")
        if key == "no_fault":
            return not faults, "faults: " + (", ".join(faults) or "none")
        if key == "state":
            state = str(status.get("state"))
            return state.lower() == str(want).lower(), f"state {state}"
        if key == "energy_wh_min":
            meter = status.get("meter") or {}
            energy = float(meter.get("energyImportWh") or 0.0)
            rig_wh = self.rig.connector(connector).energy_wh
            return energy >= float(want), f"{energy:.2f} Wh (rig {rig_wh:.2f} Wh)"
        raise ValueError(f"unknown condition {key!r}")

    def _signal_at(self, name: str, t: float, connector: int) -> Any:
        value = None
        for e in self.timeline.events("signal", name=name, connector=connector):
            if e.t > t:
                break
            value = e.data["value"]
        return value


def _within(cond: dict[str, Any]) -> float | None:
    if "within_ms" in cond:
        return float(cond["within_ms"]) / 1000.0
    if "within_s" in cond:
        return float(cond["within_s"])
    return None


def _fmt_s(seconds: float, cond: dict[str, Any]) -> str:
    return f"{seconds * 1000:.1f} ms" if "within_ms" in cond else f"{seconds:.3f} s"


def _fmt_limit(cond: dict[str, Any], within: float) -> str:
    return f"<= {cond['within_ms']:g} ms" if "within_ms" in cond else f"<= {within:g} s"


def _with_time(text: str, cond: dict[str, Any]) -> str:
    within = _within(cond)
    return text if within is None else f"{text} {_fmt_limit(cond, within)}"


def _describe(cond: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in cond.items() if k != "measure")
