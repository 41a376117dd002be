#!/usr/bin/env bash
# Installs everything the gateway, the quickstart and the tests need on a fresh
# machine: Debian packages, a Python venv in .venv, and a debug build of apus.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # curl, h2load (nghttp2-client) and headless chromium: real clients in the tests;
    # procps: pgrep in tests; gcc: C handlers in the ABI tests.
    # libsqlite3-dev: the package-handler example links SQLite; python3-dev: Python.h for `apus.load`
    # (a pyenv or python.org interpreter brings its own headers).
    $SUDO apt-get install -y -qq curl procps gcc nghttp2-client chromium libsqlite3-dev python3-dev >/dev/null
    # nginx, wrk: the benchmark (its smoke run is part of the tests).
    bash bench/setup.sh
    # The Debian package may start a system nginx; the tests and the bench run their own.
    (service nginx stop || pkill -x nginx || true) >/dev/null 2>&1
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r Tests/requirements.txt
# The apus Python package (python/), editable: the tests import Swift through it.
.venv/bin/pip install -q -e ./python

swift build --build-tests
echo "setup done: .build/debug/apus and .venv are ready"
