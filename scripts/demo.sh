#!/usr/bin/env bash
# The main command: install, backfill the demo range on embedded defaults (local Delta lake under
# data/, local Dagster instance under data/dagster_home), then open the Dagster UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/data/dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp deploy/dagster.local.yaml "$DAGSTER_HOME/dagster.yaml"
# Replay mode: 2013 is mapped onto the present (whole weeks, so weekdays line up), starting two
# weeks ago, so the schedules have a real hour to materialise every hour. The start is kept in
# data/replay_start so that a later demo continues the same timeline.
if [ -z "${FEATURE_PIPELINES_REPLAY_START:-}" ]; then
  [ -f data/replay_start ] || date -u -d "14 days ago" +%F > data/replay_start
  export FEATURE_PIPELINES_REPLAY_START="$(cat data/replay_start)"
fi
echo "demo: replay mode, 2013 data mapped to start on ${FEATURE_PIPELINES_REPLAY_START}"
if [ -z "${FEATURE_PIPELINES_REDIS_URL:-}" ]; then
  # No online store configured: start (or reuse) a local redis-server on a free loopback port.
  FEATURE_PIPELINES_REDIS_URL="$(.venv/bin/feature-pipelines redis-up)"
  export FEATURE_PIPELINES_REDIS_URL
  echo "demo: no Redis URL configured; using a local redis-server at ${FEATURE_PIPELINES_REDIS_URL} (stop it with: .venv/bin/feature-pipelines redis-down)"
fi
# A backfill that held something back exits 1; the demo still opens the UI, where it shows.
.venv/bin/feature-pipelines backfill --days "${DEMO_DAYS:-21}" \
  || echo "demo: the backfill did not write everything: see the summary above; the UI shows the held-back partitions in red"
# The model (group `models`): trained on the training set just built, a new registry version each run (seconds).
.venv/bin/dagster asset materialize -m feature_pipelines.definitions --select flight_delay_model >data/demo_model.log 2>&1 \
  || echo "demo: flight_delay_model was not trained (log: data/demo_model.log); POST /predict answers 503 until it is"
# The stream consumer runs in the background (it stays up with the UI; stop it with `stream --stop`):
# the server reads the streaming view from its tiles. `traffic` pushes the replayed events known up
# to now, scores the next 24 hours of departures with the model (POST /predict: features and
# predictions logged), then pushes departures as they happen (up to 2 min, until 2 aircraft
# changed) and shows each served change. Then today's skew, drift, shadow and stream-parity
# reports, and the outcome report (outcomes join as flights arrive: materialize it again later).
.venv/bin/feature-pipelines stream --background
.venv/bin/feature-pipelines traffic --hours 24 --score --live 120 --live-events 2 || echo "demo: traffic did not finish; the line above says why"
# A faulty serving path, once a day: requests whose windows end at midnight are appended to today's
# served log (the honest ones are untouched), so the skew check below catches it and names its root
# cause in the UI (`serving_skew`'s check and metadata: three-way split and root_causes).
injected="data/skew_injected_$(date -u +%F)"
if [ ! -f "$injected" ]; then
  .venv/bin/feature-pipelines inject-skew midnight-window && touch "$injected"
fi
.venv/bin/feature-pipelines monitor || echo "demo: a monitor flagged something (today's injected midnight-window path among them); see the monitoring group in the UI"
.venv/bin/dagster asset materialize -m feature_pipelines.definitions --select flight_delay_model_outcomes \
  --partition "$(date -u +%F)" >data/demo_outcomes.log 2>&1 \
  || echo "demo: the outcome report failed (log: data/demo_outcomes.log)"
# The feature catalog page with today's states; `serve` answers it at /catalog.
.venv/bin/feature-pipelines catalog --html || echo "demo: the catalog page could not be written; see above"
echo "demo: search the features: .venv/bin/feature-pipelines catalog owner:fleet-ml (or column:dep_delay, ...), or http://127.0.0.1:6566/catalog while serve runs"
echo "demo: inject a skew and watch it caught: .venv/bin/feature-pipelines inject-skew zero-imputation && .venv/bin/feature-pipelines monitor"
host="${DAGSTER_HOST:-127.0.0.1}"; port="${DAGSTER_PORT:-3000}"
echo "demo: opening Dagster at http://${host}:${port} (Ctrl-C to stop)"
echo "demo: the feature server is one command away: .venv/bin/feature-pipelines serve  (http://127.0.0.1:6566/docs)"
exec .venv/bin/dagster dev -w workspace.yaml -h "$host" -p "$port"
