"""The benchmark as a short smoke run, so it keeps working; its figures are not asserted."""

import re
import shutil
import subprocess
import sys

import pytest

from conftest import APUS, ROOT


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ["nginx", "wrk", "h2load", "taskset", "valgrind"]),
                    reason="bench tools not installed (bench/setup.sh)")
def test_bench_smoke_runs_every_scenario_without_errors():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--apus", str(APUS)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Bodies identical across servers: True" in out, out
    rows = [line for line in out.splitlines() if re.match(r"\| [^|]+ \| (apus|nginx) \| \d", line)]
    assert len(rows) == 12, out
    assert all(line.rstrip(" |").endswith("| 0") for line in rows), out
    # The callgrind table: instructions per request for both servers, native and proxied, over HTTP/1.1 and TLS + HTTP/2.
    counts = re.findall(r"^\| (native|proxied)[^|]* \| ([\d,]+) \| ([\d,]+) \| [\d.]+ \|$", out, re.M)
    assert len(counts) == 4 and all(int(a.replace(",", "")) > 0 and int(n.replace(",", "")) > 0 for _, a, n in counts), out


def test_python_call_bench_smoke_checks_identical_bytes(handler_cache):
    env = dict(__import__("os").environ, APUS_BIN=str(APUS), APUS_CACHE_DIR=str(handler_cache))
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "python_calls.py"), "--smoke"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "order book: Swift is" in result.stdout and "trivial call overhead" in result.stdout, result.stdout
