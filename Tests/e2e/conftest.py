"""Fixtures for the end-to-end tests: the real `apus` binary, a real uvicorn or
gunicorn over a real Unix socket, free ports and temporary folders. Every
process a test starts is stopped when the test ends."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
HANDLERS = Path(__file__).resolve().parent / "handlers"
VENV_BIN = Path(sys.executable).parent


def apus_binary() -> Path:
    explicit = os.environ.get("APUS_BIN")
    if explicit:
        return Path(explicit)
    bin_path = subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    binary = Path(bin_path) / "apus"
    if not binary.exists():
        subprocess.run(["swift", "build", "--product", "apus"], cwd=ROOT, check=True)
    return binary


APUS = apus_binary()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def count_until_closed(sock, timeout: float) -> int:
    """Reads until the peer closes (or resets) the connection; how many bytes came.
    A socket that stays open past `timeout` raises socket.timeout."""
    sock.settimeout(timeout)
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    return received


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def can_connect_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def can_connect_unix(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(0.5)
            sock.connect(path)
            return True
    except OSError:
        return False


def child_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["APUS_BIN"] = str(APUS)  # for the apus Python package in a backend
    return env


class Managed:
    """A child process with its output in a file; stopped at teardown."""

    def __init__(self, argv, cwd, log_path: Path, env=None):
        self.argv = argv
        self.cwd = cwd
        self.log_path = log_path
        self.env = env or child_env()
        self.proc = None

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # The whole session: a supervised backend goes too if apus could not stop it.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if getattr(self, "log_file", None):
            self.log_file.close()


class Backend(Managed):
    """uvicorn (the quickstart app) or gunicorn (a WSGI app) on a Unix socket."""

    def __init__(self, kind: str, socket_path: str, log_path: Path, env=None):
        self.socket_path = socket_path
        if kind == "uvicorn":
            argv = [str(VENV_BIN / "uvicorn"), "app:app", "--uds", socket_path, "--no-access-log",
                    "--ws", "websockets", "--ws-max-size", str(32 * 1024 * 1024)]
            cwd = QUICKSTART
        else:
            argv = [str(VENV_BIN / "gunicorn"), "--bind", f"unix:{socket_path}", "--workers", "2", "--access-logfile", "-",
                    "wsgi_app:app"]
            cwd = Path(__file__).resolve().parent
        super().__init__(argv, cwd, log_path, env)

    def start(self):
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        super().start()
        wait_for(lambda: can_connect_unix(self.socket_path), 30, f"backend socket {self.socket_path}\n{self.log()}")
        return self


class Gateway(Managed):
    def __init__(self, config_path: Path, port: int, log_path: Path, env=None, args=()):
        self.port = port
        self.config_path = config_path
        super().__init__([str(APUS), "serve", "--config", str(config_path), *args], config_path.parent, log_path, env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait=True):
        super().start()
        if wait:
            wait_for(lambda: can_connect_tcp(self.port) or self.proc.poll() is not None, 120, f"apus on {self.port}")
            assert self.proc.poll() is None, f"apus exited early:\n{self.log()}"
        return self


@pytest.fixture(scope="session")
def handler_cache(tmp_path_factory) -> Path:
    """One compile cache for the whole run, as a user's would be."""
    return tmp_path_factory.mktemp("apus-cache")


@pytest.fixture
def workdir(tmp_path) -> Path:
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    for source in list(HANDLERS.glob("*.swift")) + [QUICKSTART / "handlers" / "orderbook.swift"]:
        shutil.copy(source, handlers / source.name)
    return tmp_path


DEFAULT_ROUTES = """
[[route]]
match = "GET /orderbook/{symbol}"
handler = "orderbook"

[[route]]
match = "ANY /echo/{name}/{rest...}"
handler = "echo"

[[route]]
match = "POST /small/{name}"
handler = "echo"
max_body_size = "1KiB"

[[route]]
match = "GET /boom"
handler = "boom"

[[route]]
match = "GET /sleepy"
handler = "sleepy"

[[route]]
match = "GET /later"
handler = "later"

[[route]]
match = "GET /shaped"
handler = "shaped"
"""


def write_config(workdir: Path, cache: Path, port: int, backend: str, server_extra: str = "", backend_extra: str = "",
                 routes: str = DEFAULT_ROUTES, access_log: str = "plain") -> Path:
    config = workdir / "gateway.conf"
    config.write_text(textwrap.dedent(f"""\
        [server]
        listen = ["127.0.0.1:{port}"]
        access_log = "{access_log}"
        shutdown_timeout = 10
        {server_extra}

        [backend]
        address = "{backend}"
        {backend_extra}

        [handlers]
        sources = "handlers"
        cache = "{cache}"
        optimize = false
        """) + routes)
    return config


@pytest.fixture
def processes():
    started = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture
def uvicorn_backend(tmp_path, processes, handler_cache) -> Backend:
    # The app imports a Swift module (apus.load): it shares the test run's compile cache.
    env = child_env() | {"APUS_CACHE_DIR": str(handler_cache)}
    backend = Backend("uvicorn", str(tmp_path / "backend.sock"), tmp_path / "backend.log", env=env).start()
    processes.append(backend)
    return backend


@pytest.fixture
def gateway_factory(workdir, handler_cache, processes):
    """Starts apus with a generated config; extra config text can be given."""

    def start(backend_address: str, wait=True, env=None, args=(), **config_args) -> Gateway:
        port = free_port()
        config = write_config(workdir, handler_cache, port, backend_address, **config_args)
        gateway = Gateway(config, port, workdir / f"apus-{port}.log", env=env, args=args)
        processes.append(gateway)
        return gateway.start(wait=wait)

    return start


@pytest.fixture
def gateway(gateway_factory, uvicorn_backend) -> Gateway:
    return gateway_factory(f"unix:{uvicorn_backend.socket_path}")
