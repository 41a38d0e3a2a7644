#!/usr/bin/env bash
# Install evse-edge-agent on Raspberry Pi OS / Debian (bookworm or later). Idempotent: run it
# again after an update; it keeps an existing config and udev rule and never creates, prints or
# overwrites a credential (certificates and keys are issued per device: docs/deploy.md).
#
#   sudo deploy/install.sh                 # install from this checkout
#   deploy/install.sh --dry-run            # print what it would do, change nothing
#   deploy/install.sh --destdir /tmp/root  # stage under a root (packaging); skips useradd,
#                                          # chown, udevadm and systemctl
#   sudo deploy/install.sh --offline DIR   # no network: from a wheelhouse (make wheelhouse)
#
# What it installs (docs/deploy.md, "What each file is"):
#   user evse (system, no login, group evse, supplementary group dialout)
#   /opt/evse-agent/venv                        the agent (root-owned, not writable by evse)
#   /etc/evse-agent/            0750 root:evse  config dir
#   /etc/evse-agent/evse-agent.yaml  0640 root:evse  from config/evse-agent.example.yaml if absent
#   /etc/evse-agent/tls/        0750 root:evse  ca.crt, client.crt, client.key (you copy them)
#   /etc/systemd/system/evse-agent.service
#   /etc/systemd/system/evse-agent-web.service  the status page; installed disabled
#   /etc/udev/rules.d/99-evse-serial.rules      if absent (edit the serial numbers in it)
#   /usr/share/doc/evse-edge-agent/             README.md and docs/ (the unit's Documentation=)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
DRY_RUN=0
USER_NAME=evse
PREFIX=/opt/evse-agent
CONF_DIR=/etc/evse-agent
DOC_DIR=/usr/share/doc/evse-edge-agent
PYTHON="${PYTHON:-python3}"
OFFLINE=""

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run|-n) DRY_RUN=1 ;;
        --destdir) DESTDIR="${2:?--destdir needs a directory}"; shift ;;
        --destdir=*) DESTDIR="${1#*=}" ;;
        --source) SRC="${2:?--source needs a directory}"; shift ;;
        --offline) OFFLINE="${2:?--offline needs a wheelhouse directory}"; shift ;;
        --offline=*) OFFLINE="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
DESTDIR="${DESTDIR%/}"

say() { printf '==> %s\n' "$*"; }

# Run a command, or print it (shell-quoted) in --dry-run mode.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# A step that touches the live system (accounts, ownership, udev, systemd): not under DESTDIR.
system() {
    if [ -n "$DESTDIR" ]; then
        printf '# skipped (DESTDIR set):'; printf ' %q' "$@"; printf '\n'
    else
        run "$@"
    fi
}

# install(1) with owner root:evse when installing for real, plain modes under DESTDIR.
owned() {
    if [ -n "$DESTDIR" ]; then
        run install "$@"
    else
        run install -o root -g "$USER_NAME" "$@"
    fi
}

