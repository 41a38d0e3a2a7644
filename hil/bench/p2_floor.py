"""P2's floor: what the poll period, the debounce and the line alone impose on a reaction.

An event at a uniform phase against the pilot poll is in the board's next sample U(0, T) later;
a level that needs n equal samples is confirmed by the sample (n-1) x T after that; the board's
answer then takes its response frame on the line, and the contactor-open request waits the
t3.5 gap and takes its own frame (what P2 stops at). The pilot read's request frame and the
device's answer latency come before the board samples (the rig computes the sample when it
answers), so they shift the phase, not the delay. Nothing else counts: no board sampling period
(the rig has none), no bus contention, no time in the agent. Computed from the config, the
core's debounce counts and the drivers' wire plan, so it follows them. Pure: no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.config import AgentConfig, ConnectorConfig, SerialBus
from agent.driver_wires import board_wires
from agent.pilot import CpLevel
from agent.shell.wiring import pilot_settings
from drivers.linetime import LineTiming, TcpTiming

# the CP level each P2 event leaves 3' for (hil.bench.p2_reaction.KINDS)
KIND_LEVEL = {"s2_open": CpLevel.STATE_2, "unplug": CpLevel.STATE_1, "cp_short": CpLevel.SHORT}


@dataclass(frozen=True)
class ReactionFloor:
    """Per kind: U(0, period) + (samples - 1) x period + fixed."""

    period_s: float
    samples: dict[str, int]  # kind -> equal samples the core needs for that level
    terms_s: dict[str, float]  # the fixed part, by term

    @property
    def fixed_s(self) -> float:
        return sum(self.terms_s.values())

    def cdf(self, x: float, weights: Mapping[str, float]) -> float:
        """P(floor <= x) when the kinds occur in proportion to ``weights``."""
        total = sum(weights.values())
        if total <= 0:
            raise ValueError("weights must add up to more than 0")
        got = 0.0
        for kind, w in weights.items():
            start = (self.samples[kind] - 1) * self.period_s + self.fixed_s
            got += w * min(1.0, max(0.0, (x - start) / self.period_s))
        return got / total

    def quantile(self, p: float, weights: Mapping[str, float]) -> float:
        """The p-th percentile (0 < p <= 100) of the floor, kinds mixed by ``weights``."""
        if not 0 < p <= 100:
            raise ValueError(f"p must be in (0, 100], not {p}")
        lo = self.fixed_s + (min(self.samples[k] for k in weights) - 1) * self.period_s
        hi = self.fixed_s + max(self.samples[k] for k in weights) * self.period_s
        for _ in range(60):  # the cdf is piecewise linear and monotone: bisect to < 1 ns
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.cdf(mid, weights) < p / 100 else (lo, mid)
        return hi

    def explain(self, weights: Mapping[str, float], names: Mapping[str, str] | None = None
                ) -> str:
        names = names or {}
        kinds = ", ".join(f"{names.get(k, k)} {self.samples[k]} sample(s): median "
                          f"{self.quantile(50, {k: 1}) * 1000:.1f} / p99 "
                          f"{self.quantile(99, {k: 1}) * 1000:.1f} ms" for k in weights)
        terms = " + ".join(f"{k} {v * 1000:.2f} ms" for k, v in self.terms_s.items())
        return (f"(n-1) x {self.period_s * 1000:g} ms + U(0, {self.period_s * 1000:g} ms) + "
                f"{terms}; {kinds}")


def _timing(cfg: AgentConfig, bus: str) -> LineTiming | TcpTiming:
    b = cfg.buses[bus]
    return LineTiming(b.baudrate, b.parity, b.stopbits) if isinstance(b, SerialBus) else \
        TcpTiming()


def reaction_floor(cfg: AgentConfig, connector: int = 0) -> ReactionFloor:
    """The floor of P2's reaction for the ``connector``-th connector (ours: pilot + relay
    boards), at its charging poll period (``pilot_board.poll_ms``)."""
    conn = cfg.connectors[connector]
    if not isinstance(conn, ConnectorConfig):
        raise TypeError("P2's floor is for a connector with our pilot and relay boards")
    settings = pilot_settings(cfg.profile, conn, cfg.safety)
    fast = dict(settings.debounce_fast)
    samples = {k: fast.get(level, settings.debounce_samples) for k, level in KIND_LEVEL.items()}
    wires = board_wires(cfg, conn)
    pilot_line = _timing(cfg, conn.pilot_board.bus)
    relay_line = _timing(cfg, conn.relay_board.bus)
    _, answer = wires.pilot.sample.sizes
    request, _ = wires.relay.contactor_open.sizes
    return ReactionFloor(
        conn.pilot_board.poll_ms / 1000, samples,
        {f"pilot answer {answer} B": pilot_line.frame_time(answer),
         "t3.5": relay_line.gap(),
         f"contactor-open frame {request} B": relay_line.frame_time(request)})
