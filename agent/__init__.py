"""evse-edge-agent: the edge agent of a smart AC EV charger."""

from agent.lean_imports import skip_pydantic_plugin_loader

__version__ = "0.1.0"

skip_pydantic_plugin_loader()
