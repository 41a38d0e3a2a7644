"""Commands in, replies out: what the link does with each message on a ``cmd`` topic.

A command arrives on the device's own ``cmd`` topic or a group's; a retained one is ignored
(it would re-run on every subscribe). The command layer (``CommandHandler``) answers; the reply
goes to ``rsp`` or, on MQTT 5, to the command's Response Topic with its Correlation Data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiomqtt import Client, Message, MqttError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import LinkError
from agent.link.connect import properties
from agent.link.ports import CommandHandler, CommandMessage, PendingReply, Reply
from agent.link.settings import MqttVersion, Topics

log = structlog.get_logger("agent.link")

_TOPIC_FORBIDDEN = frozenset("+#\x00")

Publish = Callable[..., Awaitable[None]]  # (client, topic, payload, *, properties=None)


class CommandInbound:
    """Serves the command topics of one device; ``handling`` is held while a command is applied
    and ``replied()`` waits for the replies still due (a requested stop waits for both).

    Commands are applied one at a time, in order. A handler may answer with a ``PendingReply``
    (its reply waits for storage): the next command is applied meanwhile, so a command's duty
    write never waits for the previous command's fsyncs; the replies still go out one at a time
    in the order of their commands (``send_replies``, a task of the same connection)."""

    def __init__(self, topics: Topics, groups: Sequence[str], on_command: CommandHandler,
                 publish: Publish) -> None:
        self.topics = topics
        self.groups = tuple(groups)
        self.on_command = on_command
        self.publish = publish
        self.handling = asyncio.Lock()
        self._due: asyncio.Queue[tuple[CommandMessage, PendingReply]] = asyncio.Queue()

    def open(self) -> None:
        """A new connection: replies due on the last one are dropped (their commands stay
        applied and recorded; a redelivery is answered ``duplicate``)."""
        self._due = asyncio.Queue()

    async def serve(self, client: Client) -> None:
        """Handle messages one at a time until the connection ends (``LinkError``)."""
        try:
            async for message in client.messages:
                async with self.handling:
                    await self._handle(message)
        except MqttError as exc:
            raise LinkError("connection lost", reason=str(exc)) from exc

    async def send_replies(self, client: Client, protocol: MqttVersion) -> None:
        """Send the pending replies in the order their commands came."""
        due = self._due
        try:
            while True:
                command, pending = await due.get()
                try:
                    reply = await pending.reply()
                except Exception:  # the command layer's bug; keep the link alive
                    log.exception("mqtt_command_handler_failed", topic=command.topic)
                    reply = None
                finally:
                    due.task_done()
                if reply is not None:
                    await self._send_reply(client, protocol, command, reply.encode())
        except MqttError as exc:
            raise LinkError("connection lost", reason=str(exc)) from exc

    async def replied(self) -> None:
        """Every reply due so far is sent (or given up)."""
        await self._due.join()

    def _group_of(self, topic: str) -> str | None:
        for gid, group_topic in zip(self.groups, self.topics.group_cmds, strict=True):
            if topic == group_topic:
                return gid
        return None

    async def _handle(self, message: Message) -> None:
        topic = message.topic.value
        group = self._group_of(topic)
        if topic != self.topics.cmd and group is None:
            log.warning("mqtt_unexpected_message", topic=topic)
            return
        if message.retain:  # a retained command would re-run on every subscribe
            log.warning("mqtt_retained_command_ignored", topic=topic)
            return
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        command = CommandMessage(
            topic=topic,
            payload=bytes(message.payload),
            group=group,
            response_topic=response_topic or None,
            correlation_data=bytes(correlation) if correlation is not None else None,
            received_at=time.time(),
        )
        try:
            reply = await self.on_command(command)
        except Exception:  # the command layer's bug; keep the link (and other commands) alive
            log.exception("mqtt_command_handler_failed", topic=topic)
            return
        if reply is not None:  # sent by send_replies, in order
            pending = reply if isinstance(reply, PendingReply) else PendingReply(_ready(reply))
            self._due.put_nowait((command, pending))

    async def _send_reply(self, client: Client, protocol: MqttVersion, command: CommandMessage,
                          payload: bytes) -> None:
        target = self.topics.rsp
        props: Properties | None = None
        if protocol == "5":
            props = properties(PacketTypes.PUBLISH)
            props.ContentType = "application/json"
            if command.correlation_data is not None:
                props.CorrelationData = command.correlation_data
            if command.response_topic is not None:
                if publishable(command.response_topic):
                    target = command.response_topic
                else:
                    log.warning("mqtt_bad_response_topic", topic=command.response_topic)
        await self.publish(client, target, payload, properties=props)
        log.info("mqtt_reply_sent", topic=target, bytes=len(payload),
                 correlated=command.correlation_data is not None)


def _ready(reply: Reply) -> Callable[[], Awaitable[Reply | None]]:
    async def ready() -> Reply | None:
        return reply
    return ready


def publishable(topic: str) -> bool:
    """A topic a reply may go to: no wildcards or NUL, within MQTT's length."""
    return bool(topic) and not (_TOPIC_FORBIDDEN & set(topic)) and len(topic.encode()) < 65536
