"""Build an offline wheelhouse for a charger: `make wheelhouse PLATFORM=aarch64|armv7`.

The wheelhouse holds exactly the pinned releases of requirements/build.txt and runtime.txt for
one device platform (CPython 3.11, glibc 2.36: Raspberry Pi OS bookworm), every file checked
against the lock's sha256 by pip, the agent's own wheel, SHA256SUMS over all of it and
manifest.json (platform, Python, and the packages the device must build from source because no
wheel exists for it). `deploy/install.sh --offline DIR` installs it with no network.

    python deploy/wheelhouse.py --platform armv7 --out build/wheelhouse/armv7
    python deploy/wheelhouse.py --platform native --out DIR --from-source pyyaml   # tests
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.11"
GLIBC_MINOR = 36  # Debian / Raspberry Pi OS bookworm: glibc 2.36; manylinux goes back to 2.17
# Device platform -> uname machine, as install.sh computes it on the device (32-bit userland on a
# 64-bit kernel counts as armv7).
MACHINES = {"aarch64": "aarch64", "armv7": "armv7l", "x86_64": "x86_64"}

# What a device needs to build a package that has no wheel for it (from its sdist, offline, with
# the pinned setuptools: pip --no-build-isolation). Found by `make wheelhouses`: on armv7 cffi
# and PyYAML publish no wheel. A package not listed needs at least a compiler: read its sdist.
BUILD_NEEDS: dict[str, dict[str, object]] = {
    "cffi": {
        "debian": ["build-essential", "python3-dev", "libffi-dev"],
        "why": "C extension (_cffi_backend) linked against libffi",
    },
    "pyyaml": {
        "debian": [],
        "why": "no Cython in the wheelhouse, so PyYAML builds its pure-Python form "
        "(yaml.CSafeLoader is absent; the agent uses yaml.safe_load)",
    },
}
UNKNOWN_NEEDS: dict[str, object] = {
    "debian": ["build-essential", "python3-dev"],
    "why": "no wheel for this platform: read the sdist for its build needs",
}


class WheelhouseError(RuntimeError):
    """The wheelhouse cannot be built as pinned."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def line(self) -> str:
        hashes = " ".join(f"--hash=sha256:{h}" for h in self.hashes)
        return f"{self.name}=={self.version} {hashes}"


def read_lock(path: Path) -> list[Pin]:
    """The pins of a uv-written requirements file (name==version ; marker, then --hash lines)."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        req = Requirement(re.sub(r"--hash=\S+", "", line).strip())
        versions = [s.version for s in req.specifier if s.operator == "=="]
        if len(versions) != 1 or not hashes:
            raise WheelhouseError(f"{path.name}: {req.name} is not pinned with a hash")
        pins.append(Pin(canonicalize_name(req.name), versions[0], req.marker, hashes))
    return pins


def target_environment(target: str) -> dict[str, str]:
    """PEP 508 marker values of the device (the build machine's own for "native")."""
    if target == "native":
        return {"extra": ""}
    return {
        "extra": "",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_machine": MACHINES[target],
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "python_version": PYTHON,
        "python_full_version": f"{PYTHON}.2",
    }


def platform_options(target: str) -> list[str]:
    """pip download options selecting wheels the device can run (none: this machine's own)."""
    if target == "native":
        return []
    arch = MACHINES[target]
    tags = [f"manylinux_2_{m}_{arch}" for m in range(GLIBC_MINOR, 16, -1)]
    tags += [f"manylinux2014_{arch}", f"linux_{arch}"]
    options = [f"--platform={tag}" for tag in tags]
    return [*options, f"--python-version={PYTHON}", "--implementation=cp", "--abi=cp311"]


def pip_download(pins: list[Pin], dest: Path, options: list[str]) -> bool:
    """Download pins (hash-checked, no dependency resolution: the lock is complete)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write("\n".join(pin.line() for pin in pins) + "\n")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", "-r", req.name, "-d", str(dest), *options],
            capture_output=True, text=True, check=False,
        )
    finally:
        Path(req.name).unlink()
    return result.returncode == 0


def project_wheel(dest: Path) -> Path:
    """The agent's own wheel, built from a clean copy (no stale build/ of a working tree)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "tests")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT, src, ignore=ignore)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dest), str(src)],
            check=True, capture_output=True, text=True,
        )
    (wheel,) = dest.glob("evse_edge_agent-*.whl")
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(target: str, out: Path, from_source: set[str]) -> dict[str, object]:
    env = target_environment(target)
    lock_files = [ROOT / "requirements" / "build.txt", ROOT / "requirements" / "runtime.txt"]
    pins = [p for f in lock_files for p in read_lock(f)
            if p.marker is None or p.marker.evaluate(env)]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    options = ["--only-binary=:all:", *platform_options(target)]
    binary = [p for p in pins if p.name not in from_source]
    if not pip_download(binary, out, options):  # some have no wheel: find which, one by one
        for pin in binary:
            pip_download([pin], out, options)
    by_hash = {h: pin for pin in pins for h in pin.hashes}
    have = {by_hash[sha256(f)].name for f in out.iterdir() if sha256(f) in by_hash}
    sources = []
    for pin in pins:
        if pin.name in have:
            continue
        if not pip_download([pin], out, ["--no-binary=:all:", "--no-build-isolation"]):
            raise WheelhouseError(f"{pin.name}=={pin.version}: neither a wheel nor an sdist")
        needs = BUILD_NEEDS.get(pin.name, UNKNOWN_NEEDS)
        reason = "asked (--from-source)" if pin.name in from_source else "no wheel"
        sources.append({"name": pin.name, "version": pin.version, "reason": reason, **needs})
    for name in ("build.txt", "runtime.txt"):
        shutil.copy2(ROOT / "requirements" / name, out / name)
    wheel = project_wheel(out)
    files = sorted(f for f in out.iterdir() if f.is_file())
    for f in files:  # pip checked the lock's hashes; check again that nothing else slipped in
        if f.suffix in (".whl", ".gz", ".zip") and f != wheel and sha256(f) not in by_hash:
            raise WheelhouseError(f"{f.name} matches no hash of the lock")
    machine = MACHINES.get(target, platform.machine())
    manifest: dict[str, object] = {
        "project": "evse-edge-agent",
        "wheel": wheel.name,
        "platform": target if target != "native" else machine,
        "machine": machine,
        "python": PYTHON if target != "native" else ".".join(platform.python_version_tuple()[:2]),
        "pip_options": platform_options(target),
        "build_from_source": sources,
        "device_needs_debian": sorted({d for s in sources for d in s["debian"]}),  # type: ignore[attr-defined]
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    files = sorted(f for f in out.iterdir() if f.is_file())
    sums = "".join(f"{sha256(f)}  {f.name}\n" for f in files)
    (out / "SHA256SUMS").write_text(sums, encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--platform", required=True, choices=[*MACHINES, "native"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--from-source", default="",
                        help="comma-separated packages to ship as sdist even where a wheel exists")
    args = parser.parse_args(argv)
    from_source: set[str] = {canonicalize_name(n) for n in args.from_source.split(",") if n}
    try:
        manifest = build(args.platform, args.out.resolve(), from_source)
    except (WheelhouseError, subprocess.CalledProcessError) as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 1
    print(f"wheelhouse {args.out}: {manifest['platform']}, CPython {manifest['python']}")
    for entry in manifest["build_from_source"]:  # type: ignore[attr-defined]
        print(f"  {entry['reason']}: {entry['name']}=={entry['version']} is built on the device "
              f"({entry['why']}); needs: {' '.join(entry['debian']) or 'nothing more'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
