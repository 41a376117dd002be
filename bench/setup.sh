#!/usr/bin/env bash
# What the benchmark needs beyond Tests/setup.sh: nginx 1.22 (Debian), wrk, h2load, openssl, taskset,
# and valgrind with a C compiler and objcopy for the instruction counts.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get install -y -qq nginx wrk nghttp2-client openssl util-linux valgrind gcc binutils >/dev/null
