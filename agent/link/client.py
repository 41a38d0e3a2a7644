"""The MQTT link to the aggregator: reconnect loop, outbox and snapshots out.

Commands in and their replies are ``agent.link.inbound``'s; this module owns the connection.

Why it looks like this (aiomqtt 2.5, see research/stack.md §5-6): aiomqtt has no auto-reconnect,
so ``run`` loops around ``async with client`` and re-subscribes on every connect; publishing while
disconnected raises at once, so every ``evt``/``tel`` comes from the durable outbox and is marked
sent only after its PUBACK; the client is built inside the running loop on every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import structlog
from aiomqtt import Client, MqttError, Will
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.errors import LinkError
from agent.link.backoff import RandomSource, full_jitter
from agent.link.connect import build_client, connect_error, reason_code, tls_context
from agent.link.drain import OutboxDrainer
from agent.link.inbound import CommandInbound
from agent.link.ports import CommandHandler, JsonSource, OutboxEntry, OutboxSource, encode_json
from agent.link.settings import LinkSettings, MqttVersion, Topics

log = structlog.get_logger("agent.link")

API_VERSION = 1
GOODBYE_TIMEOUT_S = 1.0

ConnectedCallback = Callable[[float | None], object]
DisconnectedCallback = Callable[[], object]


class _StopRequestedError(Exception):
    """Raised inside the session's task group to end it after ``stop()``."""


