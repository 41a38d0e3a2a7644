"""Prometheus metrics of one charger, read from the panel status at scrape time.

A custom collector (prometheus-client's documented pattern for "proxy" exporters): nothing is
counted in the web process; every value is the agent's own, as its control socket reports it.
Names follow the Prometheus conventions (``evse_`` prefix, base units, ``_total`` counters); the
README lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent.faults import FaultCode
from agent.pilot import PilotState

PHASES = ("L1", "L2", "L3")
BUS_ERRORS = (("garbled", "garbled"), ("io_errors", "io"), ("exceptions", "exception"))


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else float(bool(value))


class PanelCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        up = GaugeMetricFamily("evse_agent_up", "1 if the agent answered on its control socket")
        up.add_metric([], 1.0 if snap.get("agent", {}).get("reachable") else 0.0)
        yield up
        status = snap.get("status")
        if not snap.get("agent", {}).get("reachable") or not isinstance(status, dict):
            return
        yield from _agent(status)
        yield from _connectors(status.get("connectors", []))
        yield from _buses(status.get("buses", {}))
        yield from _link(status.get("link"))


def _agent(st: dict[str, Any]) -> Iterator[Metric]:
    ready = GaugeMetricFamily("evse_agent_ready", "1 once the safe state is taken (READY=1)")
    ready.add_metric([], _num(st.get("ready")))
    uptime = GaugeMetricFamily("evse_agent_uptime_seconds", "seconds since the agent started")
    uptime.add_metric([], _num(st.get("uptimeS")))
    lag = GaugeMetricFamily("evse_agent_loop_lag_max_seconds",
                            "latest wake-up of a connector's poll timer since start")
    lag.add_metric([], _num(st.get("maxLoopLagMs")) / 1000)
    bound = GaugeMetricFamily("evse_reaction_bound_seconds",
                              "check-config's worst-case CP change -> contactor-open bound",
                              labels=["connector"])
    for cid, ms in (st.get("reactionBound") or {}).get("boundMs", {}).items():
        bound.add_metric([str(cid)], _num(ms) / 1000)
    yield from (ready, uptime, lag, bound)


def _connectors(connectors: list[dict[str, Any]]) -> Iterator[Metric]:
    lab = ["connector"]
    state = GaugeMetricFamily("evse_connector_state", "1 for the session state the connector "
                              "is in", labels=["connector", "state"])
    offered = GaugeMetricFamily("evse_connector_offered_current_amperes",
                                "current offered by the PWM (0: no PWM)", labels=lab)
    limit = GaugeMetricFamily("evse_connector_limit_amperes",
                              "the limit that sets the offer, by its source",
                              labels=["connector", "source"])
    cp = GaugeMetricFamily("evse_connector_cp_volts", "control-pilot voltage", labels=lab)
    current = GaugeMetricFamily("evse_connector_current_amperes", "meter current per phase",
                                labels=["connector", "phase"])
    voltage = GaugeMetricFamily("evse_connector_voltage_volts", "meter voltage per phase",
                                labels=["connector", "phase"])
    power = GaugeMetricFamily("evse_connector_power_watts", "meter active power", labels=lab)
    energy = CounterMetricFamily("evse_connector_energy_imported_joules",
                                 "meter import register (Wh x 3600)", labels=lab)
    fault = GaugeMetricFamily("evse_connector_fault_active", "1 while the fault code is active",
                              labels=["connector", "code"])
    contactor = GaugeMetricFamily("evse_connector_contactor_closed",
                                  "contactor position: commanded and mirror-contact feedback",
                                  labels=["connector", "signal"])
    closes = CounterMetricFamily("evse_connector_contactor_closes",
                                 "contactor close commands since the agent started", labels=lab)
    lag = GaugeMetricFamily("evse_connector_loop_lag_max_seconds",
                            "latest wake-up of this connector's poll timer", labels=lab)
    for c in connectors:
        cid = str(c.get("connector"))
        for s in PilotState:
            state.add_metric([cid, s.name], 1.0 if c.get("state") == s.name else 0.0)
        offered.add_metric([cid], _num(c.get("offeredCurrentA") or 0))
        lim = c.get("limit") or {}
        limit.add_metric([cid, str(lim.get("source", "none"))], _num(lim.get("a") or 0))
        if c.get("cpMv") is not None:
            cp.add_metric([cid], _num(c["cpMv"]) / 1000)
        meter = c.get("meter")
        if meter:
            for phase, amps in zip(PHASES, meter.get("currentA", []), strict=False):
                current.add_metric([cid, phase], _num(amps))
            for phase, volts in zip(PHASES, meter.get("voltageV", []), strict=False):
                voltage.add_metric([cid, phase], _num(volts))
            power.add_metric([cid], _num(meter.get("powerW")))
            energy.add_metric([cid], _num(meter.get("energyImportWh")) * 3600)
        active = {f.get("code") for f in c.get("faults", [])}
        for code in FaultCode:
            fault.add_metric([cid, code.value], 1.0 if code.value in active else 0.0)
        cont = c.get("contactor") or {}
        contactor.add_metric([cid, "commanded"], _num(cont.get("commanded")))
        if cont.get("feedback") is not None:
            contactor.add_metric([cid, "feedback"], _num(cont.get("feedback")))
        closes.add_metric([cid], _num(cont.get("closes", 0)))
        lag.add_metric([cid], _num(c.get("loopLagMs", 0)) / 1000)
    yield from (state, offered, limit, cp, current, voltage, power, energy, fault, contactor,
                closes, lag)


def _buses(buses: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    transactions = CounterMetricFamily("evse_bus_transactions", "Modbus transactions",
                                       labels=["bus"])
    timeouts = CounterMetricFamily("evse_bus_timeouts", "transactions without an answer",
                                   labels=["bus"])
    errors = CounterMetricFamily("evse_bus_errors", "failed transactions by kind (garbled: "
                                 "CRC or shape, io: port lost, exception: Modbus exception)",
                                 labels=["bus", "kind"])
    retries = CounterMetricFamily("evse_bus_retries", "retried transactions", labels=["bus"])
    reconnects = CounterMetricFamily("evse_bus_reconnects", "port reopened", labels=["bus"])
    busy = CounterMetricFamily("evse_bus_busy_seconds", "time the line was occupied",
                               labels=["bus"])
    for name, b in buses.items():
        transactions.add_metric([name], _num(b.get("transactions", 0)))
        timeouts.add_metric([name], _num(b.get("timeouts", 0)))
        for key, kind in BUS_ERRORS:
            errors.add_metric([name, kind], _num(b.get(key, 0)))
        retries.add_metric([name], _num(b.get("retries", 0)))
        reconnects.add_metric([name], _num(b.get("reconnects", 0)))
        busy.add_metric([name], _num(b.get("busy_s", 0.0)))
    yield from (transactions, timeouts, errors, retries, reconnects, busy)


def _link(link: dict[str, Any] | None) -> Iterator[Metric]:
    if link is None:  # no mqtt section: no aggregator link to report
        return
    connected = GaugeMetricFamily("evse_mqtt_connected", "1 while the aggregator link is up")
    connected.add_metric([], _num(link.get("connected")))
    reconnects = CounterMetricFamily("evse_mqtt_reconnects",
                                     "connections to the broker after the first")
    reconnects.add_metric([], max(0.0, _num(link.get("connects", 0)) - 1))
    backlog = GaugeMetricFamily("evse_journal_backlog_messages",
                                "events and telemetry not yet acknowledged by the broker")
    backlog.add_metric([], _num(link.get("backlog") or 0))
    failsafe = GaugeMetricFamily("evse_failsafe_active", "1 while the fail-safe limit applies")
    failsafe.add_metric([], _num(link.get("failsafe")))
    yield from (connected, reconnects, backlog, failsafe)


def registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PanelCollector(snapshot))
    return reg
