"""Runs every data-driven Raft scenario in tests/unit/raft/scenarios/*.txt (format: the docstring
of raft.testing.scenario.Script). Each script states its expectations; a failing `expect` names
the file and line."""

from __future__ import annotations

import pathlib

import pytest

from raft.testing.scenario import run_script

SCENARIOS = sorted((pathlib.Path(__file__).parent / "scenarios").glob("*.txt"))


def test_scenarios_exist() -> None:
    assert len(SCENARIOS) >= 10


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario(path: pathlib.Path) -> None:
    run_script(path.read_text(encoding="utf-8"), name=path.name)


def test_a_wrong_expectation_fails() -> None:
    with pytest.raises(AssertionError, match="leaders are"):
        run_script("nodes a b c\nelect a\nexpect leader b\n", name="neg")
