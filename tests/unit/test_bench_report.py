"""The bench's statistics and report formatting (pure: no rig, no agent, no broker)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil.bench.report import figure_row, render_markdown, to_json
from hil.bench.stats import BenchResult, Figure, Goal, fmt, percentile, summarize


def test_nearest_rank_percentiles_of_one_to_hundred() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 1) == 1.0


def test_nearest_rank_p99_of_few_samples_is_the_maximum() -> None:
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_rejects_p_outside_range(p: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], p)


def test_percentile_and_summary_reject_no_samples() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        summarize([])


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=300),
       st.floats(min_value=0.01, max_value=100))
def test_percentile_is_a_sample_with_at_least_p_percent_at_or_below(values: list[float],
                                                                    p: float) -> None:
    got = percentile(values, p)
    assert got in values
    at_or_below = sum(1 for v in values if v <= got)
    assert at_or_below >= p / 100 * len(values)
    below = sum(1 for v in values if v < got)
    assert below < p / 100 * len(values) or below == 0


def test_summary_fields() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.n, s.median, s.p99, s.max, s.min, s.mean) == (4, 2.0, 4.0, 4.0, 1.0, 2.5)


def test_goals_compare_in_their_direction() -> None:
    assert Goal("<=", 25, "ms").met(25.0) and not Goal("<=", 25, "ms").met(25.1)
    assert Goal(">=", 2000, "msg/s").met(2000.0) and not Goal(">=", 2000, "msg/s").met(1999)
    assert Goal("<=", 25, "ms").text() == "<= 25.0 ms"


def test_figure_without_value_misses_its_goal_and_without_goal_has_no_verdict() -> None:
    assert Figure("P1", "x", None, "ms", Goal("<=", 1, "ms")).met is False
    assert Figure("P1", "x", 3.0, "ms").met is None


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (0.0, "0"), (0.01234, "0.0123"), (1.234, "1.23"), (12.34, "12.3"),
    (123.4, "123"), (123456.7, "123,457"),
])
def test_fmt_keeps_three_significant_figures(value: float | None, text: str) -> None:
    assert fmt(value) == text


def _result() -> BenchResult:
    res = BenchResult("P1", "setLimit -> duty", "method text")
    res.add_summary("latency", summarize([10.0, 20.0, 30.0]), "ms", Goal("<=", 25, "ms"))
    res.add("floor | hop", 1.5, "ms", note="a|b")
    res.notes.append("what limited it")
    return res


def test_add_summary_puts_the_goal_on_the_p99_only() -> None:
    figs = _result().figures
    assert [f.name for f in figs[:3]] == ["latency median", "latency p99", "latency max"]
    assert [f.goal is not None for f in figs[:3]] == [False, True, False]
    assert figs[1].met is False  # p99 of three samples is the maximum, 30 > 25


def test_row_shows_value_goal_and_verdict_and_escapes_pipes() -> None:
    figs = _result().figures
    row = figure_row(figs[1])
    assert row == "| P1 | latency p99 | 30.0 ms | <= 25.0 ms | **missed** | 3 |  |"
    assert figure_row(figs[3]).count("|") == 8  # the pipes inside name and note are replaced


def test_markdown_has_machine_method_every_figure_and_the_notes() -> None:
    meta = {"started": "2026-01-01T00:00:00+00:00", "duration_s": 61.0, "quick": False,
            "machine": {"cpu_model": "Test CPU", "cpus": 2, "mem_gb": 4.0, "kernel": "6.1",
                        "python": "3.11.7"}}
    res = _result()
    failed = BenchResult("P6", "fleet", "did not complete")
    failed.error = "RuntimeError: boom"
    text = render_markdown([res, failed], meta)
    assert "Test CPU, 2 CPUs" in text and "nearest-rank" in text
    assert "**P1 — setLimit -> duty** (0 s). method text" in text
    for fig in res.figures:
        assert figure_row(fig) in text
    assert "RuntimeError: boom" in text
    assert "- P1: what limited it" in text
    assert "1 figure(s) missed their goal." in text
    assert "Did not complete: P6." in text


def test_json_round_trips_the_figures() -> None:
    data = json.loads(to_json([_result()], {"quick": True}))
    fig = data["results"][0]["figures"][1]
    assert fig == {"bench": "P1", "name": "latency p99", "value": 30.0, "unit": "ms",
                   "goal": "<= 25.0 ms", "met": False, "n": 3, "note": ""}
    assert data["meta"] == {"quick": True}
