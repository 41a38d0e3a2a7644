"""The README's aggregator examples are the script the HIL test runs, verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_embeds_the_tested_aggregator_examples() -> None:
    script = (ROOT / "docs" / "aggregator-examples.sh").read_text().rstrip("\n")
    readme = (ROOT / "README.md").read_text()
    assert f"```sh\n{script}\n```" in readme


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
