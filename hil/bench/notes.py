"""What limited a figure that missed its goal: findings of profiling (py-spy, /proc), attached to
the report only when that benchmark actually misses a goal in the run."""

from __future__ import annotations

from hil.bench.stats import BenchResult

LIMITS: dict[str, list[str]] = {
    "P1": [
        "Fixed while building the bench: (1) with Nagle's algorithm on, the agent's reply waited "
        "for the broker's delayed ACK (40 ms on Linux); the agent sets TCP_NODELAY "
        "(agent/link/connect.py) and the bench broker runs `set_tcp_nodelay true` (production "
        "brokers should too). (2) py-spy (--gil, 500 Hz, 20 s of P1): 31 % of the agent's CPU "
        "went to the session ledger's curtailment record (the whole record re-encoded on every "
        "limit change), run by the control task before it fed the new limit; the feed now runs "
        "first (OrderlyControl.carry_out) and the bookkeeping after (p99 29.7 -> ~19 ms).",
        "What remains, by stage (temporary timestamps in the agent, 500 commands): receipt -> "
        "parsed 0.16 ms, -> envelope checked 0.26 ms, -> applied 1.8 ms (limits engine, "
        "commandSuperseded journal commit), applied -> duty frame written 0.17 ms when the "
        "control bus is free but ~7 ms when the 10 ms pilot poll holds it (a read is ~4.5 ms on "
        "the wire with the rig's 1 ms answer latency, then the Modbus t3.5 gap of 1.75 ms): "
        "an RTU transaction in flight cannot be preempted.",
    ],
    "P2": [
        "Single-bus 19200: the 8-register pilot read alone takes ~17 ms on the line and the "
        "meter's 16-word reads hold the bus up to ~25 ms more, so the 10 ms poll cannot be kept "
        "(check-config: periodic load > 200 %) and reactions stretch towards its bound.",
    ],
    "P3": [
        "RSS, smaps of the agent while charging: anonymous memory ~29 MB (tracemalloc: 22 MB "
        "allocated while importing, 0.3 MB while running: the imported modules themselves), "
        "libpython 5.1 MB, _pydantic_core.so 4.4 MB, libcrypto 3.5 MB (asyncio imports ssl), "
        "libc 1.4 MB, libsqlite3 1.2 MB. Import steps: asyncio + ssl +9.4 MB, pydantic +7.8 MB, "
        "the config module +5.1 MB (4.7 MB of it pydantic's first model build, whose "
        "plugin loader imports importlib.metadata), structlog +1.4 MB, sqlite3 +1.3 MB, "
        "yaml +1.1 MB; the "
        "mandated dependencies alone (asyncio, ssl, sqlite3, pydantic, pymodbus framer/PDUs, "
        "pyserial, aiomqtt, structlog, yaml; no agent code) are 36.4 MB. Done: "
        "cryptography loads only with issuer keys (-7.5 MB), API models build on first use "
        "(-1.5 MB), SQLite page cache 512 KiB "
        "per database (-1.5 MB on a grown journal). The rest is the interpreter and the "
        "libraries' import cost: 45 MB needs a runtime without pydantic (config and API "
        "validation) or a smaller interpreter, a design change.",
        "CPU, py-spy (--gil) and strace of the agent while charging: the 10 ms pilot poll is "
        "~0.5 ms of CPU per cycle on this VM: the asyncio loop's own machinery (timers, epoll, "
        "task switches) ~40 %, Modbus encode/decode through pymodbus's RTU framer and PDU "
        "classes (CRC in pure Python) ~30 %, the pilot machine ~12 %, driver and connector glue "
        "the rest; no single hot spot is left. Done: pymodbus's client transaction layer "
        "replaced by a reader-callback RTU link (same framer), transactions run in the "
        "caller's task when the bus is idle, the 10 ms loop-lag probe task removed (the poll "
        "measures its own lateness), the duty arithmetic memoised, one-word registers decoded "
        "directly: 7.3-9.0 % -> ~6 %. With `poll_ms: 20` the agent uses ~4.4 % (measured, "
        "30 s). 3 % of a core is 0.3 ms per 10 ms cycle: CPython's per-wake-up cost on this "
        "CPU is the limit at the 10 ms poll that the 100 ms GB/T 34657.1 reaction budget "
        "(P2) is built on.",
        "P3a/P3b (issue 12), CPU per safety poll cycle, run on its own "
        "(`hil/bench/p3_footprint.run`, 60 s charging, 30 s plugged-in idle, 30 s no vehicle, "
        "2026-12-04T14:45-14:52Z, under the bench lock; 2 vCPU Intel Xeon KVM, Python 3.11.7; the "
        "rig and the bench in another process). Before -> after this change: charging median 335 "
        "-> 345 us, p99 1545 -> 1555 us, mean 390 -> 390 us (3.90 % -> 3.90 % of one core); "
        "plugged-in idle 4.03 -> 3.70 %; no vehicle 4.37 -> 3.87 % (the 10 ms poll runs in every "
        "state, so idle costs what charging costs; run-to-run noise on this shared VM is ~0.3 "
        "points). Removed per cycle: the pilot read's pymodbus request PDU and RTU frame (built "
        "once per unit/function/address/count and reused; pymodbus still builds it), the pilot "
        "sample's generic decode (a dict of 8 floats, then int() of each) replaced by a "
        "field-by-field decode checked against the register map at import and against "
        "decode_block by a property test: ~10 us warm in a micro-benchmark, below this VM's noise "
        "per cycle. What the cycle costs (py-spy --gil 500 Hz, 30 s charging, 216 samples = 0.43 "
        "s of the 1.15 s CPU; the rest is wake-up and kernel time): control loop 49 % (pilot read "
        "21 %: scheduler + link 12.5 %, decode 6.5 %; the pilot machine's step 20 %), the reader "
        "callback with pymodbus's handleFrame 20 % (RTU framing + pure-Python CRC 8 %, PDU decode "
        "8 %, of which pymodbus's eager str(pdu) for a debug line it does not emit 2 %), "
        "asyncio's own machinery ~15 %, telemetry and the session tracker 4 %. The floor: an "
        "empty asyncio task sleeping to a 10 ms grid costs 75 us of process CPU per wake-up on "
        "this VM (uvloop: 74 us), and a poll cycle has at least two (the poll timer and the "
        "answer; a relay read every 10th cycle adds a t3.5-gap wake-up and its own answer), so "
        "~150 us per cycle is the wake-up floor alone: the 150 us median goal needs fewer "
        "wake-ups per cycle, not cheaper Python. What would remove it: (1) pipelining the poll "
        "(send the next pilot read right after handling an answer, read the answer at the next "
        "timer wake-up: one wake-up per cycle, the sample no older than today's, but a "
        "SAFETY_WRITE would wait behind a read already on the wire: a change to the bus's "
        "reaction bound, check-config and P2); (2) a slower poll while the contactor is open and "
        "commanded open (no vehicle, plugged-in idle), back to 10 ms before any close: the only "
        "way to the 1 % / 0.5 % idle goals at this wake-up cost, and a product decision on the "
        "core's debounce (counted in samples) that this change does not take. The measurement "
        "itself costs one clock_gettime(CLOCK_PROCESS_CPUTIME_ID) per cycle. "
        "After (py-spy --gil 500 Hz, 60 s charging, 491 samples, nonblocking so some stacks are "
        "cut): the pilot read 21 % -> 8 % of the samples (its decode 6.5 % -> 2 %), the pilot "
        "machine's step 10-12 %, the reader callback with handleFrame 13 %, and asyncio's own "
        "machinery (Handle._run, _run_once, select, call_later/call_at, the timer heap) is now "
        "the largest block at ~35 %.",
        "Idle polls (issue 12, README decisions): with no vehicle the pilot poll runs every "
        "pilot_board.idle_poll_ms (40 ms), and while the contactor is open and confirmed the "
        "relay feedback every relay_board.idle_poll_ms (400 ms); any change polls at poll_ms "
        "again. Same sitting, 2026-12-04 17:28-17:37Z: no vehicle 5.50 -> 2.13 %, plugged in "
        "idle (PWM on, still 10 ms) 7.27 -> 5.83 %. py-spy before (500 Hz, 20 s charging): "
        "epoll_wait 36 %, os.write of the request to the pty 21.5 %, the machine's step 13 %, "
        "the reader callback 6 %. Left: the wake-up floor (~150 us a cycle) and, plugged in with "
        "PWM on, the 100 ms PWM-off limit with a 2-sample debounce (a poll of <= ~18 ms).",
    ],
    "P4": [],
    "P5": [],
    "P6": [
        "The limit is this machine: every agent comes with its own simulated rig (Python device "
        "simulators + pty bridges with line timing) on the same 2 CPUs, so the fleet runs at "
        "100 ms pilot poll, a 50 ms Modbus timeout and pilot_lost_ms 500 (P6 measures the MQTT "
        "path; P2 the safety timings). When the machine saturates, a starved rig answers late, "
        "its agent raises PILOT/RELAY_BOARD_LOST (correctly) and stops offering, and a group "
        "command finds no duty to change: those are the agent-commands without a frame. "
        "Measured (10 agents, 20 s, /proc): an agent at 100 ms poll uses 1.15 % of a core, a "
        "helper serving 5 rigs 7.3 % (py-spy: its pty-bridge threads' line timing and GIL "
        "hand-offs); 50 stations are ~130 % of one core before MQTT, the broker and the bench.",
    ],
}


def attach(res: BenchResult) -> None:
    """Add the known limits of ``res.bench`` when any of its figures missed its goal."""
    if any(f.met is False for f in res.figures) or res.error:
        res.notes.extend(LIMITS.get(res.bench, []))
