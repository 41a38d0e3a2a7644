"""The bus plan: what each bus carries, and the reaction time it guarantees (``check-config``).

For every connector the bound is "CP change -> contactor-open frame complete on the wire"
(``drivers.linetime.worst_case_reaction``). Every lower-priority transaction is counted at its
*failure* occupancy (request + timeout + drain), because a silent meter is exactly when an
installer needs the promise to hold. A config whose bound exceeds the budget (100 ms, the
GB/T 34657.1 limit for S2 open, unplug, CC break, CP short and PE loss) is refused with the
reason and what to change, by ``check-config`` and by ``run`` alike (``BusPlanReport.refused``
is the one verdict both use). ``safety.accept_reaction_bound_over_budget`` lets such a schedule
run anyway (a bench measuring it); the agent then warns at every start and shows it in status.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig, ConnectorConfig, SerialBus, load_config
from agent.driver_wires import board_wires, bus_wires
from drivers.linetime import LineTiming, TcpTiming, worst_case_reaction
from drivers.wire import Priority
from drivers.wire import Transaction as WireTransaction

PROCESSING_ALLOWANCE_S = 0.005  # the agent's own decision time (classifier, machine, task switch)
BOARD_SAMPLE_S = 0.010  # hardware.md: the board measures CP at least every 10 ms
MAX_LOAD = 0.95  # above this the pilot poll cannot keep its period on average

if TYPE_CHECKING:
    from agent.busplan_wallbox import WallboxPlan


@dataclass(frozen=True)
class TimedTransaction:
    """A transaction a driver declared (``drivers.wire``), timed on its bus's line."""

    label: str
    priority: str
    request_bytes: int
    response_bytes: int
    period_s: float | None  # None: on demand (``trigger``)
    nominal_s: float
    failure_s: float
    connector: int = 0
    trigger: str = ""
    wire: WireTransaction | None = field(default=None, compare=False, repr=False)


@dataclass
class BusSchedule:
    name: str
    line: str
    transactions: list[TimedTransaction]
    load: float  # share of the bus the periodic transactions use (nominal)


@dataclass
class ConnectorBound:
    connector: int
    bound_ms: float
    terms_ms: dict[str, float]
    ok: bool
    reasons: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)


@dataclass
class BusPlanReport:
    budget_ms: float
    buses: list[BusSchedule]
    connectors: list[ConnectorBound]
    accept_over_budget: bool = False  # safety.accept_reaction_bound_over_budget
    wallboxes: list[WallboxPlan] = field(default_factory=list)  # hardware: wallbox connectors

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.connectors)

    @property
    def refused(self) -> bool:
        """What check-config exits 3 for and what ``run`` will not start with."""
        return not self.ok and not self.accept_over_budget

    @property
    def over_budget_accepted(self) -> bool:
        """The override is in force: the agent runs with a schedule check-config would refuse."""
        return not self.ok and self.accept_over_budget

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for bus in out["buses"]:
            for txn in bus["transactions"]:
                del txn["wire"]  # the label, sizes and period say it
        return {"ok": self.ok, "refused": self.refused,
                "overBudgetAccepted": self.over_budget_accepted, **out}

    def status(self) -> dict[str, Any]:
        """The part ``evse-agent status`` and status.json show."""
        return {"budgetMs": self.budget_ms,
                "boundMs": {str(c.connector): c.bound_ms for c in self.connectors},
                "overBudgetAccepted": self.over_budget_accepted,
                "reasons": [f"connector {c.connector}: {r}" for c in self.connectors
                            for r in c.reasons]}


def _timing(cfg: AgentConfig, bus: str) -> tuple[LineTiming | TcpTiming, float, float]:
    b = cfg.buses[bus]
    timing: LineTiming | TcpTiming = (
        LineTiming(b.baudrate, b.parity, b.stopbits) if isinstance(b, SerialBus) else TcpTiming()
    )
    return timing, b.timeout_ms / 1000, b.device_latency_ms / 1000


def timed(cfg: AgentConfig, bus: str, connector: int, txn: WireTransaction) -> TimedTransaction:
    """A declared transaction with its nominal and its failure (silent device) occupancy."""
    timing, timeout, latency = _timing(cfg, bus)
    req, resp = txn.sizes
    nominal = timing.transaction_time(req, resp, latency)
    failure = max(nominal, timing.failed_transaction_time(req, timeout, latency, resp))
    return TimedTransaction(f"c{connector} {txn.name}", txn.priority.name, req, resp, txn.period_s,
                       nominal, failure, connector, txn.trigger, txn)


