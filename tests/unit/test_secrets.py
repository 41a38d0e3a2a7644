"""Secrets: key files only their owner can touch, nothing secret in logs, no default credential.

Also the deployment files' promises: install.sh parses, its dry run changes nothing and creates
no credential, and it installs the key directory for root:evse only.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.secrets import (
    REDACTED,
    check_private_key_permissions,
    is_secret_name,
    redact,
    redact_processor,
)

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "client.key"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n")
    path.chmod(mode)
    return path


# --- key file permissions ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_owner_and_group_readable_keys_are_accepted(tmp_path: Path, mode: int) -> None:
    check_private_key_permissions(key_file(tmp_path, mode))


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o601, 0o666, 0o660, 0o620, 0o777])
def test_keys_open_to_others_or_group_writable_are_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, mode)
    with pytest.raises(ConfigError) as caught:
        check_private_key_permissions(path, key="mqtt.key_file")
    error = caught.value
    assert error.key == "mqtt.key_file"
    assert "chmod 600 or 640 root:evse" in error.fix
    assert str(path) in str(error)
    assert "not a real key" not in str(error)  # names the file, never shows its content


@given(st.integers(min_value=0, max_value=0o777))
def test_every_mode_is_refused_exactly_when_others_or_group_write_bits_are_set(mode: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = key_file(Path(tmp), mode)
        refused = bool(mode & 0o027)
        try:
            check_private_key_permissions(path)
        except ConfigError:
            assert refused
        else:
            assert not refused


def test_missing_key_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_private_key_permissions(tmp_path / "absent.key")
    assert caught.value.key == "mqtt.key_file" and "does not exist" in str(caught.value)


def test_a_directory_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "dir.key").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        check_private_key_permissions(tmp_path / "dir.key")


def test_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    target = key_file(tmp_path, 0o644)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="accessible by others"):
        check_private_key_permissions(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another owner")
def test_key_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o600)
    os.chown(path, 65534, -1)  # nobody; root runs the test, so the owner is neither us nor root
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        check_private_key_permissions(path)


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "password", "mqtt_password", "mqttPassword", "passwd", "passphrase", "client_secret",
    "token", "apiToken", "access-token", "psk", "key", "private_key", "client_key", "apiKey",
    "signing_key", "private_key_pem", "credentials", "password_file",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "key_file", "keyFile", "key_id", "issuer_keys", "cert_file", "ca_file", "username",
    "device_id", "host", "keepalive_s", "authorisation", "monkey", "keyboard", "tokenizer_x",
])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_masks_nested_secrets_and_keeps_the_rest() -> None:
    config = {
        "device_id": "CN-BJ-0001",
        "mqtt": {"host": "broker", "username": "u", "password": "hunter2", "token": None,
                 "key_file": "/etc/evse-agent/tls/client.key",
                 "issuers": [{"name": "agg-1", "secret": "s3"}, "plain"]},
        "pair": ({"psk": "abc"},),
    }
    out = redact(config)
    assert out == {
        "device_id": "CN-BJ-0001",
        "mqtt": {"host": "broker", "username": "u", "password": REDACTED, "token": None,
                 "key_file": "/etc/evse-agent/tls/client.key",
                 "issuers": [{"name": "agg-1", "secret": REDACTED}, "plain"]},
        "pair": ({"psk": REDACTED},),
    }
    assert config["mqtt"]["password"] == "hunter2"  # type: ignore[index]  # a copy, not in place


def test_redact_masks_structured_values_whole() -> None:
    out = redact({"secret": {"nested": "x"}, "keys": ["k1"]})
    assert out == {"secret": REDACTED, "keys": ["k1"]}


def test_structlog_processor_keeps_secrets_out_of_the_rendered_line() -> None:
    stream = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=[redact_processor, structlog.processors.JSONRenderer()],
    )
    logger.info("mqtt_connecting", host="broker", password="hunter2",
                settings={"mqtt": {"token": "t0k3n"}})
    line = stream.getvalue()
    assert "hunter2" not in line and "t0k3n" not in line
    assert json.loads(line)["password"] == REDACTED


# --- deployment files -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_install_script_parses() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)


def _dry_run(destdir: Path) -> str:
    done = subprocess.run(["bash", str(INSTALL), "--dry-run", "--destdir", str(destdir)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_install_dry_run_changes_nothing_and_plans_safe_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = _dry_run(root)
    assert not root.exists()  # a dry run creates nothing, not even the staging root
    assert f"install -d -m 0750 {root}/etc/evse-agent/tls" in out
    assert re.search(rf"install -m 0640 \S+/config/evse-agent.example.yaml "
                     rf"{root}/etc/evse-agent/evse-agent.yaml", out)
    assert f"{root}/etc/systemd/system/evse-agent.service" in out
    assert f"{root}/etc/udev/rules.d/99-evse-serial.rules" in out
    assert re.search(r"skipped \(DESTDIR set\): useradd --system .*--groups dialout .*evse", out)
    assert "skipped (DESTDIR set): systemctl daemon-reload" in out
    assert f"{root}/opt/evse-agent/venv" in out


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_install_keeps_an_existing_config(tmp_path: Path) -> None:
    conf = tmp_path / "root" / "etc" / "evse-agent"
    conf.mkdir(parents=True)
    (conf / "evse-agent.yaml").write_text("device_id: mine\n")
    out = _dry_run(tmp_path / "root")
    assert "kept existing /etc/evse-agent/evse-agent.yaml" in out
    assert "evse-agent.example.yaml" not in out


def test_install_script_creates_no_credential() -> None:
    script = "\n".join(line for line in INSTALL.read_text().splitlines()
                       if not line.lstrip().startswith("#"))
    for forbidden in ("openssl", "genpkey", "chpasswd", " -p ", "--password", "ssh-keygen",
                      "mosquitto_passwd", "certtool"):
        assert forbidden not in script
    assert "chmod 0640" in script and "client.key" in script


def test_shipped_config_and_examples_carry_no_default_credentials() -> None:
    pattern = re.compile(r"^\s*(password|secret|token|psk)\s*:\s*(?!null\b)\S", re.I | re.M)
    for path in [REPO / "config" / "evse-agent.example.yaml",
                 *sorted((REPO / "deploy").rglob("*")), REPO / "docs" / "deploy.md"]:
        if path.is_file():
            assert not pattern.search(path.read_text()), path
