"""Fixtures for the fault scenarios and the report table printed at the end of the run.

Each scenario attaches its reconciliation row to its test report (`user_properties`), which
pytest-xdist carries back to the controller, so the table is complete with or without `-n`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Reconciliation, Stack

COLUMNS = ("scenario", "due", "sent", "failed", "unknown", "unknown_received", "duplicates", "lost")
HEADINGS = {"unknown_received": "unknown, at SES"}
_rows: list[dict[str, Any]] = []


@pytest.fixture
def stack(tmp_path: Path, transactional_db: Any) -> Iterator[Stack]:
    """Own Redis and SES endpoint processes; every process still running is stopped afterwards."""
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    """`report(reconciliation)`: add the scenario's row to the table, then assert it is clean."""

    def add(result: Reconciliation) -> Reconciliation:
        request.node.user_properties.append(("faults_row", result.row()))
        result.assert_clean()
        return result

    return add


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _rows.extend(value for key, value in report.user_properties if key == "faults_row")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    headings = [HEADINGS.get(col, col) for col in COLUMNS]
    widths = [max(len(h), *(len(str(row[col])) for row in _rows)) for col, h in zip(COLUMNS, headings, strict=True)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in sorted(_rows, key=lambda r: r["scenario"]):
        cells = [
            str(row[col]).ljust(w) if col == "scenario" else str(row[col]).rjust(w)
            for col, w in zip(COLUMNS, widths, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    terminalreporter.write_sep("=", "fault scenarios: the ledger reconciled against SES")
    for line in lines:
        terminalreporter.write_line(line)
