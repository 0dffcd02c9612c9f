"""What every benchmark shares: a stopwatch, peak memory, the machine it ran on, and the JSON report.

Peak memory is measured one way everywhere: the kernel's high-water mark of this process's own
address space (`VmHWM`), which a benchmark can reset before the part it measures. `ru_maxrss` is
only the fallback off Linux: for RUSAGE_SELF Linux reports the larger of the current address
space and the one replaced at exec, i.e. the forking parent's size, which can dwarf a case run in
a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_HIGH_WATER_MARK = "5"  # proc(5): writing 5 to clear_refs resets VmHWM to the current RSS


@dataclass
class Stopwatch:
    """Wall and CPU seconds of a block: `with Stopwatch() as watch: ...`, then `watch.seconds`.

    CPU is user + system time of every thread of this process (`time.process_time`): less
    sensitive than wall time to other load on a shared machine."""

    began: float = 0.0
    cpu_began: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self.began, self.cpu_began = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.began
        self.cpu_seconds = time.process_time() - self.cpu_began

    def elapsed(self) -> float:
        """Wall seconds since the block began, while it is still running."""
        return time.perf_counter() - self.began


def _status_mib(field: str) -> float | None:
    try:
        with _STATUS.open() as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:  # no /proc: not Linux
        return None
    return None


def rss_mib() -> float:
    """This process's resident memory now (MiB); NaN where /proc is missing."""
    rss = _status_mib("VmRSS")
    return float("nan") if rss is None else rss


def peak_rss_mib() -> float:
    """This process's own peak resident memory (MiB) since it started or since `reset_peak_rss()`."""
    peak = _status_mib("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS (Linux >= 4.0), so the next peak is the
    measured part's own and not data loading's; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text(_RESET_HIGH_WATER_MARK)
    except OSError:
        return False
    return True


def machine(libraries: Mapping[str, str | None] | None = None, **extra: Any) -> dict[str, Any]:
    """The machine and versions a report was measured on; call it when the measurement has ended,
    since it records the load average then (the cores are shared with whatever else runs)."""
    import polars as pl

    return {
        "python": platform.python_version(),
        "polars": pl.__version__,
        **(libraries or {}),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        **extra,
    }


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """Write a benchmark's figures as indented JSON, creating the results folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def report_parser(description: str | None, default_out: Path, **options: Any) -> argparse.ArgumentParser:
    """An argument parser with the `--out` every benchmark takes (where its JSON report goes)."""
    parser = argparse.ArgumentParser(description=description, **options)
    parser.add_argument("--out", type=Path, default=default_out, help="where the JSON report goes")
    return parser
