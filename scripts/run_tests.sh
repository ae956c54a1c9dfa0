#!/usr/bin/env bash
# The project's checks, as `make test` runs them: lint, formatting, then pytest (arguments pass on).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest "$@"
