"""Bounds shared by the config, the API models and the generated JSON schemas.

A module of its own so that loading the config does not build the API models.
"""

from __future__ import annotations

MAX_CONNECTORS = 8  # connector ids are 1..MAX_CONNECTORS in config, models and schemas
