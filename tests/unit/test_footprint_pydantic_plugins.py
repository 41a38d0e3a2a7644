"""Memory footprint: with plugins switched off (the systemd unit's PYDANTIC_DISABLE_PLUGINS),
the daemon does not import pydantic's plugin loader and with it ``importlib.metadata``,
``importlib.resources``, ``zipfile`` and ``csv`` (+0.85 MB RSS, agent/lean_imports.py). Without
the setting, pydantic's own loader runs. Each case is a fresh interpreter: this test process has
imported all of them already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("importlib.metadata", "importlib.resources", "zipfile", "csv")

DAEMON = """
import json, sys
import agent.cli                                  # evse-agent's entry point
from agent.busplan import checked_config          # agent.cli._run
from agent.shell.app import run_agent             # agent.cli._run
from agent.orderly.service import OrderlyService  # AgentApp.run when mqtt is configured
from agent.config import load_config
from pydantic import BaseModel

class Probe(BaseModel):
    amps: float

cfg = load_config(sys.argv[1])
heavy = json.loads(sys.argv[2])
loader = sys.modules.get("pydantic.plugin._loader")
print(json.dumps({"loaded": sorted(m for m in heavy if m in sys.modules),
                  "real_loader": hasattr(loader, "entry_points"),
                  "plugins": list(loader.get_plugins()) if loader else None,
                  "probe": Probe(amps="16").amps, "device": cfg.device_id}))
"""

REAL_FIRST = """
import json, os
import pydantic.plugin._loader as real   # pydantic's loader, imported before the agent
import agent
from agent.lean_imports import skip_pydantic_plugin_loader
print(json.dumps({"real_says": list(real.get_plugins()), "skipped": skip_pydantic_plugin_loader(),
                  "still_real": hasattr(real, "entry_points")}))
"""


def _child(code: str, *args: str, plugins_off: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if plugins_off:
        env["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _example() -> str:
    return str(ROOT / "config" / "evse-agent.example.yaml")


def test_plugins_off_daemon_imports_no_metadata_machinery() -> None:
    result = _child(DAEMON, _example(), json.dumps(HEAVY), plugins_off=True)
    assert result["loaded"] == [], "the daemon path imports pydantic's plugin loader machinery"
    assert result["real_loader"] is False and result["plugins"] == []
    assert result["probe"] == 16.0 and result["device"]


def test_plugins_on_pydantic_loader_untouched() -> None:
    result = _child(DAEMON, _example(), json.dumps(HEAVY), plugins_off=False)
    assert result["real_loader"] is True
    assert "importlib.metadata" in result["loaded"]  # type: ignore[operator]


def test_stand_in_answers_what_pydantic_answers_with_plugins_off() -> None:
    # the premise: pydantic's own loader, with the unit's setting, loads no plugin at all;
    # and a loader already imported is left alone
    result = _child(REAL_FIRST, plugins_off=True)
    assert result == {"real_says": [], "skipped": False, "still_real": True}
