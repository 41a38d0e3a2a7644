"""MQTT link to the aggregator (mqtt-api.md: Transport, Topics, Delivery).

Public API::

    Link(settings, outbox=..., on_command=..., birth=..., boot_id=..., state=...,
         on_connected=..., on_disconnected=..., rng=...)
        await run()            reconnect loop; returns after stop() or decommission()
        notify()               after each outbox append: publish it now
        publish_state(p)       retained state snapshot (latest kept while offline)
        stop()                 offline status, clean DISCONNECT, run() returns
        await decommission()   final retained status, clear retained state, stop
        connected / last_connected_at / disconnected_since / last_error / protocol
"""

from agent.link.backoff import RandomSource, backoff_ceiling, backoff_delays, full_jitter
from agent.link.client import API_VERSION, Link
from agent.link.ports import (
    BatchMarking,
    CommandHandler,
    CommandMessage,
    JsonSource,
    MemoryOutbox,
    OutboxEntry,
    OutboxSource,
    PendingReply,
    Reply,
    encode_json,
)
from agent.link.settings import LinkSettings, MqttVersion, Topics

__all__ = [
    "API_VERSION",
    "BatchMarking",
    "CommandHandler",
    "CommandMessage",
    "JsonSource",
    "Link",
    "LinkSettings",
    "MemoryOutbox",
    "MqttVersion",
    "OutboxEntry",
    "OutboxSource",
    "PendingReply",
    "RandomSource",
    "Reply",
    "Topics",
    "backoff_ceiling",
    "backoff_delays",
    "encode_json",
    "full_jitter",
]
