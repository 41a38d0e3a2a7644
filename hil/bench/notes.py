"""What limited a figure that missed its goal: findings of profiling (py-spy, /proc), attached to
the report only when that benchmark actually misses a goal in the run."""

from __future__ import annotations

from hil.bench.stats import BenchResult

LIMITS: dict[str, list[str]] = {
    "P1": [
        "Found and fixed while building the bench: with Nagle's algorithm on, the agent's reply "
        "(written while its PUBACK for the command was still unacknowledged) waited for the "
        "broker's delayed ACK, 40 ms on Linux, and the next command queued behind it (median "
        "35 ms before). The agent now sets TCP_NODELAY (agent/link/connect.py) and the bench "
        "broker runs `set_tcp_nodelay true`; production brokers should set it too "
        "(deploy/mosquitto is not changed by the bench).",
        "What remains is the command path in the agent's one event loop: parse + envelope check "
        "+ command store commit + limits.json write + commandStarted journal append (each a "
        "SQLite/fsync commit) before the control task feeds the new limit, and the duty write "
        "then waits for the pilot poll in progress on the bus. The tail comes from commands "
        "that land while the loop is busy with the 10 ms poll cycle and the rig's answers "
        "share the same 2 cores.",
    ],
    "P2": [
        "Single-bus 19200: the 8-register pilot read alone takes ~17 ms on the line and the "
        "meter's 16-word reads hold the bus up to ~25 ms more, so the 10 ms poll cannot be kept "
        "(check-config: periodic load > 300 %) and reactions stretch towards its bound.",
    ],
    "P3": [
        "RSS: the agent is at ~54 MB right after its imports, before it does anything "
        "(`python -c 'import agent.shell.app, agent.orderly.service, agent.cli'`, VmRSS): "
        "bare CPython 10.6 MB; pydantic 17.3 MB, with agent/api/models.py's models and its "
        "module-level TypeAdapters 39.2 MB; pymodbus client 23.2 MB, aiomqtt/paho 24.3 MB, "
        "structlog 22.0 MB, each alone. Charging adds ~2-3 MB. `defer_build=True` on the API "
        "models was tried and saves nothing (the module-level TypeAdapters build the schemas "
        "anyway). Meeting 45 MB needs lazy imports of the API models/MQTT stack or fewer "
        "dependencies: not a small change.",
        "CPU: py-spy (200 Hz, 10 s, charging) on the agent: the 10 ms pilot poll loop "
        "dominates: 100 Modbus transactions/s through pymodbus (framer, transaction manager, "
        "serial transport callbacks) + PilotMachine.step + the asyncio loop's wake-ups "
        "(EpollSelector.select/_run_once are ~40 % of active samples); ~0.6 ms of CPU per poll "
        "cycle. The 3 % goal allows 0.3 ms per cycle at 100 Hz; it needs a cheaper Modbus path "
        "than pymodbus's generic transaction manager or a slower safety poll (which would cost "
        "reaction time): not a small, safe fix.",
    ],
    "P4": [],
    "P5": [],
    "P6": [
        "The limit is this machine, not the broker or the link: every agent here comes with its "
        "own simulated rig (Python device simulators + pty bridges with line timing) on the same "
        "2 CPUs. Measured while building the bench: 10 agents at 100 ms pilot poll used 16 % of "
        "one core and their rig helper 14 %; the fleet therefore runs at 100 ms pilot poll "
        "(pilot_lost_ms 300 ms) and 100 ms rig tick, the MQTT side unchanged. At the example's "
        "10 ms poll one agent alone costs ~7 % of a core (P3), so 50 could not run here even "
        "without rigs. When the machine saturates, the rigs answer after the 15 ms Modbus "
        "timeout, agents raise PILOT/RELAY_BOARD_LOST (correctly) and stop offering, and their "
        "group command finds no duty to change: those are the agent-commands without a frame.",
    ],
}


def attach(res: BenchResult) -> None:
    """Add the known limits of ``res.bench`` when any of its figures missed its goal."""
    if any(f.met is False for f in res.figures) or res.error:
        res.notes.extend(LIMITS.get(res.bench, []))