def bus_transactions(cfg: AgentConfig, bus: str) -> list[TimedTransaction]:
    """Every transaction the drivers on ``bus`` declared, timed."""
    return [timed(cfg, bus, connector, txn) for connector, txn in bus_wires(cfg, bus)]


def _row(rows: list[TimedTransaction], connector: int, txn: WireTransaction) -> TimedTransaction:
    return next(t for t in rows if t.connector == connector and t.wire == txn)


def bus_load(txns: list[TimedTransaction]) -> float:
    """Share of the bus the periodic transactions use at their nominal duration."""
    return sum(t.nominal_s / t.period_s for t in txns if t.period_s)


def _bound(cfg: AgentConfig, conn: ConnectorConfig, per_bus: dict[str, list[TimedTransaction]],
           advise: bool = True) -> ConnectorBound:
    budget_s = cfg.safety.reaction_budget_ms / 1000
    pbus, rbus = conn.pilot_board.bus, conn.relay_board.bus
    poll_s = conn.pilot_board.poll_ms / 1000
    wires = board_wires(cfg, conn)
    pilot_read = _row(per_bus[pbus], conn.id, wires.pilot.sample)
    blocking = max((t.failure_s for t in per_bus[pbus]
                    if t.priority != Priority.SAFETY_WRITE.name and t is not pilot_read),
                   default=0.0)
    open_frame = _row(per_bus[rbus], conn.id, wires.relay.contactor_open)
    timing, _, _ = _timing(cfg, rbus)
    contactor_s = timing.gap() + timing.frame_time(open_frame.request_bytes)
    if rbus == pbus:
        blocking_write = max(blocking, pilot_read.failure_s)
    else:
        blocking_write = max((t.failure_s for t in per_bus[rbus]
                              if t.priority != Priority.SAFETY_WRITE.name), default=0.0)
    rb = worst_case_reaction(
        poll_period_s=poll_s,
        debounce_samples=cfg.safety.debounce_samples,
        blocking_s=blocking,
        pilot_read_s=pilot_read.nominal_s,
        contactor_write_s=contactor_s,
        blocking_write_s=blocking_write,
        board_sample_s=BOARD_SAMPLE_S,
        processing_s=PROCESSING_ALLOWANCE_S,
    )
    result = ConnectorBound(conn.id, round(rb.total_s * 1000, 2),
                            {k: round(v * 1000, 2) for k, v in rb.terms.items()}, True)
    load = bus_load(per_bus[pbus])
    overloaded = poll_s < pilot_read.nominal_s or load >= MAX_LOAD
    if overloaded:
        result.ok = False
        result.reasons.append(
            f"bus '{pbus}' cannot keep the {poll_s * 1000:.0f} ms pilot poll: the read takes "
            f"{pilot_read.nominal_s * 1000:.1f} ms and the periodic load is {load * 100:.0f} %")
    if rb.total_s > budget_s:
        result.ok = False
        result.reasons.append(
            f"worst-case reaction {rb.total_s * 1000:.1f} ms exceeds the "
            f"{budget_s * 1000:.0f} ms budget (GB/T 34657.1: open within 100 ms)")
    if not result.ok and advise:
        from agent.busfit import shared_port_fixes  # it re-runs analyse() on changed configs

        result.fixes.extend(shared_port_fixes(cfg, conn, per_bus[pbus], MAX_LOAD))
        result.fixes.extend(_fixes(cfg, conn, per_bus[pbus], blocking, overloaded))
    return result


