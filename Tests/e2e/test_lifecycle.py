"""Config errors, compile errors, supervision, graceful shutdown, logs, environment overrides."""

import json
import re
import shutil
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import APUS, DEFAULT_ROUTES, QUICKSTART, Gateway, can_connect_tcp, free_port, child_env, wait_for, write_config


def run_apus(*args, cwd=None):
    return subprocess.run([str(APUS), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=child_env())


def test_check_accepts_the_quickstart_and_lists_routes():
    result = run_apus("check", "--config", str(QUICKSTART / "gateway.conf"))
    assert result.returncode == 0, result.stderr
    assert "GET /orderbook/{symbol}" in result.stdout and "orderbook" in result.stdout


@pytest.mark.parametrize("extra, line_text, key, words", [
    ('[server]\nlisten = 12\n', "listen = 12", "server.listen", "must be an array of strings"),
    ('[server]\nnonsense_key = "x"\n', "nonsense_key", "server.nonsense_key", "unknown key"),
    ('[backend]\naddress = "nowhere"\n', "address =", "backend.address", "neither unix:/path nor host:port"),
    ('[server]\nlisten = ["127.0.0.1:99999"]\n', 'listen = ["127.0.0.1:99999"]', "server.listen", "not host:port"),
    ('[[route]]\nmatch = "GET /x/{a"\nhandler = "orderbook"\n', 'match = "GET /x/{a"', "route[1].match", "bad route pattern"),
    ('[[route]]\nmatch = "GET /y"\nhandler = "missing"\n', 'handler = "missing"', "route[1].handler", "no handler named"),
    ('[[route]]\nmatch = "GET /orderbook/{other}"\nhandler = "orderbook"\n', 'match = "GET /orderbook/{other}"', "route[1].match", "conflicts"),
    ('[server\nlisten = 1\n', "[server", "", "TOML syntax error"),
])
def test_bad_config_is_refused_with_file_line_and_key(tmp_path, extra, line_text, key, words):
    base = (QUICKSTART / "gateway.conf").read_text().replace('sources = "handlers"', f'sources = "{QUICKSTART}/handlers"')
    base = base.replace("[server]\nlisten", "[serverx]\nlisten") if extra.startswith("[server") else base
    base = base.replace("[serverx]\n", "").replace('listen = ["127.0.0.1:8080"]\naccess_log = "plain"\n', "") if extra.startswith("[server") else base
    if extra.startswith("[backend]"):
        base = base.replace('[backend]\naddress = "unix:/tmp/apus-quickstart.sock"\n', "[backend]\n")
        extra = extra.replace("[backend]\n", "")
        base = base.replace("[backend]\n", "[backend]\n" + extra)
        extra = ""
    config = tmp_path / "bad.conf"
    config.write_text(base + "\n" + extra)
    lines = config.read_text().splitlines()
    expected_line = next(i + 1 for i, line in enumerate(lines) if line_text in line)
    result = run_apus("check", "--config", str(config))
    assert result.returncode != 0
    assert f"{config}:{expected_line}:" in result.stderr, result.stderr
    assert key in result.stderr and words in result.stderr, result.stderr
    serve = run_apus("serve", "--config", str(config))
    assert serve.returncode != 0 and f"{config}:{expected_line}:" in serve.stderr


def test_missing_config_file_and_sources_are_clear(tmp_path):
    result = run_apus("check", "--config", str(tmp_path / "nope.conf"))
    assert result.returncode != 0 and "cannot read config file" in result.stderr
    config = tmp_path / "g.conf"
    config.write_text('[handlers]\nsources = "not-there"\n')
    result = run_apus("check", "--config", str(config))
    assert result.returncode != 0 and f"{config}:2: handlers.sources" in result.stderr and "does not exist" in result.stderr


def test_handler_that_does_not_compile_stops_start_with_the_compiler_message(workdir, handler_cache):
    (workdir / "handlers" / "broken.swift").write_text('let handler = Handler.inline { request in\n    return undefinedThing\n}\n')
    port = free_port()
    config = write_config(workdir, handler_cache, port, "unix:/tmp/none.sock",
                          routes='[[route]]\nmatch = "GET /b"\nhandler = "broken"\n')
    result = run_apus("serve", "--config", str(config))
    assert result.returncode != 0
    assert 'handler "broken"' in result.stderr and "failed to compile" in result.stderr
    assert "broken.swift:2:" in result.stderr and "undefinedThing" in result.stderr
    assert not can_connect_tcp(port)


def test_warm_cache_is_not_recompiled(workdir, handler_cache):
    config = write_config(workdir, handler_cache, free_port(), "unix:/tmp/none.sock")
    first = run_apus("check", "--config", str(config))
    assert first.returncode == 0, first.stderr
    second = run_apus("check", "--config", str(config))
    routes = DEFAULT_ROUTES.count("[[route]]")
    assert second.stdout.count("cached") == routes, second.stdout
    (workdir / "handlers" / "echo.swift").write_text((workdir / "handlers" / "echo.swift").read_text() + "\n// edited\n")
    third = run_apus("check", "--config", str(config))
    assert "echo [inline, compiled in" in third.stdout and third.stdout.count("cached") == routes - 2  # echo serves two routes


def test_environment_overrides_listen_and_backend(gateway_factory, uvicorn_backend, tmp_path):
    port = free_port()
    env = child_env() | {"APUS_LISTEN": f"127.0.0.1:{port}", "APUS_BACKEND_ADDRESS": f"unix:{uvicorn_backend.socket_path}"}
    gateway = gateway_factory("unix:/tmp/not-this-one.sock", wait=False, env=env)
    wait_for(lambda: can_connect_tcp(port), 60, "apus on the overridden port")
    assert httpx.get(f"http://127.0.0.1:{port}/hello/env").json()["hello"] == "env"


def test_sigterm_drains_the_request_in_flight_and_exits_0(gateway):
    result = {}

    def slow():
        result["response"] = httpx.get(f"{gateway.url}/slow?seconds=1.5", timeout=10)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    gateway.signal(signal.SIGTERM)
    wait_for(lambda: not can_connect_tcp(gateway.port), 5, "listener to close")
    thread.join()
    assert result["response"].status_code == 200 and result["response"].json() == {"slept": True}
    assert gateway.wait(timeout=15) == 0
    assert "all connections drained" in gateway.log()


def test_sigterm_closes_idle_keepalive_connections(gateway):
    with httpx.Client() as client:
        assert client.get(f"{gateway.url}/hello/a").status_code == 200
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(timeout=10) == 0


def test_supervised_backend_is_started_restarted_and_stopped(workdir, handler_cache, processes):
    sock = str(workdir / "sup.sock")
    port = free_port()
    config = write_config(workdir, handler_cache, port, f"unix:{sock}", backend_extra=(
        f'command = ["uvicorn", "app:app", "--uds", "{sock}", "--no-access-log"]\n'
        f'directory = "{QUICKSTART}"\nstop_timeout = 5'))
    gateway = Gateway(config, port, workdir / "sup.log")
    processes.append(gateway)
    gateway.start()
    wait_for(lambda: httpx.get(f"{gateway.url}/hello/a").status_code == 200, 60, "supervised backend")
    assert "[backend] INFO:" in gateway.log()
    if shutil.which("ss"):
        # The backend must not inherit the gateway's listening socket (it would keep the port after apus exits).
        listeners = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        line = next(l for l in listeners.splitlines() if f":{port} " in l)
        assert "uvicorn" not in line and "python" not in line, line
    pid = int(subprocess.run(["pgrep", "-f", f"uds {sock}"], capture_output=True, text=True).stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "restarting" in gateway.log(), 10, "restart message")
    assert httpx.get(f"{gateway.url}/orderbook/ACME").status_code == 200  # native routes never stopped
    wait_for(lambda: httpx.get(f"{gateway.url}/hello/b").status_code == 200, 30, "backend back")
    new_pid = int(subprocess.run(["pgrep", "-f", f"uds {sock}"], capture_output=True, text=True).stdout.split()[0])
    assert new_pid != pid
    gateway.signal(signal.SIGTERM)
    assert gateway.wait(timeout=20) == 0
    assert subprocess.run(["pgrep", "-f", f"uds {sock}"], capture_output=True).returncode == 1, "backend left running"


def test_json_access_log_has_one_line_per_request(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", access_log="json")
    httpx.get(f"{gateway.url}/hello/log", headers={"X-Request-ID": "log-test-1"})
    httpx.get(f"{gateway.url}/orderbook/ACME", headers={"X-Request-ID": "log-test-2"})
    wait_for(lambda: "log-test-2" in gateway.log(), 5, "access log line")
    entries = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    proxied = next(e for e in entries if e["request_id"] == "log-test-1")
    native = next(e for e in entries if e["request_id"] == "log-test-2")
    assert proxied["kind"] == "proxy" and proxied["status"] == 200 and proxied["path"] == "/hello/log"
    assert "upstream_ms" in proxied and proxied["duration_ms"] >= proxied["upstream_ms"]
    assert native["kind"] == "native" and native["bytes_out"] > 1000 and "upstream_ms" not in native


def test_access_log_off(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", access_log="off")
    httpx.get(f"{gateway.url}/hello/quiet", headers={"X-Request-ID": "quiet-1"})
    time.sleep(0.3)
    assert "quiet-1" not in gateway.log()


def test_idle_gateway_returns_freed_memory_once_per_quiet_spell(gateway_factory, uvicorn_backend):
    """glibc keeps what the data path freed; once no request has finished for two seconds,
    the gateway hands it back: once per quiet spell, and again after new traffic."""
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", args=["--log-level", "debug"])
    returned = "idle: returned freed memory to the system"

    def load():
        def client(_):
            with httpx.Client(base_url=gateway.url, timeout=30) as http:
                for _ in range(5):
                    assert http.get("/download?size=1048576").status_code == 200
                    assert http.get("/orderbook/ACME?n=200").status_code == 200

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(16)))

    # Start-up's allocations settle first: one return once the gateway is quiet.
    wait_for(lambda: gateway.log().count(returned) == 1, 15, f"a return after start:\n{gateway.log()}")
    load()
    wait_for(lambda: gateway.log().count(returned) == 2, 15, f"a return after the load:\n{gateway.log()}")
    line = [entry for entry in gateway.log().splitlines() if returned in entry][-1]
    before = int(re.search(r"memory.rss_before_kib=(\d+)", line).group(1))
    after = int(re.search(r"memory.rss_after_kib=(\d+)", line).group(1))
    assert 0 < after <= before, line
    time.sleep(4.5)  # two more quiet checks: nothing new was freed, so nothing is returned
    assert gateway.log().count(returned) == 2, gateway.log()
    assert httpx.get(f"{gateway.url}/hello/again").status_code == 200
    wait_for(lambda: gateway.log().count(returned) == 3, 15, f"a return after new traffic:\n{gateway.log()}")