# The agent and exactly the pinned versions of its dependencies (requirements/*.txt, written by
# `make lock`, every file checked against its sha256). Online: from the package index. Offline:
# only from the wheelhouse (--no-index; --isolated ignores pip.conf, e.g. Raspberry Pi OS's
# extra index). Packages without a wheel for the device build from their hash-checked sdist with
# the pinned setuptools (--no-build-isolation: nothing unpinned is fetched).
install_pinned() {
    local pip=("$DESTDIR$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    if [ -n "$OFFLINE" ]; then
        pip+=(--isolated --no-index --find-links "$OFFLINE")
        run "${pip[@]}" --require-hashes -r "$OFFLINE/build.txt"
        run "${pip[@]}" --require-hashes --no-build-isolation -r "$OFFLINE/runtime.txt"
        run "${pip[@]}" --no-deps "$OFFLINE/$(manifest_value wheel)"
        return
    fi
    run "${pip[@]}" --require-hashes -r "$SRC/requirements/build.txt"
    run "${pip[@]}" --require-hashes --no-build-isolation -r "$SRC/requirements/runtime.txt"
    run "${pip[@]}" --no-deps --no-build-isolation "$SRC"
}

manifest_value() {
    "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "$OFFLINE/manifest.json" "$1"
}

# Refuse a wheelhouse that is altered, incomplete, for another platform or Python, or that needs
# build tools this device lacks - before anything is installed.
check_wheelhouse() {
    OFFLINE="$(cd "$OFFLINE" 2>/dev/null && pwd)" || { echo "install.sh: no wheelhouse $OFFLINE" >&2; exit 1; }
    say "checking wheelhouse $OFFLINE"
    if [ ! -f "$OFFLINE/SHA256SUMS" ] || [ ! -f "$OFFLINE/manifest.json" ]; then
        echo "install.sh: $OFFLINE is not a wheelhouse (make wheelhouse)" >&2; exit 1
    fi
    if ! (cd "$OFFLINE" && sha256sum --check --strict --quiet SHA256SUMS); then
        echo "install.sh: $OFFLINE does not match its SHA256SUMS: refusing it" >&2; exit 1
    fi
    local extra
    extra="$(cd "$OFFLINE" && ls -A | grep -vxF -f <(awk '{print $2}' SHA256SUMS; echo SHA256SUMS) || true)"
    if [ -n "$extra" ]; then
        echo "install.sh: files not in SHA256SUMS: $extra" >&2; exit 1
    fi
    local want have python
    want="$(manifest_value platform)"
    # The userland decides: a 32-bit Raspberry Pi OS on a 64-bit kernel reports aarch64 but runs
    # armv7 (armhf) binaries.
    have="$("$PYTHON" -c 'import platform, struct
m = platform.machine()
m = "armv7l" if m in ("aarch64", "armv8l") and struct.calcsize("P") == 4 else m
print({"armv7l": "armv7"}.get(m, m))')"
    python="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$want" != "$have" ] || [ "$(manifest_value python)" != "$python" ]; then
        echo "install.sh: wheelhouse is for $want, CPython $(manifest_value python);" \
            "this device is $have, CPython $python (make wheelhouse PLATFORM=...)" >&2; exit 1
    fi
    local missing=() pkg
    for pkg in $("$PYTHON" -c 'import json, sys
print(" ".join(json.load(open(sys.argv[1]))["device_needs_debian"]))' "$OFFLINE/manifest.json"); do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "install.sh: this platform has no wheel for some dependencies (manifest.json," \
            "build_from_source); the device must build them and needs: ${missing[*]}" \
            "(apt-get install, from the image or a local mirror)" >&2; exit 1
    fi
}

if [ "$DRY_RUN" = 0 ] && [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or use --dry-run / --destdir" >&2
    exit 1
fi
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -f "$SRC/systemd/evse-agent.service" ]; then
    echo "install.sh: $SRC is not an evse-edge-agent checkout" >&2
    exit 1
fi
[ -f /etc/debian_version ] || say "warning: not a Debian system; continuing anyway"
[ "$DRY_RUN" = 1 ] && say "dry run: nothing is changed"
[ -n "$DESTDIR" ] && say "staging under DESTDIR=$DESTDIR"
[ -n "$OFFLINE" ] && check_wheelhouse

# 1. Python >= 3.11 with venv (Raspberry Pi OS bookworm: python3-venv is a separate package).
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: $PYTHON >= 3.11 is required (Debian bookworm or later)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    say "python3-venv is missing: installing it"
    system apt-get install -y --no-install-recommends python3-venv
fi

# 2. System user: no password, no login shell, dialout for the RS-485 adapters.
say "user $USER_NAME (system account, groups $USER_NAME + dialout)"
if getent passwd "$USER_NAME" >/dev/null 2>&1; then
    system usermod -a -G dialout "$USER_NAME"
else
    system useradd --system --user-group --groups dialout --no-create-home \
        --home-dir /var/lib/evse-agent --shell /usr/sbin/nologin \
        --comment "EVSE edge agent" "$USER_NAME"
fi

# 3. The agent in its own virtualenv, owned by root (the service cannot rewrite its own code).
say "virtualenv $PREFIX/venv"
run install -d -m 0755 "$DESTDIR$PREFIX"
if [ ! -x "$DESTDIR$PREFIX/venv/bin/python" ]; then
    run "$PYTHON" -m venv "$DESTDIR$PREFIX/venv"
fi
install_pinned

# 4. Configuration: kept when present (it holds the device's settings), else the example.
say "configuration $CONF_DIR (0750 root:$USER_NAME)"
owned -d -m 0750 "$DESTDIR$CONF_DIR"
owned -d -m 0750 "$DESTDIR$CONF_DIR/tls"
if [ -e "$DESTDIR$CONF_DIR/evse-agent.yaml" ]; then
    say "kept existing $CONF_DIR/evse-agent.yaml"
else
    owned -m 0640 "$SRC/config/evse-agent.example.yaml" "$DESTDIR$CONF_DIR/evse-agent.yaml"
fi

# 5. TLS material is never created here: each device gets its own key and certificate.
#    Existing files get the modes the agent insists on (it refuses a key others can read).
for name in ca.crt client.crt; do
    if [ -e "$DESTDIR$CONF_DIR/tls/$name" ]; then
        system chown "root:$USER_NAME" "$DESTDIR$CONF_DIR/tls/$name"
        run chmod 0644 "$DESTDIR$CONF_DIR/tls/$name"
    fi
done
if [ -e "$DESTDIR$CONF_DIR/tls/client.key" ]; then
    system chown "root:$USER_NAME" "$DESTDIR$CONF_DIR/tls/client.key"
    run chmod 0640 "$DESTDIR$CONF_DIR/tls/client.key"
else
    say "no client key yet: copy ca.crt, client.crt, client.key into $CONF_DIR/tls/" \
        "(client.key 0640 root:$USER_NAME; docs/deploy.md, \"Certificates\")"
fi

# 6. systemd unit (replaced on update; local changes belong in a drop-in) and udev rule (kept:
#    it carries this box's adapter serial numbers).
say "systemd unit and udev rule"
run install -d -m 0755 "$DESTDIR/etc/systemd/system" "$DESTDIR/etc/udev/rules.d"
run install -m 0644 "$SRC/systemd/evse-agent.service" \
    "$DESTDIR/etc/systemd/system/evse-agent.service"
# The status page and metrics: installed, never enabled here (README "The status page").
run install -m 0644 "$SRC/systemd/evse-agent-web.service" \
    "$DESTDIR/etc/systemd/system/evse-agent-web.service"
if [ -e "$DESTDIR/etc/udev/rules.d/99-evse-serial.rules" ]; then
    say "kept existing /etc/udev/rules.d/99-evse-serial.rules"
else
    run install -m 0644 "$SRC/deploy/udev/99-evse-serial.rules" \
        "$DESTDIR/etc/udev/rules.d/99-evse-serial.rules"
fi

# 7. Documentation, where the unit's Documentation= points (replaced on update). README's links
#    into docs/ stay valid because the layout is kept.
say "documentation $DOC_DIR"
run install -d -m 0755 "$DESTDIR$DOC_DIR" "$DESTDIR$DOC_DIR/docs"
run install -m 0644 "$SRC/README.md" "$DESTDIR$DOC_DIR/README.md"
for doc in "$SRC"/docs/*.md "$SRC/docs/asyncapi.yaml"; do
    run install -m 0644 "$doc" "$DESTDIR$DOC_DIR/docs/$(basename "$doc")"
done

system udevadm control --reload-rules
system udevadm trigger --subsystem-match=tty --action=add
system systemctl daemon-reload

[ "$DRY_RUN" = 1 ] && say "dry run finished: nothing was changed"
cat <<EOF
==> done. Next (docs/deploy.md):
    1. edit /etc/udev/rules.d/99-evse-serial.rules (udevadm info -a -n /dev/ttyUSB0) and replug
    2. edit $CONF_DIR/evse-agent.yaml: device_id, buses (/dev/evse-control, /dev/evse-meter), mqtt
    3. copy ca.crt, client.crt, client.key to $CONF_DIR/tls/ (client.key 0640 root:$USER_NAME)
    4. $PREFIX/venv/bin/evse-agent check-config $CONF_DIR/evse-agent.yaml
    5. systemctl enable --now evse-agent; journalctl -u evse-agent -f
    6. optional, the status page (off by default): README "The status page"
EOF
