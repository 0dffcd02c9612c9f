"""Drift thresholds of this catalog's features, calibrated on the real 2013 data.

`scripts/calibrate_drift.py` computes every view over 2013 and, for every day, the PSI and KS of
the day against the day before and against the 28 days before. Features that stay put from one
day to the next (flight counts, distances) keep the defaults (PSI 0.1 / 0.25, KS 0.1 / 0.2) or
get a little headroom above the year's maximum, and are `stationary`. Features driven by the
weather (delays, cancellations, the weather itself) are not stationary: their thresholds against
the 28-day reference sit at the year's 99th percentile (warn) and above its maximum (fail), so an
ordinary stormy day warns at most and only a change beyond anything 2013 saw fails.

Figures (2013, day vs the 28 days before: PSI p99 / max, KS p99 / max):
    route_flights_count_24h      0.088 / 0.228   0.121 / 0.175   (vs the day before: 0.134 / 0.162, 0.126 / 0.134)
    route_flights_count_7d       0.090 / 0.106   0.081 / 0.087   (vs the day before: 0.041 / 0.088, 0.047 / 0.071)
    route_dep_delay_mean_24h     1.327 / 1.782   0.500 / 0.555
    route_dep_delay_p90_7d       1.230 / 1.370   0.481 / 0.503
    route_cancel_rate_7d         3.312 / 4.237   0.728 / 0.812
    carrier_dep_delay_mean_24h   5.044 / 5.928   0.746 / 0.789
    carrier_cancel_rate_24h      1.900 / 5.064   0.605 / 0.915
    origin_visib_latest          2.488 / 9.972   0.785 / 0.938
    origin_wind_speed_latest     5.279 / 6.970   0.766 / 0.797
    origin_precip_sum_6h         3.171 / 10.352  0.743 / 0.950
    aircraft_flights_count_24h   0.037 / 0.067   0.069 / 0.092   (vs the day before: 0.050 / 0.062, 0.080 / 0.090)
    aircraft_distance_sum_24h    0.029 / 0.047   0.060 / 0.099   (vs the day before: 0.042 / 0.049, 0.064 / 0.092)
"""

from __future__ import annotations

from feature_pipelines.features.spec import FeatureMonitoring

_WEATHER_DRIVEN = dict(stationary=False)
# The weather itself: warn-only. A day of serving sees one day's weather, which may be unlike
# anything in the training window (2013: PSI up to 10, KS up to 0.95); that is the world changing,
# not the platform, so it is shown (WARN) but never fails.
_WEATHER = dict(stationary=False, psi_fail=1_000.0, ks_fail=1.01)

DRIFT_THRESHOLDS: dict[str, FeatureMonitoring] = {
    "route_flights_count_24h": FeatureMonitoring(psi_warn=0.2, psi_fail=0.35, ks_warn=0.15, ks_fail=0.25),
    "route_flights_count_7d": FeatureMonitoring(psi_warn=0.15, psi_fail=0.25),
    "route_dep_delay_mean_24h": FeatureMonitoring(psi_warn=1.4, psi_fail=2.2, ks_warn=0.5, ks_fail=0.7, **_WEATHER_DRIVEN),
    "route_dep_delay_p90_7d": FeatureMonitoring(psi_warn=1.25, psi_fail=1.7, ks_warn=0.49, ks_fail=0.63, **_WEATHER_DRIVEN),
    "route_cancel_rate_7d": FeatureMonitoring(psi_warn=3.4, psi_fail=5.3, ks_warn=0.73, ks_fail=0.98, **_WEATHER_DRIVEN),
    "carrier_dep_delay_mean_24h": FeatureMonitoring(psi_warn=5.1, psi_fail=7.4, ks_warn=0.75, ks_fail=0.98, **_WEATHER_DRIVEN),
    "carrier_cancel_rate_24h": FeatureMonitoring(psi_warn=1.9, psi_fail=6.3, ks_warn=0.61, ks_fail=0.99, **_WEATHER_DRIVEN),
    "origin_visib_latest": FeatureMonitoring(psi_warn=2.5, ks_warn=0.79, **_WEATHER),
    "origin_wind_speed_latest": FeatureMonitoring(psi_warn=5.3, ks_warn=0.77, **_WEATHER),
    "origin_precip_sum_6h": FeatureMonitoring(psi_warn=3.2, ks_warn=0.75, **_WEATHER),
    "aircraft_flights_count_24h": FeatureMonitoring(),
    "aircraft_distance_sum_24h": FeatureMonitoring(),
}
# Every other delay, cancellation and weather feature: not stationary, default thresholds (it is
# not in a training set, so only its skew is watched).
NOT_STATIONARY_PREFIXES = ("origin_", "route_dep_delay", "route_cancel", "carrier_", "aircraft_dep_delay")