class Link:
    """One device's connection to the broker; ``run()`` until ``stop()`` or ``decommission()``."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        outbox: OutboxSource,
        on_command: CommandHandler,
        birth: JsonSource,
        boot_id: str,
        state: JsonSource | None = None,
        on_connected: ConnectedCallback | None = None,
        on_disconnected: DisconnectedCallback | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        settings.validate()  # ConfigError before anything starts (e.g. password without TLS)
        self.settings = settings
        self.topics = Topics.for_settings(settings)
        self.boot_id = boot_id
        self.protocol: MqttVersion = settings.protocol
        self._outbox = outbox
        self._drainer = OutboxDrainer(outbox, window=settings.drain_window,
                                      batch=settings.drain_batch)
        self._inbound = CommandInbound(self.topics, settings.groups, on_command, self._publish)
        self._birth = birth
        self._state = state
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._rng: RandomSource = rng or random.SystemRandom()

        self.connected = False
        self.last_connected_at: float | None = None  # wall clock
        self.disconnected_since: float | None = time.time()  # wall clock; down since creation
        self.last_error: LinkError | None = None
        self.connect_count = 0
        self._down_since_mono: float | None = None  # None until the first connection was lost
        self._client: Client | None = None
        self._state_event = asyncio.Event()
        self._state_pending: bytes | None = None
        self._stop_event = asyncio.Event()
        self._decommissioned = False
        self._fall_back = False
        self._backlog_upto = 0

    # --- what the lead calls -------------------------------------------------------------------

    def notify(self) -> None:
        """A row was appended to the outbox: publish it now (call after each journal append)."""
        self._drainer.notify()

    def publish_state(self, payload: Mapping[str, Any] | bytes) -> None:
        """Publish a retained ``state`` snapshot; only the latest is kept while offline."""
        self._state_pending = payload if isinstance(payload, bytes) else encode_json(payload)
        self._state_event.set()

    def stop(self) -> None:
        """End ``run()`` after the command in progress: offline status, clean DISCONNECT."""
        self._stop_event.set()

    async def decommission(self) -> None:
        """Final retained status, cleared retained state; then the link stops for good."""
        client = self._live_client()
        final = {"online": False, "decommissioned": True, "deviceId": self.settings.device_id,
                 "bootId": self.boot_id}
        await self._publish(client, self.topics.status, encode_json(final), retain=True)
        await self._publish(client, self.topics.state, b"", retain=True)  # empty: clear retained
        self._decommissioned = True
        self._stop_event.set()
        log.warning("mqtt_decommissioned", device_id=self.settings.device_id)

    async def republish_status(self) -> None:
        """``resync``: send the birth ``status`` and a fresh ``state`` again."""
        client = self._live_client()
        await self._publish_birth_and_state(client)

    async def resend(self, entries: Iterable[OutboxEntry]) -> int:
        """``resync``: publish rows again (already marked sent; nothing is marked here)."""
        client = self._live_client()
        count = 0
        for entry in entries:
            await self._publish(client, self.topics.outbox(entry.topic_suffix), entry.payload)
            count += 1
        return count

    # --- reconnect loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with full-jitter backoff; returns after stop/decommission."""
        if self._decommissioned:
            raise LinkError("decommissioned: re-provision before connecting again")
        tls = tls_context(self.settings) if self.settings.tls else None
        attempt = 0
        while not self._stop_event.is_set():
            reached = self.connect_count
            try:
                await self._session(tls)
            except LinkError as exc:
                self.last_error = exc
                if self._fall_back:
                    self._fall_back = False
                    self.protocol = "3.1.1"
                    log.warning("mqtt_protocol_fallback", to="3.1.1", reason=str(exc))
                    continue
            if self._stop_event.is_set():
                break
            if self.connect_count != reached:
                attempt = 0  # it was up: start the backoff again (still jittered)
            delay = full_jitter(
                attempt, self.settings.backoff_base_s, self.settings.backoff_max_s, self._rng
            )
            attempt += 1
            log.info("mqtt_reconnect_scheduled", attempt=attempt, delay_s=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
        log.info("mqtt_link_stopped", decommissioned=self._decommissioned)

    async def _session(self, tls: ssl.SSLContext | None) -> None:
        client = self._make_client(tls)
        up = False
        try:
            async with client:
                self._client = client
                await self._subscribe(client)
                await self._publish_birth_and_state(client)
                self._backlog_upto = self._outbox.last_seq  # later appends are live traffic
                up = True
                await self._mark_connected()
                try:
                    await self._serve(client)
                except asyncio.CancelledError:
                    await self._goodbye(client)
                    raise
                if not self._decommissioned:
                    await self._goodbye(client)
        except MqttError as exc:
            raise self._link_error(exc, up) from exc
        except LinkError as exc:
            self._log_failure(exc, up)
            raise
        finally:
            self._client = None
            if up:
                await self._mark_disconnected()

    async def _serve(self, client: Client) -> None:
        try:
            self._inbound.open()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._inbound.serve(client), name="mqtt-commands")
                tg.create_task(self._inbound.send_replies(client, self.protocol),
                               name="mqtt-replies")
                tg.create_task(
                    self._drainer.drain(partial(self._publish_entry, client), self._backlog_upto),
                    name="mqtt-outbox",
                )
                tg.create_task(self._state_pump(client), name="mqtt-state")
                tg.create_task(self._stop_watch(), name="mqtt-stop")
        except BaseExceptionGroup as group:
            lost, rest = group.split((LinkError, MqttError))
            if rest is not None:
                rest = rest.split(_StopRequestedError)[1]
            if rest is not None:
                raise  # a bug, not the network: let it surface
            if lost is not None:
                first = _leaves(lost)[0]
                if isinstance(first, MqttError):
                    raise LinkError("connection lost", reason=str(first)) from first
                raise first from None
            # only _StopRequestedError: a requested stop

    async def _stop_watch(self) -> None:
        await self._stop_event.wait()
        async with self._inbound.handling:  # a command being handled still gets its reply,
            await self._inbound.replied()  # and so do those applied before it
            raise _StopRequestedError

    # --- connection set-up ---------------------------------------------------------------------

    def _make_client(self, tls: ssl.SSLContext | None) -> Client:
        will = encode_json(
            {"online": False, "deviceId": self.settings.device_id, "bootId": self.boot_id}
        )
        return build_client(self.settings, self.protocol, Will(self.topics.status, will, qos=1,
                                                               retain=True), tls)

    async def _subscribe(self, client: Client) -> None:
        topics = [self.topics.cmd, *self.topics.group_cmds]
        if self.protocol == "5":
            granted = await client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        else:
            granted = await client.subscribe([(t, 1) for t in topics])
        refused = [t for t, rc in zip(topics, granted, strict=False) if reason_code(rc) >= 0x80]
        if refused:
            raise LinkError("broker refused the command subscriptions", topics=refused)

    async def _publish_birth_and_state(self, client: Client) -> None:
        birth = {"online": True, "apiVersion": API_VERSION, "deviceId": self.settings.device_id,
                 "bootId": self.boot_id, **self._birth()}
        await self._publish(client, self.topics.status, encode_json(birth), retain=True)
        pending, self._state_pending = self._state_pending, None
        snapshot = encode_json(self._state()) if self._state is not None else pending
        if snapshot is not None:
            await self._publish(client, self.topics.state, snapshot, retain=True)

    async def _goodbye(self, client: Client) -> None:
        """A clean DISCONNECT discards the Will, so say "offline" ourselves (best effort)."""
        payload = encode_json(
            {"online": False, "deviceId": self.settings.device_id, "bootId": self.boot_id}
        )
        try:
            await client.publish(self.topics.status, payload, qos=1, retain=True,
                                 timeout=GOODBYE_TIMEOUT_S)
        except MqttError as exc:
            log.info("mqtt_goodbye_failed", reason=str(exc))

    async def _mark_connected(self) -> None:
        outage = None
        if self._down_since_mono is not None:
            outage = time.monotonic() - self._down_since_mono
        self.connected = True
        self.connect_count += 1
        self.last_connected_at = time.time()
        self.disconnected_since = None
        self.last_error = None
        log.info("mqtt_connected", host=self.settings.host, port=self.settings.port,
                 protocol=self.protocol, tls=self.settings.tls,
                 outage_s=None if outage is None else round(outage, 3),
                 backlog=self._backlog_upto)
        await self._callback(self._on_connected, outage)

    async def _mark_disconnected(self) -> None:
        self.connected = False
        self.disconnected_since = time.time()
        self._down_since_mono = time.monotonic()
        await self._callback(self._on_disconnected)

    async def _callback(self, fn: Callable[..., object] | None, *args: object) -> None:
        if fn is None:
            return
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a bug in the lead's callback must not take the link down
            log.exception("link_callback_failed", callback=getattr(fn, "__name__", repr(fn)))

    # --- outbox --------------------------------------------------------------------------------

    async def _publish_entry(self, client: Client, entry: OutboxEntry) -> bool:
        try:
            topic = self.topics.outbox(entry.topic_suffix)
        except ValueError:
            log.error("outbox_entry_unroutable", seq=entry.seq, suffix=entry.topic_suffix)
            return False
        await self._publish(client, topic, entry.payload)
        return True

    # --- snapshots -----------------------------------------------------------------------------

    async def _state_pump(self, client: Client) -> None:
        while True:
            await self._state_event.wait()
            self._state_event.clear()
            payload, self._state_pending = self._state_pending, None
            if payload is None:
                continue
            try:
                await self._publish(client, self.topics.state, payload, retain=True)
            except LinkError:
                if self._state_pending is None:
                    self._state_pending = payload  # publish it on the next connection
                raise

    # --- helpers -------------------------------------------------------------------------------

    def _live_client(self) -> Client:
        if self._client is None or not self.connected:
            raise LinkError("not connected to the broker", host=self.settings.host)
        return self._client

    async def _publish(
        self,
        client: Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        try:
            await client.publish(topic, payload, qos=1, retain=retain, properties=properties,
                                 timeout=self.settings.publish_timeout_s)
        except MqttError as exc:
            raise LinkError("publish failed", topic=topic, reason=str(exc)) from exc

    def _link_error(self, exc: MqttError, up: bool) -> LinkError:
        err, refused_v5 = connect_error(exc, self.settings, self.protocol, up)
        self._fall_back = refused_v5
        self._log_failure(err, up)
        return err

    def _log_failure(self, err: LinkError, up: bool) -> None:
        event = "mqtt_disconnected" if up else "mqtt_connect_failed"
        log.warning(event, error=err.message, **err.context)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out

