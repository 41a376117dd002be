"""The zero-setup loop: scaffold, dev-mode hot swap under load, reload, prebuilt handlers."""

import re
import shutil
import signal
import statistics
import subprocess
import threading
import time

import httpx
import pytest

from conftest import APUS, QUICKSTART, Gateway, child_env, free_port, wait_for, write_config


def run_apus(*args, cwd=None, env=None):
    return subprocess.run([str(APUS), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env or child_env())


VERSIONED = 'let handler = Handler.inline {{ _ in .text("version {n}\\n") }}\n'
COUNTER_ROUTE = '[[route]]\nmatch = "GET /counter"\nhandler = "counter"\n'


def test_new_handler_scaffolds_a_file_that_serves(workdir, handler_cache, processes, uvicorn_backend):
    config = write_config(workdir, handler_cache, free_port(), f"unix:{uvicorn_backend.socket_path}")
    made = run_apus("new", "handler", "widget", "--config", str(config), "--add-route")
    assert made.returncode == 0, made.stderr
    assert (workdir / "handlers" / "widget.swift").exists()
    assert 'handler = "widget"' in config.read_text() and 'match = "GET /widget/{id}"' in config.read_text()
    again = run_apus("new", "handler", "widget", "--config", str(config))
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = run_apus("new", "handler", "Bad-Name", "--config", str(config))
    assert bad.returncode != 0 and "not a valid handler name" in bad.stderr
    printed = run_apus("new", "handler", "other", "--config", str(config), "--route", "POST /other")
    assert 'match = "POST /other"' in printed.stdout and 'handler = "other"' not in config.read_text()
    port = int(re.search(r"127.0.0.1:(\d+)", config.read_text()).group(1))
    gateway = Gateway(config, port, workdir / "widget.log")
    processes.append(gateway)
    gateway.start()
    body = httpx.get(f"{gateway.url}/widget/42?verbose=1").json()
    assert body == {"handler": "widget", "id": "42", "length": 2, "method": "GET", "path": "/widget/42"}
    assert httpx.get(f"{gateway.url}/widget/x").status_code == 200


@pytest.fixture
def dev_gateway(workdir, handler_cache, processes, uvicorn_backend):
    (workdir / "handlers" / "counter.swift").write_text(VERSIONED.format(n=0))
    port = free_port()
    config = write_config(workdir, handler_cache, port, f"unix:{uvicorn_backend.socket_path}",
                          routes=COUNTER_ROUTE, access_log="off")
    gateway = Gateway(config, port, workdir / "dev.log", args=["--dev"])
    processes.append(gateway)
    gateway.start()
    assert httpx.get(f"{gateway.url}/counter").text == "version 0\n"
    return gateway


def test_dev_mode_swaps_20_edits_under_load_without_a_failed_request(dev_gateway, workdir):
    source = workdir / "handlers" / "counter.swift"
    stop = threading.Event()
    results = {"ok": 0, "bad": []}
    lock = threading.Lock()

    def load():
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"{dev_gateway.url}/counter")
                    good = response.status_code == 200 and re.fullmatch(r"version \d+\n", response.text)
                except httpx.HTTPError as error:
                    good, response = False, error
                with lock:
                    if good:
                        results["ok"] += 1
                    else:
                        results["bad"].append(repr(response))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    observed = []
    try:
        for n in range(1, 21):
            saved = time.monotonic()
            source.write_text(VERSIONED.format(n=n))
            wait_for(lambda: httpx.get(f"{dev_gateway.url}/counter").text == f"version {n}\n", 30, f"version {n}")
            observed.append(time.monotonic() - saved)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert results["bad"] == [], results["bad"][:5]
    assert results["ok"] > 200
    logged = [float(x) for x in re.findall(r"new code serving ([\d.]+)s after the change", dev_gateway.log())]
    assert len(logged) >= 20
    print(f"\nsave-to-serving over 20 edits (log): median {statistics.median(logged):.2f}s, max {max(logged):.2f}s; "
          f"seen by a client: median {statistics.median(observed):.2f}s; {results['ok']} requests, 0 failed")


def test_dev_mode_keeps_the_last_good_handler_when_a_save_does_not_compile(dev_gateway, workdir):
    source = workdir / "handlers" / "counter.swift"
    source.write_text('let handler = Handler.inline { _ in .text(undefinedName) }\n')
    wait_for(lambda: "reload failed" in dev_gateway.log(), 30, "compile failure reported")
    assert re.search(r"counter\.swift:1:\d+: error: .*undefinedName", dev_gateway.log())
    assert httpx.get(f"{dev_gateway.url}/counter").text == "version 0\n"
    source.write_text(VERSIONED.format(n=7))
    wait_for(lambda: httpx.get(f"{dev_gateway.url}/counter").text == "version 7\n", 30, "fixed version")


