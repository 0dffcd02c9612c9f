"""Every table the platform writes to the lake, by name, from the catalog: no Dagster needed."""

from __future__ import annotations

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.names import INTERNAL_TABLES
from feature_pipelines.sources.raw_tables import RAW_TABLES
from feature_pipelines.training.spec import FLIGHT_DELAY_TRAINING_SET, LABELS_TABLE


def lake_table_names() -> list[str]:
    """The raw tables, the feature views, the labels and training sets, then the internal tables."""
    return [
        *(table.name for table in RAW_TABLES),
        *FEATURE_VIEWS,
        LABELS_TABLE,
        FLIGHT_DELAY_TRAINING_SET.name,
        *INTERNAL_TABLES,
    ]
