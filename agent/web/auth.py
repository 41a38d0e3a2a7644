"""Who may act through the page: one installer token, sent as a header, from an allowed origin.

- The token comes from a file only root may read. Under systemd the unit passes it with
  ``LoadCredential=web-token:/etc/evse-agent/web.token`` (systemd reads it as root and hands the
  service a private copy in ``$CREDENTIALS_DIRECTORY``); otherwise from ``web.token_file``.
  A file that the group or others may read (or write) is refused, and so is a short token. There
  is no default: without a token the page is read-only.
- CSRF: the token travels in ``Authorization: Bearer``, which a browser never adds on its own
  (no cookie, no session), and a request that carries an ``Origin`` or ``Host`` the
  page is not served from is refused before the token is even looked at (DNS rebinding, forms
  posted from other sites).
"""

from __future__ import annotations

import hmac
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import WebConfig
from agent.errors import ConfigError

CREDENTIAL_NAME = "web-token"
MIN_TOKEN_CHARS = 16
TOKEN_FIX = ("create it as root: `install -m 0600 -o root /dev/null /etc/evse-agent/web.token`, "
             "then `openssl rand -hex 24 | sudo tee /etc/evse-agent/web.token`")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def token_path(cfg: WebConfig, environ: dict[str, str] | None = None) -> Path | None:
    """Where the token is: the systemd credential if there is one, else ``web.token_file``."""
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
        return Path(creds) / CREDENTIAL_NAME
    return cfg.token_file


def load_token(path: Path | None) -> str | None:
    """The installer token, or None (no file configured: every action is refused)."""
    if path is None:
        return None
    key = "web.token_file"
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ConfigError(f"token file {path} does not exist", key=key, fix=TOKEN_FIX) from exc
    except OSError as exc:
        raise ConfigError(f"cannot stat token file {path}: {exc.strerror or exc}",
                          key=key) from exc
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"token file {path} is not a regular file", key=key, fix=TOKEN_FIX)
    if mode & 0o077:
        raise ConfigError(f"token file {path} is readable or writable by group or others "
                          f"(mode {mode:04o})", key=key, fix="chmod 0600 " + str(path))
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"token file {path} is owned by uid {st.st_uid}, not root or us",
                          key=key, fix=TOKEN_FIX)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}", key=key,
                          fix=TOKEN_FIX) from exc
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(f"the token in {path} is too short or holds white space "
                          f"(at least {MIN_TOKEN_CHARS} characters)", key=key, fix=TOKEN_FIX)
    return token


@dataclass(frozen=True, slots=True)
class Gate:
    """Checks an action request; ``refusal`` returns None or the reason it is refused."""

    token: str | None
    hosts: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def for_config(cls, cfg: WebConfig, token: str | None) -> Gate:
        hosts = {f"{h}:{cfg.port}" for h in (*LOOPBACK_HOSTS, cfg.listen)}
        origins = {f"http://{h}" for h in hosts}
        if cfg.public_origin is not None:
            origins.add(cfg.public_origin)
            hosts.add(cfg.public_origin.split("://", 1)[1])
        return cls(token, frozenset(hosts), frozenset(origins))

    def refusal(self, *, host: str | None, origin: str | None,
                authorization: str | None) -> str | None:
        if self.token is None:
            return "no_token_configured"
        if host is None or host.lower() not in self.hosts:
            return "host_not_allowed"
        if origin is not None and origin.rstrip("/").lower() not in self.origins:
            return "origin_not_allowed"
        if authorization is None or not authorization.startswith("Bearer "):
            return "token_missing"
        given = authorization.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "token_wrong"
        return None


class WrongTokenThrottle:
    """After ``limit`` wrong tokens within ``window_s``, every action is refused until the
    window has passed (the right token too): guessing gets ``limit`` tries a minute."""

    def __init__(self, limit: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._wrong: deque[float] = deque()

    def _trim(self) -> None:
        now = self._clock()
        while self._wrong and now - self._wrong[0] >= self.window_s:
            self._wrong.popleft()

    def blocked(self) -> bool:
        self._trim()
        return len(self._wrong) >= self.limit

    def wrong(self) -> None:
        self._wrong.append(self._clock())