def test_dev_mode_reroutes_on_config_edits_and_keeps_the_old_config_when_broken(dev_gateway, workdir):
    config = dev_gateway.config_path
    text = config.read_text()
    config.write_text(text + '\n[[route]]\nmatch = "GET /counter-too/{x}"\nhandler = "counter"\n')
    wait_for(lambda: httpx.get(f"{dev_gateway.url}/counter-too/1").text == "version 0\n", 30, "new route")
    config.write_text(text + "\n[server\n")
    wait_for(lambda: "config not reloaded" in dev_gateway.log(), 30, "config error reported")
    assert "TOML syntax error" in dev_gateway.log()
    assert httpx.get(f"{dev_gateway.url}/counter-too/1").text == "version 0\n"


def test_dev_mode_restarts_the_supervised_backend_when_python_changes(workdir, handler_cache, processes):
    app = workdir / "app"
    shutil.copytree(QUICKSTART, app, ignore=shutil.ignore_patterns(".apus-cache", "__pycache__"))
    sock = str(workdir / "dev-backend.sock")
    port = free_port()
    config = write_config(workdir, handler_cache, port, f"unix:{sock}", routes="", backend_extra=(
        f'command = ["uvicorn", "app:app", "--uds", "{sock}"]\ndirectory = "{app}"'))
    gateway = Gateway(config, port, workdir / "devpy.log", args=["--dev"])
    processes.append(gateway)
    gateway.start()
    wait_for(lambda: httpx.get(f"{gateway.url}/hello/x").status_code == 200, 60, "backend up")
    assert httpx.get(f"{gateway.url}/added").status_code == 404
    source = (app / "app.py").read_text()
    source = source.replace('app = Starlette(routes=[', 'async def added(request):\n    return PlainTextResponse("added")\n\n\napp = Starlette(routes=[\n    Route("/added", added),')
    (app / "app.py").write_text(source)
    wait_for(lambda: httpx.get(f"{gateway.url}/added").text == "added", 30, "restarted backend with the new route")
    assert "restarting backend: source files changed" in gateway.log()


def test_apus_reload_swaps_handlers_and_refuses_a_broken_one(workdir, handler_cache, processes, uvicorn_backend):
    (workdir / "handlers" / "counter.swift").write_text(VERSIONED.format(n=1))
    port = free_port()
    config = write_config(workdir, handler_cache, port, f"unix:{uvicorn_backend.socket_path}", routes=COUNTER_ROUTE)
    gateway = Gateway(config, port, workdir / "reload.log")
    processes.append(gateway)
    gateway.start()
    assert httpx.get(f"{gateway.url}/counter").text == "version 1\n"
    (workdir / "handlers" / "counter.swift").write_text(VERSIONED.format(n=2))
    reloaded = run_apus("reload", "--config", str(config))
    assert reloaded.returncode == 0, reloaded.stderr
    assert "routes reloaded" in reloaded.stdout and "new builds: counter" in reloaded.stdout
    assert httpx.get(f"{gateway.url}/counter").text == "version 2\n"
    (workdir / "handlers" / "counter.swift").write_text("let handler = nope\n")
    refused = run_apus("reload", "--config", str(config))
    assert refused.returncode != 0 and "counter.swift:1:" in refused.stderr
    assert httpx.get(f"{gateway.url}/counter").text == "version 2\n"
    # SIGHUP reloads too, and a broken handler then leaves the running one in place.
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in gateway.log(), 30, "SIGHUP reload attempt")
    assert httpx.get(f"{gateway.url}/counter").text == "version 2\n"


def test_prebuilt_handlers_serve_without_a_toolchain(workdir, handler_cache, processes, uvicorn_backend, tmp_path):
    port = free_port()
    config = write_config(workdir, handler_cache, port, f"unix:{uvicorn_backend.socket_path}")
    built = run_apus("build", "--config", str(config), "--output", str(tmp_path / "stage"))
    assert built.returncode == 0, built.stderr
    # The runtime layout: the prebuilt folder moved elsewhere, no cache, no swiftc on PATH.
    runtime = tmp_path / "runtime" / "handlers"
    shutil.copytree(tmp_path / "stage", runtime)
    shutil.rmtree(tmp_path / "stage")
    text = config.read_text().replace(f'cache = "{handler_cache}"', f'cache = "{tmp_path}/empty-cache"\nswiftc = "/nonexistent/swiftc"')
    config.write_text(text)
    env = child_env() | {"PATH": "/usr/bin:/bin"}
    assert shutil.which("swiftc", path=env["PATH"]) is None
    gateway = Gateway(config, port, workdir / "prebuilt.log", env=env, args=["--prebuilt", str(runtime)])
    processes.append(gateway)
    gateway.start()
    assert httpx.get(f"{gateway.url}/orderbook/ACME?n=3").json()["count"] == 3
    assert httpx.get(f"{gateway.url}/later?ms=1").status_code == 201
    assert "compiling handler" not in gateway.log()
    missing = run_apus("check", "--config", str(config), "--prebuilt", str(tmp_path / "nothing-here"), env=env)
    assert missing.returncode != 0 and "apus build" in missing.stderr
