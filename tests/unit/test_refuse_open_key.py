"""The agent refuses to start when its MQTT private key is readable by others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evse-agent.example.yaml"


def test_agent_refuses_a_world_readable_key(tmp_path: Path) -> None:
    key, cert = tmp_path / "client.key", tmp_path / "client.crt"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    cert.write_text("cert")
    key.chmod(0o644)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["mqtt"] = {"host": "127.0.0.1", "port": 1, "tls": True,
                    "cert_file": str(cert), "key_file": str(key)}
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "run", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "mqtt.key_file" in proc.stderr and "chmod" in proc.stderr
    assert "not a real key" not in proc.stdout + proc.stderr  # the secret is never printed