def _fixes(cfg: AgentConfig, conn: ConnectorConfig, txns: list[TimedTransaction],
           blocking: float, overloaded: bool = False) -> list[str]:
    fixes = []
    worst = max((t for t in txns if t.failure_s == blocking), key=lambda t: t.failure_s,
                default=None)
    bus = cfg.buses[conn.pilot_board.bus]
    if worst is not None and "meter" in worst.label:
        fixes.append(f"move the meter to its own bus (it holds '{conn.pilot_board.bus}' up to "
                     f"{worst.failure_s * 1000:.1f} ms: '{worst.label}')")
        fixes.append("read fewer meter registers per transaction (lower max_words_per_read) "
                     "or choose a meter with fewer registers")
    if isinstance(bus, SerialBus) and bus.baudrate < 115200:
        fixes.append(f"raise the baud rate of bus '{conn.pilot_board.bus}' "
                     f"(now {bus.baudrate}; the boards of hardware.md run 115200)")
    fixes.append(f"lower timeout_ms on bus '{conn.pilot_board.bus}' (now {bus.timeout_ms}) "
                 "to just above the devices' real answer time")
    if not overloaded and (cfg.safety.debounce_samples > 1 or conn.pilot_board.poll_ms > 10):
        # (faster polling on an overloaded port only makes the overload worse)
        fixes.append("poll the pilot board faster (pilot_board.poll_ms) or debounce fewer "
                     "samples (safety.debounce_samples)")
    return fixes


def analyse(cfg: AgentConfig, *, advise: bool = True) -> BusPlanReport:
    """Each bus's schedule and each connector's bound; ``advise``: with fixes for refusals."""
    per_bus = {name: bus_transactions(cfg, name) for name in cfg.buses}
    buses = []
    for name, txns in per_bus.items():
        b = cfg.buses[name]
        line = (f"serial {b.port} {b.baudrate} 8{b.parity}{b.stopbits}"
                if isinstance(b, SerialBus) else f"tcp {b.host}:{b.port}")
        buses.append(BusSchedule(name, line, txns, round(bus_load(txns), 3)))
    bounds = [_bound(cfg, c, per_bus, advise) for c in cfg.board_connectors()]
    wallboxes: list[WallboxPlan] = []
    if cfg.wallbox_connectors():  # imported only for a config that has a wallbox (RSS, P3)
        from agent.busplan_wallbox import plan

        wallboxes = [plan(cfg, c, per_bus) for c in cfg.wallbox_connectors()]
    return BusPlanReport(cfg.safety.reaction_budget_ms, buses, bounds,
                          cfg.safety.accept_reaction_bound_over_budget, wallboxes)


def checked_config(path: str) -> tuple[AgentConfig, BusPlanReport]:
    """The one check ``check-config`` and ``run`` share: validation (ConfigError, exit 2),
    then the schedule (``report.refused``, exit 3). ``run`` calls it before any device is
    opened or any state is written."""
    config = load_config(path)
    return config, analyse(config)


def refusals(report: BusPlanReport) -> list[dict[str, Any]]:
    """Reasons and fixes of the connectors that make the report refused (for the log)."""
    return [{"connector": c.connector, "boundMs": c.bound_ms, "reasons": c.reasons,
             "fixes": c.fixes} for c in report.connectors if not c.ok]


def render(report: BusPlanReport) -> str:
    lines = []
    for bus in report.buses:
        lines.append(f"bus {bus.name}: {bus.line}  (periodic load {bus.load * 100:.1f} %)")
        lines.append(f"  {'transaction':<38} {'priority':<14} {'period':>9} "
                     f"{'nominal':>9} {'if silent':>10}")
        for t in bus.transactions:
            period = f"{t.period_s * 1000:.0f} ms" if t.period_s else "on event"
            lines.append(f"  {t.label:<38} {t.priority:<14} {period:>9} "
                         f"{t.nominal_s * 1000:>6.2f} ms {t.failure_s * 1000:>7.2f} ms")
    lines.append("")
    for c in report.connectors:
        verdict = "OK" if c.ok else "REFUSED"
        if not c.ok and report.accept_over_budget:
            verdict = ("OVER BUDGET, accepted by safety.accept_reaction_bound_over_budget "
                       "(the agent runs and warns at every start)")
        lines.append(f"connector {c.connector}: worst-case reaction (CP change -> contactor-open "
                     f"frame complete) {c.bound_ms:.1f} ms, budget {report.budget_ms:.0f} ms: "
                     f"{verdict}")
        lines.append("  = " + " + ".join(f"{k} {v:.2f}" for k, v in c.terms_ms.items()))
        for r in c.reasons:
            lines.append(f"  reason: {r}")
        for f in c.fixes:
            lines.append(f"  to fix: {f}")
    if report.wallboxes:
        from agent.busplan_wallbox import render_plans

        lines.extend(render_plans(report.wallboxes))
    return "\n".join(lines)
