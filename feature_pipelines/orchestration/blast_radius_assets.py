"""The `blast_radius` monitoring asset, and the Dagster records the walk needs.

For a day, it finds the failed gates and restated partitions of the day's units (raw hours,
feature partitions) and walks each forward (`monitoring.blast_radius`) to the served requests,
the publishes that pushed their snapshots and the models that scored them. The publishes and the
feature partition rewrites are read from this instance's materializations of `<view>_online` and
of the views, so a restatement stops counting once its corrected values were published.
"""


from collections.abc import Mapping
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from feature_pipelines.features.spec import FeatureView, Partitioning
from feature_pipelines.monitoring.blast_radius import (
    BlastRadius,
    FeatureWrite,
    PublishRecord,
    find_incidents,
    incidents_of,
    walk,
)
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.concurrency import LAKE_WRITES_POOL
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.publish_assets import publish_asset_name
from feature_pipelines.resources import LakeResource
from feature_pipelines.settings import Settings

BLAST_RADIUS_ASSET = "blast_radius"
RECORDS_READ = 5000  # the newest materializations read per asset
SAMPLE_REQUEST_IDS = 20


def publish_records(instance: DagsterInstance, views: Mapping[str, FeatureView]) -> list[PublishRecord]:
    """Every recorded publish of the views (newest `RECORDS_READ` each): run, instant, partitions."""
    records = []
    for view in views.values():
        for record in instance.fetch_materializations(AssetKey(publish_asset_name(view)), limit=RECORDS_READ).records:
            materialization = record.asset_materialization
            span = materialization.metadata.get("feature_partitions") if materialization else None
            if span is None:
                continue
            first, _, last = str(span.value).partition("..")
            records.append(PublishRecord(view.name, record.run_id, datetime.fromtimestamp(record.timestamp, tz=UTC), first, last or first))
    return records


def feature_writes(instance: DagsterInstance, views: Mapping[str, FeatureView]) -> list[FeatureWrite]:
    """Every recorded materialization of the views' partitions (newest `RECORDS_READ` each)."""
    return [
        FeatureWrite(view.name, record.partition_key, datetime.fromtimestamp(record.timestamp, tz=UTC))
        for view in views.values()
        for record in instance.fetch_materializations(AssetKey(view.name), limit=RECORDS_READ).records
        if record.partition_key
    ]


def blast_radius_of(
    instance: DagsterInstance, store: DeltaStore, views: Mapping[str, FeatureView], *,
    day: tuple[datetime, datetime] | None = None, table: str | None = None, partition: str | None = None,
) -> BlastRadius:
    """The blast radius of a day's incidents, or of one table partition's (`table`, `partition`)."""
    if table is not None and partition is not None:
        incidents = incidents_of(store, views, table, partition)
    elif day is not None:
        incidents = find_incidents(store, views, *day)
    else:
        raise ValueError("blast radius: pass a day, or a table and one of its partitions")
    return walk(store, views, incidents, publishes=publish_records(instance, views), writes=feature_writes(instance, views))


def build_blast_radius_asset(views: Mapping[str, FeatureView], settings: Settings) -> AssetsDefinition:
    sources = sorted({view.source.asset for view in views.values()})

    @asset(
        name=BLAST_RADIUS_ASSET,
        description="The blast radius of the day's bad partitions: each raw hour or feature partition whose "
        "latest blocking check failed or whose rows were restated, walked forward to the feature snapshots "
        "whose windows read it, the served requests (request log) that got those snapshots, the publishes "
        "that pushed them and the models that scored them (`_serving/predictions`). Entity precision when "
        "the bad rows are known (quarantine, changed rows), partition precision otherwise.",
        group_name="monitoring",
        partitions_def=partitions_for(Partitioning.DAILY, settings, in_progress=True),
        deps=[AssetKey(name) for name in [*sources, *views]],
        kinds={"polars", "delta"},
        pool=LAKE_WRITES_POOL,
    )
    def _blast_radius(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
        window = context.partition_time_window
        day = (window.start.astimezone(UTC), window.end.astimezone(UTC))
        radius = blast_radius_of(context.instance, lake.store(), views, day=day)
        ids = radius.request_ids
        models = radius.to_dict()["models"]
        context.log.info(radius.summary())
        return MaterializeResult(metadata={
            "incidents": len(radius.incidents),
            "affected_requests": len(ids),
            "affected_served_values": radius.served.height,
            "publishes": radius.publishes().height,
            "sample_request_ids": MetadataValue.json(ids[:SAMPLE_REQUEST_IDS]),
            "models": MetadataValue.json(models if models is not None else "no predictions table: no model scored"),
            "report": MetadataValue.md(radius.markdown()),
        })

    return _blast_radius
