"""Live status of a connector as a plain dict (status file, local socket, `evse-agent status`)."""

from __future__ import annotations

from typing import Any

from agent.shell.handle import ConnectorHandle


def connector_status(ctl: ConnectorHandle) -> dict[str, Any]:
    m = ctl.machine
    meter = ctl.stats.last_meter
    return {
        "connector": ctl.id,
        "hardware": ctl.hardware.hardware,
        "pilot": ctl.hardware.pilot,
        "wallboxProfile": ctl.hardware.wallbox_profile,
        "state": m.state.name,
        "evLevel": m.ev_level.name if m.ev_level is not None else None,
        "cpMv": ctl.stats.last_cp_mv,
        "offeredCurrentA": m.offered_current_a,
        "contactorCommanded": m.contactor_commanded,
        "contactorFeedback": ctl.stats.last_contactor_feedback,
        "authorised": m.authorised,
        "faults": sorted(str(f) for f in m.active_faults),
        "meter": None
        if meter is None
        else {
            "voltageV": list(meter.voltage_v),
            "currentA": list(meter.current_a),
            "powerW": meter.power_w,
            "energyImportWh": meter.energy_import_wh,
        },
        "cycles": ctl.stats.cycles,
        "cycleCpuUs": ctl.stats.cycle_cpu.snapshot(),  # histogram: bucket's lower edge -> count
        "inputsAfterPoll": ctl.stats.inputs_after_poll,  # waited for an overdue pilot poll
        "pollsAfterStall": ctl.stats.polls_after_stall,  # loop steps that read the board first
        "errors": {
            "pilot": ctl.stats.pilot_errors,
            "relay": ctl.stats.relay_errors,
            "meter": ctl.stats.meter_errors,
        },
    }
