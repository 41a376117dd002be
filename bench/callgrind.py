"""Instructions per request under callgrind: a count that does not move with machine noise.

Each server runs alone under `valgrind --tool=callgrind` (Apus with one worker,
nginx with `master_process off`, so one process does all the work). After a
warm-up, the counters are zeroed, a fixed number of keep-alive requests is sent
(h2load: HTTP/1.1 over 4 connections; TLS + HTTP/2 over 4 connections with 10
streams each), the counters are dumped, and the total is divided by the number
of requests. The uvicorn backend runs natively and is not counted.
The dumps stay in the bench's work folder;
`python3 bench/callgrind.py top DUMP REQUESTS` lists where their instructions went.

Two details make callgrind usable on this Debian (valgrind 3.19):
- Swift 6.3 writes DWARF 5 debug info that valgrind 3.19 cannot read, so Apus
  runs from a copy with the debug sections removed (symbols stay).
- valgrind 3.19 writes into the signal mask passed to `rt_sigsuspend`, and
  libdispatch passes one in read-only memory (its signal thread, started by an
  async `main`): valgrind itself crashes. A two-line preloaded `sigsuspend` passes
  a copy on the stack instead.
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SIGSUSPEND_SHIM = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
/* valgrind 3.19 writes into the mask it is given; libdispatch's is read-only. */
int sigsuspend(const sigset_t *mask) { sigset_t copy = *mask; return (int)syscall(SYS_rt_sigsuspend, &copy, 8); }
"""

# (name, path, over TLS + HTTP/2)
SCENARIOS = [("native 2 KiB JSON, HTTP/1.1", "/fixed", False), ("proxied to uvicorn (UDS), HTTP/1.1", "/hello/bench", False),
             ("native 2 KiB JSON, TLS + HTTP/2", "/fixed", True), ("proxied, TLS + HTTP/2", "/hello/bench", True)]
# Counted for Apus alone: the native order book, whose cost is mostly the handler's own
# (generating, validating and writing 200 records); nginx has no counterpart to count.
APUS_ONLY = [("hot path: native order book, HTTP/1.1", "/orderbook/ACME?n=200", False)]


def available() -> bool:
    return all(shutil.which(tool) for tool in ["valgrind", "callgrind_control", "cc", "objcopy", "h2load"])


def requests(url: str, count: int, h2: bool = False):
    mode = ["-m", "10"] if h2 else ["--h1"]
    out = subprocess.run(["h2load", *mode, "-n", str(count), "-c", "4", "-t", "1", url],
                         capture_output=True, text=True, timeout=600).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not done or int(done.group(1)) != count:
        raise RuntimeError(f"h2load {url}: not every request succeeded:\n{out}")


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} under valgrind")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer under valgrind within {timeout}s")


def dumped_total(out_file: Path, before: set) -> int:
    """The Ir total of the dump callgrind_control just wrote (callgrind numbers them out_file.1, .2, ...)."""
    for _ in range(100):
        new = [p for p in out_file.parent.glob(out_file.name + ".*") if p not in before]
        if new and "totals:" in new[0].read_text(errors="replace"):
            return int(re.search(r"^totals: (\d+)", new[0].read_text(errors="replace"), re.M).group(1))
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump next to {out_file}")


def count(server: str, argv, env, cwd: Path, base_url: str, tls_url: str, work: Path, total: int, scenarios=SCENARIOS) -> dict:
    """Starts `argv` under callgrind and returns instructions per request for each scenario."""
    out_file = work / f"callgrind.{server}.out"
    process = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", *map(str, argv)],
                               cwd=cwd, env=env, stdout=open(work / f"callgrind.{server}.log", "ab"), stderr=subprocess.STDOUT)
    counts = {}
    try:
        wait_ready(base_url + "/fixed", process)
        for name, path, h2 in scenarios:
            url = (tls_url if h2 else base_url) + path
            requests(url, max(total // 4, 40), h2)  # warm-up: pools, caches, lazy state
            before = set(out_file.parent.glob(out_file.name + ".*"))
            subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
            requests(url, total, h2)
            subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
            counts[name] = dumped_total(out_file, before) / total
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return counts


def measure(stack, apus: Path, total: int, free_port) -> dict:
    """Instructions per request for Apus and for nginx, per scenario: {scenario: {"apus": n, "nginx": n}}."""
    work = stack.work
    shim = work / "sigsuspend-shim.so"
    (work / "sigsuspend-shim.c").write_text(SIGSUSPEND_SHIM)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", shim, work / "sigsuspend-shim.c"], check=True)
    stripped = work / "apus-no-debug-info"
    subprocess.run(["objcopy", "--strip-debug", apus, stripped], check=True)

    apus_port, apus_tls = free_port(), free_port()
    config = work / "callgrind.conf"
    config.write_text(stack.apus_config(apus_port, tls=True, tls_port=apus_tls))
    # The copy lives outside the checkout, so tell it where the handler SDK is.
    env = dict(os.environ, LD_PRELOAD=str(shim), APUS_SDK_DIR=str(Path(__file__).resolve().parents[1] / "Sources"))
    apus_counts = count("apus", [stripped, "serve", "--config", config], env, work, f"http://127.0.0.1:{apus_port}",
                        f"https://127.0.0.1:{apus_tls}", work, total, SCENARIOS + APUS_ONLY)

    nginx_port, nginx_tls = free_port(), free_port()
    (work / "callgrind-nginx.conf").write_text(stack.nginx_config(nginx_port, nginx_tls, "callgrind-nginx", single_process=True))
    nginx_counts = count("nginx", ["nginx", "-c", work / "callgrind-nginx.conf", "-p", work], dict(os.environ), work,
                         f"http://127.0.0.1:{nginx_port}", f"https://127.0.0.1:{nginx_tls}", work, total)
    return {name: {"apus": apus_counts[name], "nginx": nginx_counts.get(name)} for name, _, _ in SCENARIOS + APUS_ONLY}


def top(dump: Path, requests: int, count: int = 40):
    """Prints the functions with the most instructions of their own (not their callees'), per request."""
    names, own, function, skip_next = {}, collections.Counter(), None, False
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("fn=", "cfn=")):
            found = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if found.group(2):
                names[found.group(1)] = found.group(2)
            if line.startswith("fn="):
                function = found.group(1)
        elif line.startswith("calls="):
            skip_next = True  # the next cost line is the callee's inclusive cost
        elif line[:1] in "0123456789+-*":
            parts = line.split()
            if skip_next:
                skip_next = False
            elif len(parts) >= 2 and function is not None:
                own[function] += int(parts[1])
    total = sum(own.values())
    ranked = own.most_common(count)
    demangled = subprocess.run(["swift", "demangle", "--simplified"], input="\n".join(names.get(f, f) for f, _ in ranked),
                               capture_output=True, text=True).stdout.splitlines() if shutil.which("swift") else []
    print(f"{total / requests:,.0f} instructions per request")
    for index, (function, cost) in enumerate(ranked):
        name = demangled[index] if index < len(demangled) else names.get(function, function)
        print(f"{cost / requests:9,.0f}  {100 * cost / total:5.1f}%  {name[:140]}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "top":
        sys.exit("usage: python3 bench/callgrind.py top DUMP REQUESTS   (the counts themselves: python3 bench/run.py --only-callgrind)")
    top(Path(sys.argv[2]), int(sys.argv[3]))
