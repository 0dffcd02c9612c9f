"""Labels from flights: the outcome, and the instant the prediction is made (before departure)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from feature_pipelines.training.spec import PREDICTION_TIMESTAMP

LATE_THRESHOLD_MINUTES = 15


def flight_delay_labels(flights: pl.DataFrame, *, lead_time: timedelta) -> pl.DataFrame:
    """One row per flight that arrived: `arrived_late_15m` = arrival delay > 15 minutes, stamped
    `lead_time` before the scheduled departure. Cancelled and diverted flights have no arrival
    delay and so no label; they are left out (counted by the caller), never imputed."""
    return (
        flights.filter(pl.col("arr_delay").is_not_null())
        .select(
            "carrier",
            "flight_number",
            "tailnum",
            "origin",
            "dest",
            "scheduled_departure_at",
            (pl.col("scheduled_departure_at") - lead_time).alias(PREDICTION_TIMESTAMP),
            (pl.col("arr_delay") > LATE_THRESHOLD_MINUTES).alias("arrived_late_15m"),
        )
        .sort("scheduled_departure_at", "carrier", "flight_number", "origin")
    )
