#!/usr/bin/env python3
"""Apus and nginx side by side, in one run, on this machine.

Servers (Apus or nginx, and the uvicorn backend) are pinned to core 0 and the load
generator (wrk, h2load) to core 1. Each scenario warms up, then runs `--rounds`
interleaved rounds (Apus, nginx, Apus, nginx, ...) and reports the median of:
requests/s, p50, p99, and server CPU microseconds per request (CPU time the
proxy process used during the round divided by the requests it answered; the
backend's CPU is reported separately for proxied scenarios).

    python3 bench/run.py            # the full run; prints the table (markdown)
    python3 bench/run.py --smoke    # a few seconds per scenario, for CI: checks the bench still runs

Needs nginx, wrk, nghttp2-client (h2load) and the project venv (bench/setup.sh installs them).
"""

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import callgrind

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
# The gateway's release build (see Package.swift): without SwiftNIO's run-time exclusivity
# checks, as Docker/Dockerfile makes it, and without libFoundation, which TOMLKit names for
# the linker and nothing calls (the Dockerfile's static build leaves it out by itself).
# Every function in a section of its own (Swift and C, as the Dockerfile too), so that the
# linker's --gc-sections drops the unused functions of each module rather than keeping a
# whole file's code for one of them: 1.1 MiB less code, about 0.5 MiB less resident after
# start (bench/README.md). (`-Xfrontend -function-sections`: SwiftPM 6.3 crashes re-planning
# a build that passed the driver's spelling, `-Xswiftc -function-sections`.) SwiftPM does not
# recompile Swift modules it has built when only these flags change: after changing them,
# remove .build/release once.
RELEASE_BUILD = ["-c", "release", "--product", "apus", "-Xswiftc", "-enforce-exclusivity=unchecked",
                 *[flag for library in ["Foundation", "FoundationInternationalization"]
                   for flag in ["-Xswiftc", "-Xfrontend", "-Xswiftc", "-disable-autolink-library", "-Xswiftc", "-Xfrontend", "-Xswiftc", library]],
                 "-Xswiftc", "-Xfrontend", "-Xswiftc", "-function-sections", "-Xcc", "-ffunction-sections"]
