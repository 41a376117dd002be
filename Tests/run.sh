#!/usr/bin/env bash
# The whole test suite: Swift unit tests, then end-to-end tests that run the
# real apus binary against real uvicorn and gunicorn over Unix sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
swift test --skip-build
export APUS_BIN="$(swift build --show-bin-path)/apus"
exec .venv/bin/pytest -q -p no:cacheprovider Tests/e2e "$@"
