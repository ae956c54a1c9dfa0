#!/usr/bin/env bash
# The project's checks, as `make test` runs them: lint, formatting, then pytest (arguments pass on).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
# The slowest tests are listed at the end, so that a CI log shows where its time went.
exec "$venv/bin/python" -m pytest --durations=30 "$@"