VENV = ROOT / ".venv" / "bin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
FIXED_JSON = json.dumps({"items": [{"id": i, "name": "item-%04d" % i, "price": 10 + i * 0.25, "tags": ["a", "b"]}
                                   for i in range(35)]}, separators=(",", ":"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60, context=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except Exception:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def answers_200(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total / CLOCK_TICKS


def read_back_from_disk(binary):
    """Drops the binary's pages from the page cache, so that it is read from disk when it starts.

    A file just written (a fresh link, a copy) sits in the page cache in larger pieces than
    one read back from disk, and the kernel maps more of it around each page a process
    touches: the same apus binary was 1 MiB larger in RSS right after it was linked. Without
    this, the RSS rows would depend on whether the bench had just rebuilt apus."""
    descriptor = os.open(binary, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except FileNotFoundError:
            pass
    return total / (1 << 20)


def family(pid):
    """A process and its children (nginx's master and worker)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(c) for c in children]


class Stack:
    """uvicorn, Apus and nginx, started once for the whole run."""

    def __init__(self, work: Path, apus: Path):
        self.work = work
        self.processes = []
        try:
            self.setup(apus)
        except BaseException:
            self.stop()
            raise

    def apus_config(self, port: int, tls: bool, tls_port=None) -> str:
        work = self.work
        tls_section = f"""[[server.tls]]
listen = "127.0.0.1:{tls_port or self.apus_tls}"
certificate = "{work}/cert.pem"
private_key = "{work}/key.pem"
""" if tls else ""
        return f"""
[server]
listen = ["127.0.0.1:{port}"]
workers = 1
access_log = "off"
start_traces = false
{tls_section}[backend]
address = "unix:{self.sock}"
max_connections = 1024
[handlers]
sources = "handlers"
cache = "{ROOT}/bench/.apus-cache"
[[route]]
match = "GET /fixed"
handler = "fixed"
[[route]]
match = "GET /orderbook/{{symbol}}"
handler = "orderbook"
"""

    def nginx_config(self, port: int, tls_port, name: str, single_process: bool = False) -> str:
        """nginx as a user would configure it in front of the same backend; `single_process` for valgrind.
        `keepalive_requests` is raised from its default of 1,000 as anyone load-testing nginx does: at the
        default, nginx ends each HTTP/2 connection with GOAWAY after 1,000 requests, and h2load, which does
        not reconnect, counts the requests it had queued on it as failed. Apus has no such limit."""
        work = self.work
        tls_listen = f"""listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;""" if tls_port else ""
        return f"""
worker_processes 1;
{"master_process off;" if single_process else ""}
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream backend {{ server unix:{self.sock}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        {tls_listen}
        location = /fixed {{ default_type application/json; return 200 '{FIXED_JSON}'; }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}
    }}
}}
"""

    def measure_start(self, apus: Path, runs: int) -> list:
        """Start to first 200 with a warm handler cache, on its own port while everything else is idle."""
        port = free_port()
        config = self.work / "start.conf"
        config.write_text(self.apus_config(port, tls=False))
        times = []
        for _ in range(runs):
            started = time.monotonic()
            process = subprocess.Popen(["taskset", "-c", "0", apus, "serve", "--config", config], cwd=self.work,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while not answers_200(port):
                    if process.poll() is not None or time.monotonic() - started > 30:
                        raise RuntimeError("apus did not start for the start-time measurement")
                    time.sleep(0.002)
                times.append((time.monotonic() - started) * 1000)
            finally:
                process.terminate()
                process.wait()
        return times

    def setup(self, apus: Path):
        work = self.work
        self.sock = str(work / "backend.sock")
        self.apus_port, self.nginx_port = free_port(), free_port()
        self.apus_tls, self.nginx_tls = free_port(), free_port()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", work / "key.pem", "-out", work / "cert.pem", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        self.backend = self.start(["taskset", "-c", "0", VENV / "uvicorn", "app:app", "--uds", self.sock, "--no-access-log",
                                   "--log-level", "warning"], cwd=QUICKSTART)
        self.config = work / "gateway.conf"
        handlers = work / "handlers"
        handlers.mkdir()
        shutil.copy(ROOT / "bench" / "handlers" / "fixed.swift", handlers)
        shutil.copy(QUICKSTART / "handlers" / "orderbook.swift", handlers)
        self.config.write_text(self.apus_config(self.apus_port, tls=True))
        subprocess.run([apus, "check", "--config", self.config], check=True, capture_output=True)  # warm the handler cache
        self.apus = self.start(["taskset", "-c", "0", apus, "serve", "--config", self.config], cwd=work)
        wait_http(f"http://127.0.0.1:{self.apus_port}/fixed", timeout=30)
        (work / "nginx.conf").write_text(self.nginx_config(self.nginx_port, self.nginx_tls, "nginx"))
        self.nginx = self.start(["taskset", "-c", "0", "nginx", "-c", work / "nginx.conf", "-p", work], cwd=work)
        wait_http(f"http://127.0.0.1:{self.nginx_port}/fixed")
        wait_http(f"http://127.0.0.1:{self.apus_port}/hello/warm")
        wait_http(f"http://127.0.0.1:{self.nginx_port}/hello/warm")

    def start(self, argv, cwd):
        process = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=open(self.work / f"{Path(str(argv[3])).name}.log", "ab"),
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def stop(self):
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def wrk(url, duration, connections):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    found = re.search(r"(\d+) requests in", out)
    if not found:
        raise RuntimeError(f"wrk {url}: unexpected output:\n{out}")
    requests = int(found.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def latency(label):
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency("50"), "p99": latency("99"),
            "errors": int(errors.group(1)) if errors else 0 + (sum(map(int, socket_errors.groups())) if socket_errors else 0)}


def h2load(url, requests):
    out = subprocess.run(["taskset", "-c", "1", "h2load", "-n", str(requests), "-c", "16", "-m", "10", "-t", "1", url],
                         capture_output=True, text=True, timeout=300).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    mean = re.search(r"time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", out)
    mean_ms = float(mean.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[mean.group(2)]
    return {"requests": int(done.group(2)), "rps": rps, "p50": mean_ms, "p99": float("nan"), "errors": int(done.group(3))}


def measure(server_pids, backend_pids, run):
    before, backend_before = cpu_seconds(server_pids), cpu_seconds(backend_pids)
    result = run()
    used, backend_used = cpu_seconds(server_pids) - before, cpu_seconds(backend_pids) - backend_before
    result["cpu_us"] = used * 1e6 / max(result["requests"], 1)
    result["backend_cpu_us"] = backend_used * 1e6 / max(result["requests"], 1)
    return result


def median_of(rounds):
    keys = rounds[0].keys()
    return {key: statistics.median(r[key] for r in rounds) for key in keys}


def open_connections(port, count):
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        sockets.append(s)
    for s in sockets:
        data = b""
        while b"}]}" not in data:
            data += s.recv(65536)
    return sockets


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="one short round per scenario, to check the bench runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--apus", help="the apus binary (default: .build/release/apus, built first)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--callgrind-requests", type=int, default=2000, help="requests counted per scenario under callgrind")
    parser.add_argument("--only-callgrind", action="store_true", help="skip the timed scenarios; count instructions only")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.callgrind_requests = 1, 1, 100
    if args.apus:
        apus = Path(args.apus).resolve()
    else:
        # Brought up to date every time, so that the figures are the source's.
        subprocess.run(["swift", "build", *RELEASE_BUILD], cwd=ROOT, check=True, stdout=sys.stderr)  # stdout is the table
        apus = ROOT / ".build" / "release" / "apus"
    for tool in ["nginx", "wrk", "h2load", "taskset", "openssl", "valgrind", "callgrind_control", "cc", "objcopy"]:
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found; run bench/setup.sh")

    for binary in [apus, shutil.which("nginx")]:
        read_back_from_disk(binary)
    work = Path(tempfile.mkdtemp(prefix="apus-bench-"))
    work.chmod(0o755)  # nginx workers run as another user and must reach the backend socket
    stack = Stack(work, apus)
    results = []
    try:
        if not args.only_callgrind:
            apus_pids = [stack.apus.pid]
            nginx_pids = family(stack.nginx.pid)
            backend_pids = family(stack.backend.pid)
            # Correctness first: identical bodies, or the comparison is meaningless.
            fixed_apus = urllib.request.urlopen(f"http://127.0.0.1:{stack.apus_port}/fixed").read()
            fixed_nginx = urllib.request.urlopen(f"http://127.0.0.1:{stack.nginx_port}/fixed").read()
            native_book = urllib.request.urlopen(f"http://127.0.0.1:{stack.apus_port}/orderbook/ACME?n=200").read()
            json_book = urllib.request.urlopen(f"http://127.0.0.1:{stack.nginx_port}/py/orderbook/ACME?n=200").read()
            orjson_book = urllib.request.urlopen(f"http://127.0.0.1:{stack.nginx_port}/py/orderbook-orjson/ACME?n=200").read()
            identical = fixed_apus == fixed_nginx and native_book == json_book == orjson_book
            print(f"bodies identical: fixed {fixed_apus == fixed_nginx} ({len(fixed_apus)} B), "
                  f"order book {native_book == json_book == orjson_book} ({len(native_book)} B)", flush=True)

            a, n = f"http://127.0.0.1:{stack.apus_port}", f"http://127.0.0.1:{stack.nginx_port}"
            at, nt = f"https://127.0.0.1:{stack.apus_tls}", f"https://127.0.0.1:{stack.nginx_tls}"
            h2_requests = 2000 if args.smoke else 60000
            scenarios = [
                ("native 2 KiB JSON, HTTP/1.1", lambda: wrk(f"{a}/fixed", args.duration, 32), lambda: wrk(f"{n}/fixed", args.duration, 32), False),
                ("proxied to uvicorn (UDS), HTTP/1.1", lambda: wrk(f"{a}/hello/bench", args.duration, 32),
                 lambda: wrk(f"{n}/hello/bench", args.duration, 32), True),
                ("native 2 KiB JSON, TLS + HTTP/2 (h2load)", lambda: h2load(f"{at}/fixed", h2_requests), lambda: h2load(f"{nt}/fixed", h2_requests), False),
                ("proxied, TLS + HTTP/2 (h2load)", lambda: h2load(f"{at}/hello/bench", h2_requests // 10),
                 lambda: h2load(f"{nt}/hello/bench", h2_requests // 10), True),
                ("hot path: Apus native vs Python json.dumps behind nginx", lambda: wrk(f"{a}/orderbook/ACME?n=200", args.duration, 16),
                 lambda: wrk(f"{n}/py/orderbook/ACME?n=200", args.duration, 16), True),
                ("hot path: Apus native vs Python orjson behind nginx", lambda: wrk(f"{a}/orderbook/ACME?n=200", args.duration, 16),
                 lambda: wrk(f"{n}/py/orderbook-orjson/ACME?n=200", args.duration, 16), True),
            ]
            for name, run_apus, run_nginx, proxied in scenarios:
                run_apus(), run_nginx()  # warm-up
                apus_rounds, nginx_rounds = [], []
                for _ in range(args.rounds):
                    apus_rounds.append(measure(apus_pids, backend_pids, run_apus))
                    nginx_rounds.append(measure(nginx_pids, backend_pids, run_nginx))
                results.append({"scenario": name, "apus": median_of(apus_rounds), "nginx": median_of(nginx_rounds), "proxied": proxied})
                print(f"done: {name}", flush=True)

            idle = {"apus": rss_mib(apus_pids), "nginx": rss_mib(nginx_pids)}
            held = open_connections(stack.apus_port, 1000)
            loaded_apus = rss_mib(apus_pids)
            for s in held:
                s.close()
            held = open_connections(stack.nginx_port, 1000)
            loaded_nginx = rss_mib(nginx_pids)
            for s in held:
                s.close()
            start_ms = stack.measure_start(apus, 1 if args.smoke else 7)
        instructions = callgrind.measure(stack, apus, args.callgrind_requests, free_port)
    finally:
        stack.stop()
    if not args.only_callgrind:
        print_table(results, idle, {"apus": loaded_apus, "nginx": loaded_nginx}, start_ms, identical, args)
    print_instructions(instructions, args.callgrind_requests)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "idle_rss": idle if not args.only_callgrind else None,
                                               "start_ms": start_ms if not args.only_callgrind else None,
                                               "instructions_per_request": instructions}, indent=2))


def print_instructions(instructions, requests):
    print()
    print(f"Instructions per request under callgrind (user space, one process; {requests} keep-alive requests "
          f"over 4 connections, 10 streams each over HTTP/2, after a warm-up; the backend is not counted):")
    print()
    print("| scenario | Apus | nginx | ratio |")
    print("|---|---:|---:|---:|")
    for name, counts in instructions.items():
        if counts["nginx"] is None:
            print(f"| {name} | {counts['apus']:,.0f} | - | - |")
        else:
            print(f"| {name} | {counts['apus']:,.0f} | {counts['nginx']:,.0f} | {counts['apus'] / counts['nginx']:.2f} |")


def print_table(results, idle, loaded, start_ms, identical, args):
    print()
    print(f"Apus vs nginx {subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip().split('/')[-1]}, "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, servers on core 0, load on core 1, "
          f"{args.rounds} round(s) of {args.duration:g}s, medians")
    print()
    print("| scenario | server | req/s | p50 ms | p99 ms | server CPU µs/req | backend CPU µs/req | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        for server in ["apus", "nginx"]:
            r = result[server]
            backend = f"{r['backend_cpu_us']:.1f}" if result["proxied"] else "-"
            p99 = "-" if r["p99"] != r["p99"] else f"{r['p99']:.2f}"
            print(f"| {result['scenario']} | {server} | {r['rps']:.0f} | {r['p50']:.2f} | {p99} | {r['cpu_us']:.1f} | {backend} | {r['errors']:.0f} |")
    print()
    print("| ratio (Apus / nginx) | req/s | server CPU µs/req |")
    print("|---|---:|---:|")
    for result in results:
        a, n = result["apus"], result["nginx"]
        print(f"| {result['scenario']} | {a['rps'] / n['rps']:.2f} | {a['cpu_us'] / max(n['cpu_us'], 1e-9):.2f} |")
    print()
    print(f"Idle RSS: Apus {idle['apus']:.1f} MiB, nginx {idle['nginx']:.1f} MiB. "
          f"With 1,000 open keep-alive connections: Apus {loaded['apus']:.1f} MiB, nginx {loaded['nginx']:.1f} MiB.")
    ordered = sorted(start_ms)
    print(f"Apus start to first 200 (warm handler cache, {len(ordered)} start(s)): median {ordered[len(ordered) // 2]:.0f} ms, "
          f"{ordered[0]:.0f}–{ordered[-1]:.0f} ms. Bodies identical across servers: {identical}.")


if __name__ == "__main__":
    main()
