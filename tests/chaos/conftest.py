"""Prints the chaos scenarios' figures as one table at the end of the run (`make chaos`)."""

from __future__ import annotations

import pytest

from tests.chaos.harness import SCENARIOS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SCENARIOS:
        return  # none ran in this process (e.g. under xdist the workers hold them)
    columns = ["scenario", "requests", "201", "409", "503", "no answer", "p99 ms"]
    widths = {c: max(len(c), *(len(str(row[c])) for row in SCENARIOS)) for c in columns}
    write = terminalreporter.write_line
    write("")
    write("chaos scenarios")
    write("  ".join(c.ljust(widths[c]) for c in columns) + "  figures")
    for row in SCENARIOS:
        write("  ".join(str(row[c]).ljust(widths[c]) for c in columns) + "  " + row["figures"])
    failed = len(terminalreporter.stats.get("failed", []))
    if failed:
        write(f"{failed} chaos test(s) FAILED: see above")
    else:
        write("0 double bookings, 0 lost bookings, 0 server errors")
