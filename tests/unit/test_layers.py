"""Layering: the drivers own the wire and know nothing of the agent above them.

``drivers/`` may import only itself, the standard library and third-party packages; the agent
imports the drivers (their Protocols, errors and register maps), never the other way round.
Checked on the source with ``ast`` (imports inside functions and ``TYPE_CHECKING`` blocks count
too), so a new upward import fails here before it can grow into a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("agent", "hil", "tests")


def upward_imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) of every import of a package above the drivers in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute)
                       and node.func.attr == "import_module"))):
            names = [node.args[0].value]
        found += [(node.lineno, n) for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_the_detector_sees_every_form_of_import() -> None:
    source = (
        "import agent\n"
        "from agent.errors import DriverError\n"
        "def f():\n"
        "    import agent.config as c\n"
        "    importlib.import_module('agent.busplan')\n"
        "    __import__('hil.rig')\n"
        "import agents_of_change, drivers.bus\n"
        "from drivers.errors import DriverError\n"
    )
    assert upward_imports(source) == [
        (1, "agent"), (2, "agent.errors"), (4, "agent.config"), (5, "agent.busplan"),
        (6, "hil.rig"),
    ]


def test_drivers_import_nothing_of_the_agent() -> None:
    files = sorted((ROOT / "drivers").rglob("*.py"))
    assert len(files) > 10, "the drivers package moved: point this test at it"
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in files
        for line, module in upward_imports(path.read_text(encoding="utf-8"), str(path))
    ]
    assert offenders == [], "drivers/ must not import the agent:\n" + "\n".join(offenders)
