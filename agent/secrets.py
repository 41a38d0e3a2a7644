"""Keeping secrets secret: key-file permissions checked before use, secrets masked before logging.

Why: the UK smart charge point regulations (Schedule 1, "sensitive security parameters") and
ETSI EN 303 645 (provisions 5.4-1, 5.4-2) want credentials stored securely and never exposed. A
client key that other local users can read is a stolen device identity, so the agent refuses
to start with one (like ``ssh`` does); and nothing secret reaches the journal.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

REDACTED = "***"
KEY_FIX = "chmod 600 or 640 root:evse (owner root or the agent's user, nothing for others)"

# Key names whose value is itself a secret (compared word by word: ``mqttPassword``,
# ``api-token`` and ``client_secret`` all match; ``password_file`` too, to be safe).
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "pwd", "secret", "token", "psk", "credential",
    "credentials", "cookie", "privkey",
})
# ``key`` is secret as key material (``key``, ``client_key``, ``api_key``) but not as a
# reference to one (``key_file``, ``key_id``, ``issuer_keys`` are paths or public names).
_KEY_WORDS = frozenset({"key", "pem", "jwk"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def check_private_key_permissions(path: str | os.PathLike[str], *,
                                  key: str = "mqtt.key_file") -> None:
    """Raise ``ConfigError`` unless ``path`` is a regular file only its owner (and group) can read.

    Refused: group-writable or any permission for others (``mode & 0o027``), and an owner that
    is neither root nor the user running the agent (someone else could swap the key).
    """
    name = Path(path)
    try:
        st = name.stat()
    except FileNotFoundError as exc:
        raise ConfigError(f"private key {name} does not exist", key=key,
                          fix="install the device key there (docs/deploy.md)") from exc
    except OSError as exc:
        raise ConfigError(f"cannot stat private key {name}: {exc.strerror or exc}", key=key,
                          fix=KEY_FIX) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"private key {name} is not a regular file", key=key,
                          fix="point it at the PEM key file itself")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise ConfigError(f"private key {name} is accessible by others (mode {mode:04o})",
                          key=key, fix=KEY_FIX, mode=f"{mode:04o}")
    if mode & 0o020:
        raise ConfigError(f"private key {name} is group-writable (mode {mode:04o})",
                          key=key, fix=KEY_FIX, mode=f"{mode:04o}")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"private key {name} is owned by uid {st.st_uid}, not root or us",
                          key=key, fix=KEY_FIX, uid=st.st_uid)


def is_secret_name(name: str) -> bool:
    """Whether a mapping key names a secret value (see ``_SECRET_WORDS``, ``_KEY_WORDS``)."""
    words = [w.lower() for w in _WORD.findall(name)]
    if not words:
        return False
    return bool(_SECRET_WORDS.intersection(words)) or words[-1] in _KEY_WORDS


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``mapping`` (nested mappings and lists too) with secret values as ``"***"``.

    ``None`` stays ``None``, so a log still shows that a secret is not set.
    """
    return {k: (REDACTED if v is not None and isinstance(k, str) and is_secret_name(k)
                else _redact_value(v))
            for k, v in mapping.items()}


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v) for v in value)
    return value


def redact_processor(_logger: Any, _method: str,
                     event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: put it before the renderer so no event carries a secret."""
    return redact(event_dict)
