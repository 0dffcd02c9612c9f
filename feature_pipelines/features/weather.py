"""Feature views over hourly airport weather."""


from feature_pipelines.features.entities import origin
from feature_pipelines.features.service_levels import HOURLY_OPERATIONS
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy, SourceSpec

# Latest values look back as far as the view's widest window, so a row never lacks one merely
# because an hourly observation is missing from the source.
_LATEST = dict(aggregation=Aggregation.LATEST, window="6h", null_policy=NullPolicy.KEEP)

origin_weather = FeatureView(
    name="origin_weather",
    entity=origin,
    source=SourceSpec(asset="raw_weather", known_at_column="observed_at"),
    features=(
        Feature("origin_temp_latest", "float64", source_column="temp", min_value=-40, max_value=130,
                max_null_fraction=0.02, description="Latest temperature (F) observed in the last 6h.", **_LATEST),
        Feature("origin_visib_latest", "float64", source_column="visib", min_value=0, max_value=10,
                max_null_fraction=0.01, description="Latest visibility (miles) observed in the last 6h.", **_LATEST),
        Feature("origin_wind_speed_latest", "float64", source_column="wind_speed", min_value=0,
                max_value=100, max_null_fraction=0.02, description="Latest wind speed (mph).", **_LATEST),
        Feature("origin_temp_mean_6h", "float64", Aggregation.MEAN, "6h", "temp", min_value=-40,
                max_value=130, max_null_fraction=0.01, description="Mean temperature over 6h."),
        Feature("origin_precip_sum_6h", "float64", Aggregation.SUM, "6h", "precip", min_value=0,
                max_value=20, description="Precipitation (inches) over 6h."),
        Feature("origin_wind_speed_max_6h", "float64", Aggregation.MAX, "6h", "wind_speed",
                min_value=0, max_value=100, max_null_fraction=0.01, description="Peak wind speed over 6h."),
        Feature("origin_observations_count_6h", "int64", Aggregation.COUNT, "6h", min_value=0,
                max_value=12, description="Weather observations in the last 6h (normally 6)."),
    ),
    description="Weather at each New York origin airport, snapshotted at the end of every hour "
    "(daily partitions, refreshed hourly).",
    tags={"domain": "weather"},
    **HOURLY_OPERATIONS,
)
