"""Keep the daemon's import set to what it runs (BENCHMARKS.md, P3 RSS notes).

pydantic's plugin loader imports ``importlib.metadata`` at module level, and with it
``zipfile``, ``csv`` and ``importlib.resources``: +0.85 MB RSS and ~12 ms of start-up, even
when ``PYDANTIC_DISABLE_PLUGINS`` tells it to load nothing. With that setting (the systemd unit
sets it) the loader's one function answers "no plugins" before it reads anything, so a loader
with only that answer is the same loader, minus the import. Without the setting, pydantic's own
loader runs untouched.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable
from typing import Any

LOADER = "pydantic.plugin._loader"
# the values pydantic.plugin._loader.get_plugins reads as "no plugins at all"
PLUGINS_OFF = ("__all__", "1", "true")


def _no_plugins() -> Iterable[Any]:
    return ()


def skip_pydantic_plugin_loader() -> bool:
    """Stand in for pydantic's plugin loader when plugins are switched off; True if it did.

    Must run before the first model class is built (the loader is imported at the first
    ``create_schema_validator``): ``agent/__init__.py`` calls it.
    """
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS") not in PLUGINS_OFF or LOADER in sys.modules:
        return False
    loader = types.ModuleType(LOADER, "pydantic's plugin loader with plugins switched off")
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = loader
    return True
