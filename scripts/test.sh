#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite unattended.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh </dev/null
# The working tree's feature definitions against their committed lock: an undeclared breaking
# change (README, "Planning a change") fails here, before any test runs.
.venv/bin/feature-pipelines plan --check </dev/null
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" </dev/null
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a broken suite, not a pass" >&2
  exit 1
fi
exit "$status"
