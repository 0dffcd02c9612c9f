"""`make bench`: every benchmark, each writing its JSON under benchmarks/results/.

BENCH_BACKFILL_DAYS (default 365) sets the backfill benchmark's range; BENCH_SERVER_SECONDS
(default 30) the feature server's load duration.
"""

from __future__ import annotations

import os
import subprocess
import sys

BENCHMARKS = [
    ["benchmarks.bench_point_in_time", "--sizes", "100000,1000000,10000000"],
    ["benchmarks.bench_online"],
    ["benchmarks.bench_server", "--seconds", os.environ.get("BENCH_SERVER_SECONDS", "30")],
    ["benchmarks.bench_serve_during_publish"],
    ["benchmarks.bench_skew"],
    ["benchmarks.bench_backfill"],
    ["benchmarks.bench_scale", "--sizes", os.environ.get("BENCH_SCALE_SIZES", "1000000,3000000,10000000"), "--partitions", os.environ.get("BENCH_SCALE_PARTITIONS", "3")],
    ["benchmarks.bench_scale_out", "--events", os.environ.get("BENCH_SCALE_OUT_EVENTS", "10000000")],
    ["benchmarks.bench_stream", "--consumers", os.environ.get("BENCH_STREAM_CONSUMERS", "2")],
]
# benchmarks.bench_against_feast is run on its own: its first run installs Feast into its own venv.


def main() -> int:
    failures = 0
    for module, *args in BENCHMARKS:
        print(f"== {module} {' '.join(args)}", flush=True)
        failures += subprocess.run([sys.executable, "-W", "ignore", "-m", module, *args], check=False).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
