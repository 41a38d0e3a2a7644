"""The lock files: every dependency pinned with a hash, and in step with pyproject.toml.

pyproject.toml says what we need (ranges); requirements/*.txt say exactly what gets installed
(``make lock`` writes them with uv). A dependency added to pyproject without ``make lock``, or a
hand-edited lock, fails here rather than on a device that installs something else.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
LOCK_NAMES = ("build.txt", "runtime.txt", "dev.txt")
COMPILE_OPTIONS = ("--universal", "--generate-hashes", "--python-version 3.11")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]


def parse_lock(path: Path) -> list[Pin]:
    """The pins of a pip requirements file in the form uv writes (continuation lines).

    A name may appear twice with exclusive markers (a universal lock forks where a newer Python
    allows a newer release, e.g. numpy for python >= 3.12).
    """
    logical: list[str] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path.name}: dangling continuation line"
    pins: list[Pin] = []
    for entry in logical:
        assert not entry.startswith("-"), f"{path.name}: unexpected option line {entry!r}"
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
        spec = re.sub(r"--hash=\S+", "", entry).strip()
        req = Requirement(spec)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {spec!r} not pinned"
        assert hashes, f"{path.name}: {req.name} has no --hash"
        name = canonicalize_name(req.name)
        twice = [p for p in pins if p.name == name]
        assert not twice or (req.marker and twice[0].marker), f"{path.name}: {name} pinned twice"
        pins.append(Pin(name, specs[0].version, req.marker, hashes))
    return pins


def here(pins: list[Pin]) -> dict[str, Pin]:
    """The pins that apply to this interpreter (CPython 3.11 on Linux, like the device)."""
    return {p.name: p for p in pins if p.marker is None or p.marker.evaluate({"extra": ""})}


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def declared(section: list[str]) -> list[Requirement]:
    return [Requirement(s) for s in section]


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, Pin]]:
    return {name: here(parse_lock(REQ / name)) for name in LOCK_NAMES}


def assert_covered(requirements: list[Requirement], pins: dict[str, Pin], lock: str) -> None:
    for req in requirements:
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is in pyproject.toml but not in {lock}: make lock"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{lock} pins {req.name}=={pin.version}, outside pyproject's {req.specifier}: make lock"
        )


def test_every_line_is_pinned_with_a_hash(locks: dict[str, dict[str, Pin]]) -> None:
    for name, pins in locks.items():
        assert pins, f"{name} is empty"
        for pin in pins.values():
            assert all(len(h) == 64 for h in pin.hashes)


def test_locks_were_compiled_by_make_lock_for_all_platforms() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for option in COMPILE_OPTIONS:
        assert option in makefile, f"make lock no longer compiles with {option}"
    for name in LOCK_NAMES:
        header = (REQ / name).read_text(encoding="utf-8").splitlines()[:2]
        assert header[1].strip() == "#    make lock", f"{name} was not written by make lock"


def test_runtime_lock_covers_the_project_dependencies(locks: dict[str, dict[str, Pin]]) -> None:
    deps = declared(pyproject()["project"]["dependencies"])  # type: ignore[index]
    assert_covered(deps, locks["runtime.txt"], "runtime.txt")


def test_dev_lock_covers_runtime_dev_and_hil(locks: dict[str, dict[str, Pin]]) -> None:
    project = pyproject()["project"]
    extras = project["optional-dependencies"]  # type: ignore[index]
    wanted = declared(project["dependencies"])  # type: ignore[index]
    wanted += declared(extras["dev"]) + declared(extras["hil"])
    assert_covered(wanted, locks["dev.txt"], "dev.txt")


def test_build_lock_covers_the_build_system(locks: dict[str, dict[str, Pin]]) -> None:
    requires = declared(pyproject()["build-system"]["requires"])  # type: ignore[index]
    assert_covered(requires, locks["build.txt"], "build.txt")
    assert "pip" in locks["build.txt"]


def test_dev_installs_the_same_versions_as_the_device(locks: dict[str, dict[str, Pin]]) -> None:
    """What we test is what ships: each runtime pin appears unchanged in the dev lock."""
    dev = locks["dev.txt"]
    for name, pin in locks["runtime.txt"].items():
        assert name in dev, f"{name} is in runtime.txt but not in dev.txt: make lock"
        assert dev[name].version == pin.version, f"{name}: runtime {pin.version}, dev {dev[name]}"


def closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots pull in on this machine, read from installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [req for req in roots if req.marker is None or req.marker.evaluate({"extra": ""})]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed: not locked either (the coverage tests name it)
        for text in requires:
            dep = Requirement(text)
            wanted = {"", *req.extras}
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(dep)
    return names


def test_lock_is_exactly_the_dependency_closure(locks: dict[str, dict[str, Pin]]) -> None:
    """Nothing missing (a transitive dependency unpinned) and nothing stale (a removed one)."""
    project = pyproject()["project"]
    extras = project["optional-dependencies"]  # type: ignore[index]
    runtime_roots = declared(project["dependencies"])  # type: ignore[index]
    dev_roots = runtime_roots + declared(extras["dev"]) + declared(extras["hil"])
    for lock, roots in (("runtime.txt", runtime_roots), ("dev.txt", dev_roots)):
        needed = closure(roots)
        pinned = set(locks[lock])
        assert needed - pinned == set(), f"{lock} lacks {sorted(needed - pinned)}: make lock"
        assert pinned - needed == set(), f"{lock} pins unused {sorted(pinned - needed)}"


def test_this_venv_runs_the_locked_versions(locks: dict[str, dict[str, Pin]]) -> None:
    """make venv installs the dev lock: the interpreter running the tests has exactly those."""
    for pin in locks["dev.txt"].values():
        installed = importlib.metadata.version(pin.name)
        assert installed == pin.version, f"{pin.name}: installed {installed}, locked {pin.version}"


def test_parse_lock_refuses_an_unpinned_or_hashless_line(tmp_path: Path) -> None:
    unpinned = tmp_path / "unpinned.txt"
    unpinned.write_text("aiomqtt>=2.5 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(AssertionError, match="not pinned"):
        parse_lock(unpinned)
    hashless = tmp_path / "hashless.txt"
    hashless.write_text("aiomqtt==2.5.1\n    # via evse-edge-agent\n")
    with pytest.raises(AssertionError, match="no --hash"):
        parse_lock(hashless)
