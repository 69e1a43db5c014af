"""SQLAlchemy's own dialect compliance suite against the three dbgateway
dialects, with SQLAlchemy's native driver for each engine run side by side
(tests/sqlalchemy_suite/). Every test that fails through the gateway but
passes natively must be a known failure with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sqlalchemy_suite.known_failures import known_reason
from tests.sqlalchemy_suite.run import SuiteResult
from tests.sqlalchemy_suite.side_by_side import ENGINES, run_side_by_side, table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, SuiteResult]]:
    results = run_side_by_side(tmp_path_factory.mktemp("sqlalchemy-suite"))
    print("\n" + table(results))
    return results


@pytest.mark.parametrize("engine", ENGINES)
def test_the_suite_runs_through_the_dialect_and_natively(
    suite_results: dict[str, dict[str, SuiteResult]], engine: str
) -> None:
    gateway, native = suite_results[engine]["dbgateway"], suite_results[engine]["native"]
    for run in (gateway, native):
        assert run.total > 1000, f"{run.url} ran only {run.total} tests:\n{run.output}"
    assert gateway.passed >= 0.9 * native.passed, table(suite_results)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_failure_only_through_the_gateway_is_known_with_its_reason(
    suite_results: dict[str, dict[str, SuiteResult]], engine: str
) -> None:
    gateway, native = suite_results[engine]["dbgateway"], suite_results[engine]["native"]
    unexplained = {
        test: message
        for test, message in gateway.failures.items()
        if test not in native.failures and known_reason(engine, test, message) is None
    }
    assert not unexplained, "\n".join(f"{t}: {m}" for t, m in sorted(unexplained.items()))


def test_known_failures_list_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "sqlalchemy.testing.suite" in readme
    assert "ServerSideCursorsTest" in readme
