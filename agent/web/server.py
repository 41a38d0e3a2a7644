"""``evse-agent web``: the installer's status page and the operator's metrics, as its own process.

It holds no charging state and touches no device: everything it shows comes from the agent's
control socket, and every action it takes is a control-socket command the CLI could send too.
So the safety daemon keeps its footprint and attack surface; this process may crash, be
stopped, or never be enabled.

Routes: ``/`` the page (static files, no build step), ``/api/status`` one snapshot,
``/api/events`` server-sent events (a full snapshot, then merge patches), ``/metrics``
Prometheus text, ``POST /api/connectors/{id}/{limit|reset|start|stop}`` installer actions
(token and origin checked by ``agent.web.auth``; every one, accepted or refused, goes to the
security log).
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import localapi
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.orderly.security import SecurityLog
from agent.web.auth import Gate, WrongTokenThrottle, load_token, token_path
from agent.web.metrics import registry
from agent.web.source import PanelSource, ask_agent

log = structlog.get_logger("agent.web")

STATIC = Path(__file__).parent / "static"
HEARTBEAT_S = 15.0
ACTIONS = ("limit", "reset", "start", "stop")
REMOTE_ONLY = frozenset({"start", "stop"})  # "remote start/stop where configured"
MAX_BODY = 4096
SOURCE_KEY = web.AppKey("source", PanelSource)
GATE_KEY = web.AppKey("gate", Gate)
SECURITY_KEY = web.AppKey("security", SecurityLog)
CONFIG_KEY = web.AppKey("config", AgentConfig)
THROTTLE_KEY = web.AppKey("throttle", WrongTokenThrottle)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class ActionRefusedError(AgentError):
    """An installer action the web process refuses (HTTP status, reason code)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def build_app(config: AgentConfig, *, token: str | None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_headers])
    source = PanelSource(localapi.socket_path(config.state_dir), config.web.poll_ms / 1000)
    app[SOURCE_KEY] = source
    app[GATE_KEY] = Gate.for_config(config.web, token)
    app[SECURITY_KEY] = SecurityLog(config.state_dir / "security.log")
    app[CONFIG_KEY] = config
    app[THROTTLE_KEY] = WrongTokenThrottle()
    reg = registry(lambda: source.snapshot)

    async def metrics(_req: web.Request) -> web.Response:
        await source.fresh()
        return web.Response(body=generate_latest(reg),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/", _index)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/connectors/{connector}/{action}", _action)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)

    async def _close(_app: web.Application) -> None:
        await source.close()

    app.on_cleanup.append(_close)
    return app


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    if not response.prepared:
        response.headers.update(HEADERS)
    return response


async def _index(_req: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _page_info(app: web.Application) -> dict[str, Any]:
    cfg = app[CONFIG_KEY]
    return {"actionsEnabled": app[GATE_KEY].token is not None, "pollMs": cfg.web.poll_ms}


async def _status(request: web.Request) -> web.Response:
    snap = await request.app[SOURCE_KEY].fresh()
    return web.json_response({**snap, "web": _page_info(request.app)})


async def _events(request: web.Request) -> web.StreamResponse:
    source = request.app[SOURCE_KEY]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", **HEADERS})
    await response.prepare(request)
    if source.polls == 0:
        await source.fetch()
    queue = source.subscribe()  # patches from here on apply to this snapshot
    first = {**source.snapshot, "web": _page_info(request.app)}
    try:
        await _send(response, "full", first)
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    patch = await queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if patch:
                await _send(response, "patch", patch)
            else:  # fell behind: start again from the whole picture
                await _send(response, "full", {**source.snapshot,
                                               "web": _page_info(request.app)})
    except ConnectionResetError:  # the page went away
        pass
    finally:
        source.unsubscribe(queue)
    return response


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    await response.write(f"event: {event}\ndata: {body}\n\n".encode())


# --- installer actions -------------------------------------------------------------------------

async def _action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    connector = request.match_info["connector"]
    record: dict[str, Any] = {"action": action, "connector": connector,
                              "remote": request.remote, "origin": request.headers.get("Origin")}
    try:
        req = await _checked(request, action, connector)
        record["request"] = {k: v for k, v in req.items() if k not in ("cmd", "connector")}
        reply = await _forward(request.app, req)
    except ActionRefusedError as exc:
        request.app[SECURITY_KEY].record("webActionRefused", **record, reason=exc.reason,
                                         detail=exc.detail or None)
        return web.json_response({"ok": False, "reason": exc.reason, "detail": exc.detail},
                                 status=exc.status)
    request.app[SECURITY_KEY].record("webAction", **record)
    await request.app[SOURCE_KEY].fetch()  # the pages see the result without waiting a poll
    return web.json_response({"ok": True, "connector": reply.get("connector")})


async def _checked(request: web.Request, action: str, connector: str) -> dict[str, Any]:
    throttle = request.app[THROTTLE_KEY]
    if throttle.blocked():
        raise ActionRefusedError(429, "too_many_wrong_tokens", "wait a minute")
    refusal = request.app[GATE_KEY].refusal(
        host=request.headers.get("Host"), origin=request.headers.get("Origin"),
        authorization=request.headers.get("Authorization"))
    if refusal == "token_wrong":
        throttle.wrong()
    if refusal is not None:
        status = 401 if refusal.startswith("token_") else 403
        raise ActionRefusedError(status, refusal)
    if action not in ACTIONS:
        raise ActionRefusedError(404, "unknown_action", f"one of {', '.join(ACTIONS)}")
    if request.content_type != "application/json":
        raise ActionRefusedError(415, "json_required", "Content-Type: application/json")
    try:
        body = await request.json()
        cid = int(connector)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ActionRefusedError(400, "bad_request", str(exc)[:100]) from exc
    if not isinstance(body, dict):
        raise ActionRefusedError(400, "bad_request", "the body is a JSON object")
    conn = next((c for c in request.app[CONFIG_KEY].connectors if c.id == cid), None)
    if conn is None:
        raise ActionRefusedError(404, "no_such_connector")
    if action in REMOTE_ONLY and conn.authorisation != "remote":
        raise ActionRefusedError(409, "not_configured",
                      "start/stop need authorisation: remote on this connector")
    req: dict[str, Any] = {"cmd": action, "connector": cid, "via": "web"}
    if action == "limit":
        value = body.get("limitA")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or not 0 <= value <= 80):
            raise ActionRefusedError(400, "bad_limit", "limitA: 0..80 A, or null to clear")
        req["limit_a"] = value
    if action == "start" and isinstance(body.get("idTag"), str):
        req["id_tag"] = body["idTag"][:64]
    return req


async def _forward(app: web.Application, req: dict[str, Any]) -> dict[str, Any]:
    try:
        reply = await ask_agent(app[SOURCE_KEY].socket, req)
    except (OSError, ValueError, TimeoutError) as exc:
        raise ActionRefusedError(502, "agent_unreachable", str(exc)[:200]) from exc
    if not reply.get("ok"):
        raise ActionRefusedError(409, "agent_refused", str(reply.get("error", ""))[:200])
    return reply


# --- the process ---------------------------------------------------------------------------------

async def serve(config: AgentConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (SIGTERM/SIGINT); ConfigError (exit 2) for a bad token file."""
    token = load_token(token_path(config.web))
    app = build_app(config, token=token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.web.listen, config.web.port)
    try:
        await site.start()
        log.info("web_ready", listen=config.web.listen, port=config.web.port,
                 actions="enabled" if token else "disabled (no token_file)",
                 socket=str(app[SOURCE_KEY].socket))
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
