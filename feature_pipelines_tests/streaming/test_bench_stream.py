"""The stream benchmark's quick mode runs end to end (its own redis-server, a real consumer process)
and reports every figure, with no event lost in the burst."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_stream import main

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_quick_mode_reports_lag_throughput_memory_and_a_burst_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    main(["--quick", "--consumers", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [lag["rate_target"] for lag in report["lag"]] == [1_000, 10_000]
    for lag in report["lag"]:
        assert lag["applied"] == lag["pushed"] == lag["events"] > 0
        assert 0 < lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"]
    (throughput,) = report["throughput"]
    assert throughput["applied"] == throughput["events"] and throughput["events_per_s"] > 0
    assert 0 < throughput["ratio_to_raw_read_ack"] < 1  # the raw loop does no work per entry
    memory = report["memory"]
    assert memory["entities"] > 100 and memory["bytes_per_entity"] > 0 and memory["marker_bytes_per_event"] > 0
    burst = report["burst"]
    assert burst["no_loss"] and burst["applied"] == burst["pushed"] and burst["dead_lettered"] == 0
    assert burst["peak_backlog"] > 0 and burst["drain_seconds_after_burst"] is not None
