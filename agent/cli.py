"""``evse-agent``: run the agent, check a config, talk to a running agent.

    evse-agent run -c FILE             run (under systemd: Type=notify); refuses (exit 2 or 3)
                                       what check-config refuses
    evse-agent check-config FILE       validate; print each bus's schedule and reaction bound
    evse-agent status [-c FILE]        live state of a running agent
    evse-agent limit A|none [-c FILE] [--connector N]   the installer's limit (persisted)
    evse-agent start|stop|reset [-c FILE] [--connector N] [--id-tag TAG]
    evse-agent sessions [-c FILE] [--json] [--since ISO|DURATION] [--connector N]
    evse-agent web [-c FILE]           the status page and /metrics (a separate process)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agent import localapi
from agent.config import AgentConfig, load_config
from agent.errors import AgentError, ConfigError, DriverError

DEFAULT_CONFIG = "/etc/evse-agent/evse-agent.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evse-agent", description="EVSE edge agent")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    chk = sub.add_parser("check-config", help="validate a config and print its reaction bound")
    chk.add_argument("file")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    webp = sub.add_parser("web", help="serve the status page and metrics (separate process)")
    webp.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    for name, helptext in (
        ("status", "show the live state of a running agent"),
        ("limit", "set (or clear with 'none') the local current limit of a connector"),
        ("start", "authorise charging on a connector (authorisation: remote)"),
        ("stop", "stop charging on a connector"),
        ("reset", "reset a latched fault once its cause is gone"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("-c", "--config", default=DEFAULT_CONFIG)
        if name != "status":
            sp.add_argument("--connector", type=int, default=1)
        if name == "limit":
            sp.add_argument("amps", help="limit in A, or 'none'")
        if name == "start":
            sp.add_argument("--id-tag", default=None)
        if name == "status":
            sp.add_argument("--json", action="store_true")
    ses = sub.add_parser("sessions", help="list the recorded charging sessions")
    ses.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    ses.add_argument("--json", action="store_true", help="machine-readable output")
    ses.add_argument("--since", default=None,
                     help="ISO date/time (no zone: local time) or a duration back from now "
                          "(90s, 30m, 12h, 7d, 2w); default: all")
    ses.add_argument("--connector", type=int, default=None)
    return p


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: an ISO 8601 date/time, or a duration back from ``now`` such as ``7d``."""
    from datetime import datetime

    value = text.strip()
    unit = value[-1:].lower()
    if unit in _UNITS_S and value[:-1].replace(".", "", 1).isdigit():
        return now - float(value[:-1]) * _UNITS_S[unit]
    try:
        return datetime.fromisoformat(value).astimezone().timestamp()
    except ValueError:
        raise ValueError(f"--since takes an ISO date/time (2026-12-01 or 2026-12-01T08:00Z) or "
                         f"a duration (90s, 30m, 12h, 7d, 2w), got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command == "web":
            return _web(args.config)
        if args.command == "check-config":
            return _check_config(args.file, as_json=args.json)
        return _local(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (AgentError, DriverError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def import_structlog_without_greenlet() -> None:
    """Import structlog with greenlet hidden from it, in the daemon processes only.

    structlog's deprecated ``threadlocal`` module imports greenlet whenever it is installed (a
    development venv has it, through playwright) and with it libstdc++: +1.1 MB RSS in a process
    that runs no greenlet (BENCHMARKS.md P3). Hidden for that one import, structlog falls back to
    ``threading.local``; greenlet stays importable afterwards. A production install
    (requirements/runtime.txt) has no greenlet, so there this changes nothing.
    """
    if "structlog" in sys.modules or "greenlet" in sys.modules:
        return
    sys.modules["greenlet"] = None  # type: ignore[assignment]  # import greenlet -> ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["greenlet"]


def one_malloc_arena() -> bool:
    """Ask glibc for one malloc arena, before the daemon starts any thread; True if asked.

    glibc gives each thread that allocates its own arena (64 MB reserved; resident here: the
    store writer's SQLite connections ~0.7 MB, the executor's reads ~0.3 MB). The daemon
    allocates little off the event loop, so they share the main one: -0.5 MB RSS measured with
    MALLOC_ARENA_MAX=1, ctypes costs 0.18 MB of it (BENCHMARKS.md P3). The systemd unit sets the
    variable, and where it is set (or the C library is not glibc's) nothing is done here.
    """
    import os

    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(-8, 1))  # M_ARENA_MAX (malloc.h)


def _run(path: str) -> int:
    """check-config's verdict first (same code, same exit codes): nothing is opened or written
    for a config check-config refuses."""
    one_malloc_arena()
    import_structlog_without_greenlet()
    from agent.busplan import checked_config, refusals, render
    from agent.logsetup import configure_logging

    config, report = checked_config(path)
    configure_logging(config.logging.level)
    if report.refused:
        import structlog

        structlog.get_logger("agent.cli").error(
            "startup_refused", config=path, budget_ms=report.budget_ms,
            connectors=refusals(report), hint=f"evse-agent check-config {path}")
        print(f"evse-agent run: refused, {path} fails check-config:\n{render(report)}",
              file=sys.stderr)
        return 3
    from agent.shell.app import run_agent

    asyncio.run(run_agent(config, report))
    return 0


def _web(path: str) -> int:
    """The page and metrics: reads the config, never opens a device or the agent's files."""
    import contextlib
    import signal

    from agent.logsetup import configure_logging
    from agent.web.server import serve

    config = load_config(path)
    configure_logging(config.logging.level)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(config)

    asyncio.run(main())
    return 0


def _check_config(path: str, *, as_json: bool) -> int:
    from agent.busplan import checked_config, render

    _, report = checked_config(path)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render(report))
    return 3 if report.refused else 0


def _local(args: argparse.Namespace) -> int:
    if args.command == "sessions":
        return _sessions(args)
    config: AgentConfig = load_config(args.config)
    sock = localapi.socket_path(config.state_dir)
    req: dict[str, Any] = {"cmd": args.command}
    if args.command != "status":
        req["connector"] = args.connector
    if args.command == "limit":
        from agent.orderly.installer import LimitValueError, parse_limit

        try:
            req["limit_a"] = parse_limit(args.amps)
        except LimitValueError as exc:
            print(f"evse-agent limit: {exc}", file=sys.stderr)
            return 2
    if args.command == "start":
        req["id_tag"] = args.id_tag
    reply = localapi.request(Path(sock), req)
    if args.command == "status" and not getattr(args, "json", False) and reply.get("ok"):
        print(_render_status(reply))
    else:
        print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _sessions(args: argparse.Namespace) -> int:
    import time

    try:
        since = None if args.since is None else parse_since(args.since, time.time())
    except ValueError as exc:
        print(f"evse-agent sessions: {exc}", file=sys.stderr)
        return 2
    config: AgentConfig = load_config(args.config)
    req: dict[str, Any] = {"cmd": "sessions", "since": since, "connector": args.connector}
    try:
        reply = localapi.request(localapi.socket_path(config.state_dir), req, timeout_s=30.0)
    except AgentError as exc:  # agent stopped: read the ledger file itself, read-only
        from agent.ledger import read_sessions

        path = config.state_dir / "sessions.db"
        print(f"evse-agent sessions: {exc}; reading {path} directly", file=sys.stderr)
        found = read_sessions(path, since=since, connector=args.connector)
        reply = {"ok": True, "sessions": [s.listing() for s in found]}
    if not reply.get("ok"):
        print(json.dumps(reply, indent=2))
        return 1
    if args.json:
        print(json.dumps(reply["sessions"], indent=2))
    else:
        print(render_sessions(reply["sessions"]))
    return 0


def render_sessions(sessions: list[dict[str, Any]]) -> str:
    if not sessions:
        return "no sessions recorded"
    rows = [("CONN", "START", "END", "ENERGY kWh", "MAX A", "STOP REASON", "CURTAILMENTS")]
    for s in sessions:
        merged = s.get("curtailmentsMerged")
        curt = str(len(s["curtailments"])) + (f" (+{merged['count']} merged)" if merged else "")
        rows.append((str(s["connector"]), s["start"], s["end"] or "(plugged in)",
                     f"{s['energyWh'] / 1000:.3f}", f"{s['maxCurrentA']:g}",
                     s["stopReason"] or "-", curt))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _render_status(st: dict[str, Any]) -> str:
    lines = [f"device {st['deviceId']}  pid {st['pid']}  ready {st['ready']}  "
             f"up {st['uptimeS']} s"]
    for c in st["connectors"]:
        meter = c.get("meter") or {}
        if c.get("pilot") == "wallbox":  # its pilot and contactor are its own: not seen here
            pilot = f"wallbox {c.get('wallboxProfile')}"
            contactor = f"charging={'yes' if c['contactorCommanded'] else 'no'}"
        else:
            pilot = f"CP {c['cpMv']} mV"
            contactor = (f"contactor cmd={'closed' if c['contactorCommanded'] else 'open'} "
                         f"fb={c['contactorFeedback']}")
        lines.append(
            f"  connector {c['connector']}: {c['state']:<9} EV {c['evLevel'] or '-':<8} "
            f"{pilot}  offered {c['offeredCurrentA']} A  {contactor}  "
            f"I={meter.get('currentA')} A  "
            f"E={meter.get('energyImportWh')} Wh  faults={c['faults'] or 'none'}"
        )
        lim = c.get("limit")
        if lim:
            amps = "-" if lim["limitA"] is None else f"{lim['limitA']:g} A"
            lines.append(f"    limit {amps} from {lim['source']} ({lim['layer']} layer"
                         f"{', ' + lim['ref'] if lim.get('ref') else ''})"
                         f"{' since ' + lim['since'] if lim.get('since') else ''}")
    for name, bus in st.get("buses", {}).items():
        lines.append(f"  bus {name}: {bus}")
    bound = st.get("reactionBound") or {}
    if bound.get("overBudgetAccepted"):
        bounds = ", ".join(f"{v:.1f} ms (connector {k})" for k, v in bound["boundMs"].items())
        lines.append(f"  WARNING reaction bound {bounds} over the {bound['budgetMs']:.0f} ms "
                     "budget: running only because of safety.accept_reaction_bound_over_budget")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
