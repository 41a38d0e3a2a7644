"""The offline install: a wheelhouse built here installs with no network at all.

The wheelhouse is built for this machine (deploy/wheelhouse.py --platform native) the way `make
wheelhouse` builds one for a Pi; PyYAML (and cffi, where this machine has the Debian build
packages) are shipped as sdists, as on armv7, so the device-side build is exercised too. Then
deploy/install.sh --offline runs inside a network namespace that has only a loopback interface
that is down (`unshare -n`): any attempt to reach an index fails the install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_lock import REQ, here, parse_lock

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
WHEELHOUSE = ROOT / "deploy" / "wheelhouse.py"
CFFI_BUILD_PACKAGES = ("build-essential", "python3-dev", "libffi-dev")


def no_network_prefix() -> list[str] | None:
    """unshare -n as root, or -rn (a user namespace) otherwise; None when neither works."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    return None


def debian_has(packages: tuple[str, ...]) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}\n", *packages],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0 and result.stdout.count("ok installed") == len(packages)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse") / "native"
    from_source = "pyyaml,cffi" if debian_has(CFFI_BUILD_PACKAGES) else "pyyaml"
    subprocess.run([sys.executable, str(WHEELHOUSE), "--platform", "native", "--out", str(out),
                    "--from-source", from_source], check=True, timeout=300)
    return out


def install(wheelhouse: Path, destdir: Path, *extra: str,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    # The venv is made from the interpreter under this test's venv, as from the device's python3.
    env = {**os.environ, "PYTHON": str(Path(sys.base_prefix) / "bin" / "python3")}
    return subprocess.run(
        [*(prefix or []), "bash", str(INSTALL), "--offline", str(wheelhouse),
         "--destdir", str(destdir), *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )


def copy_of(wheelhouse: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "wh"
    shutil.copytree(wheelhouse, copy)
    return copy


def reseal(wheelhouse: Path) -> None:
    """Rewrite SHA256SUMS, as someone preparing a wrong wheelhouse on purpose would."""
    names = sorted(p.name for p in wheelhouse.iterdir() if p.name != "SHA256SUMS")
    sums = subprocess.run(["sha256sum", *names], cwd=wheelhouse, capture_output=True,
                          text=True, check=True).stdout
    (wheelhouse / "SHA256SUMS").write_text(sums)


def test_offline_install_in_a_namespace_without_network(wheelhouse: Path, tmp_path: Path) -> None:
    prefix = no_network_prefix()
    if prefix is None:
        pytest.skip("unshare -n (network namespace) unavailable: cannot prove no network is used")
    interfaces = subprocess.run(
        [*prefix, sys.executable, "-c", "import socket; print(socket.if_nameindex())"],
        capture_output=True, text=True, check=True).stdout
    assert interfaces.strip() == "[(1, 'lo')]", interfaces  # nothing but a downed loopback

    destdir = tmp_path / "root"
    result = install(wheelhouse, destdir, prefix=prefix)
    assert result.returncode == 0, result.stdout + result.stderr
    venv = destdir / "opt" / "evse-agent" / "venv"

    listed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--isolated",
                             "--format=json"], capture_output=True, text=True, check=True)
    installed = {d["name"].lower().replace("_", "-"): d["version"]
                 for d in json.loads(listed.stdout)}
    assert installed.pop("evse-edge-agent") == "0.1.0"
    pinned = here(parse_lock(REQ / "build.txt")) | here(parse_lock(REQ / "runtime.txt"))
    assert installed == {name: pin.version for name, pin in pinned.items()}

    manifest = json.loads((wheelhouse / "manifest.json").read_text())
    built = {entry["name"] for entry in manifest["build_from_source"]}
    assert "pyyaml" in built and not any(p.name.startswith("pyyaml-") and p.suffix == ".whl"
                                         for p in wheelhouse.iterdir())
    probe = "import yaml, cffi, cryptography.x509; print(yaml.__with_libyaml__)"
    assert subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True,
                          text=True, check=True).stdout.strip() == "False"  # pure-Python PyYAML
    check = subprocess.run(
        [*prefix, str(venv / "bin" / "evse-agent"), "check-config",
         str(destdir / "etc" / "evse-agent" / "evse-agent.yaml")],
        capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "worst-case reaction" in check.stdout


def test_refuses_a_wheelhouse_that_does_not_match_its_sums(wheelhouse: Path,
                                                           tmp_path: Path) -> None:
    copy = copy_of(wheelhouse, tmp_path)
    victim = next(p for p in copy.iterdir() if p.name.startswith("pydantic-"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    result = install(copy, tmp_path / "root", "--dry-run")
    assert result.returncode == 1
    assert "does not match its SHA256SUMS" in result.stderr
    assert not (tmp_path / "root").exists()


def test_refuses_a_file_the_sums_do_not_list(wheelhouse: Path, tmp_path: Path) -> None:
    copy = copy_of(wheelhouse, tmp_path)
    (copy / "aiomqtt-9.9.9-py3-none-any.whl").write_bytes(b"not a wheel")
    result = install(copy, tmp_path / "root", "--dry-run")
    assert result.returncode == 1
    assert "files not in SHA256SUMS: aiomqtt-9.9.9-py3-none-any.whl" in result.stderr


def test_refuses_a_wheelhouse_for_another_platform(wheelhouse: Path, tmp_path: Path) -> None:
    copy = copy_of(wheelhouse, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["platform"] = "armv7"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    reseal(copy)
    result = install(copy, tmp_path / "root", "--dry-run")
    assert result.returncode == 1
    assert "wheelhouse is for armv7" in result.stderr


def test_refuses_when_the_device_lacks_build_packages(wheelhouse: Path, tmp_path: Path) -> None:
    copy = copy_of(wheelhouse, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["device_needs_debian"] = ["evse-test-absent-package"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    reseal(copy)
    result = install(copy, tmp_path / "root", "--dry-run")
    assert result.returncode == 1
    assert "needs: evse-test-absent-package" in result.stderr


def test_the_dry_run_plan_installs_only_from_the_wheelhouse(wheelhouse: Path,
                                                             tmp_path: Path) -> None:
    result = install(wheelhouse, tmp_path / "root", "--dry-run")
    assert result.returncode == 0, result.stderr
    pips = [line for line in result.stdout.splitlines() if " -m pip install " in line]
    assert len(pips) == 3
    for line in pips:
        assert "--no-index" in line and "--isolated" in line, line
    assert "--require-hashes" in pips[0] and "--require-hashes" in pips[1]
    assert pips[2].endswith("evse_edge_agent-0.1.0-py3-none-any.whl")
