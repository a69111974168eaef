"""What the benchmarks that write benchmarks/results/*.txt share: paths, waiting for a quiet CPU
before each timed run, the report's header, and writing the report.

Scripts import it as ``_common`` (they run as ``python benchmarks/NAME.py``, which puts this folder
on the path).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from flightmind.atomic import write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FLIGHTMIND_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
QUIET = 0.1  # a CPU share busy with other programs low enough to time in


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds`, from /proc/stat."""

    def sample():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = fields[3] + fields[4]
        return idle, sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


class QuietCPUs:
    """Before each timed run, wait (up to max_wait seconds) until other programs leave the CPUs alone,
    and remember how busy they were, for the report."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self.busy_seen: list[float] = []

    def wait(self) -> None:
        deadline = time.monotonic() + self.max_wait
        busy = cpu_busy_fraction()
        while busy > QUIET and time.monotonic() < deadline:
            busy = cpu_busy_fraction()
        self.busy_seen.append(busy)

    def note(self) -> str:
        seen = self.busy_seen
        return (
            f"CPU busy before each timed run (other programs): median {statistics.median(seen):.0%}, "
            f"max {max(seen):.0%} (each run waited up to {self.max_wait:.0f} s for < {QUIET:.0%})"
        )


def report_header(title: str, *, packages: tuple[str, ...], machine_notes: str = "") -> list[str]:
    """The title, then date, machine (with the versions of ``packages``) and the exact command."""
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in packages)
    return [
        title,
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"machine: nproc={os.cpu_count()} {platform.processor() or platform.machine()}{machine_notes}; "
        f"python {platform.python_version()}, {versions}",
        f"command: python {shlex.join(sys.argv)}",
    ]


def write_report(lines: list[str], name: str) -> None:
    """Print the report and write it to benchmarks/results/NAME (whole or not at all)."""
    report = "\n".join(lines) + "\n"
    print(report, end="")
    path = RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, report)
