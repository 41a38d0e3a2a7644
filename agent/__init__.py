"""evse-edge-agent: the edge agent of a smart AC EV charger."""

__version__ = "0.1.0"
