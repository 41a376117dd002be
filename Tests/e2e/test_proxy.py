"""Proxying to real uvicorn and gunicorn over a Unix socket."""

import hashlib
import os
import re
import socket
import subprocess
import threading
import time

import httpx
import pytest

from conftest import Backend, count_until_closed, wait_for


def pattern_block(index: int, size: int) -> bytes:
    seed = hashlib.sha256(str(index).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_proxied_get_and_post(gateway):
    assert httpx.get(f"{gateway.url}/").text == "Hello from Python behind Apus\n"
    assert httpx.get(f"{gateway.url}/hello/world").json() == {"hello": "world", "from": "python"}
    assert httpx.get(f"{gateway.url}/__missing__").status_code == 404
    posted = httpx.post(f"{gateway.url}/upload", content=b"abc")
    assert posted.json() == {"bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


def test_forwarding_headers_and_request_id(gateway):
    seen = httpx.get(f"{gateway.url}/headers", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"}).json()
    headers = seen["headers"]
    # The client is not a trusted proxy: its X-Forwarded-* are replaced, not kept.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers["x-request-id"]
    kept = httpx.get(f"{gateway.url}/headers", headers={"X-Request-ID": "abc-123"})
    assert kept.json()["headers"]["x-request-id"] == "abc-123"
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = httpx.get(f"{gateway.url}/headers", headers={"X-Request-ID": "bad id with spaces"})
    assert replaced.headers["x-request-id"] != "bad id with spaces"
    assert replaced.json()["headers"]["x-request-id"] == replaced.headers["x-request-id"]


def test_trusted_proxy_keeps_and_appends_forwarded_for(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra='trusted_proxies = ["127.0.0.0/8"]')
    headers = httpx.get(f"{gateway.url}/headers",
                        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}).json()["headers"]
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"


def test_hop_by_hop_headers_are_removed(gateway):
    raw = (f"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
           f"Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: 2\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while b"}" not in data.split(b"\r\n\r\n", 1)[-1]:
            data += sock.recv(65536)
    body = data.split(b"\r\n\r\n", 1)[1]
    import json
    headers = json.loads(body)["headers"]
    assert "x-secret" not in headers and "keep-alive" not in headers and "te" not in headers
    assert headers["x-kept"] == "2"



def test_absolute_form_targets_reach_the_backend_in_origin_form(gateway):
    """RFC 9112 3.2.2: the target's authority replaces Host, and the backend gets the path
    (uvicorn answered an absolute-form target with 404). Native routes and their handlers
    see the same: the path, and the authority as Host."""
    import json
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET HTTP://api.example:8080/headers?a=1 HTTP/1.1\r\nHost: client.example\r\n\r\n"
                     b"GET http://api.example/orderbook/ACME?n=1 HTTP/1.1\r\nHost: client.example\r\n\r\n"
                     b"GET http://native.example/echo/a/b?q=1 HTTP/1.1\r\nHost: client.example\r\n\r\n")
        data = b""
        answers = []
        while len(answers) < 3:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answer(s): {answers!r} {data!r}"
            data += chunk
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
                if len(rest) < length:
                    break
                answers.append((head.split(b" ")[1], rest[:length]))
                data = rest[length:]
    (status, body), (native_status, native_body), (echo_status, echo_body) = answers
    seen = json.loads(body)
    assert status == b"200" and seen["path"] == "/headers" and seen["query"] == "a=1"
    assert seen["headers"]["host"] == "api.example:8080"
    assert seen["headers"]["x-forwarded-host"] == "api.example:8080"
    assert native_status == b"200" and json.loads(native_body)["symbol"] == "ACME"
    # A native handler sees the origin-form path and the target's authority as Host.
    echoed = json.loads(echo_body)
    assert echo_status == b"200" and echoed["path"] == "/echo/a/b" and echoed["q"] == "1"
    assert echoed["host"] == "native.example"


def test_http10_request_without_host_reaches_the_backend(gateway):
    """Load balancer health checks send `GET /health HTTP/1.0` with no Host; the backend
    gets HTTP/1.1, which requires one (uvicorn answered 400), so the gateway's address stands in."""
    import json
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /headers HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 "), head
    seen = json.loads(body)["headers"]
    assert seen["host"] == f"127.0.0.1:{gateway.port}"
    assert "x-forwarded-host" not in seen

def test_pipelined_requests_are_answered_in_order(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /hello/one HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /orderbook/ACME?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /hello/three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    one, two, three = data.index(b'"one"'), data.index(b'"ACME"'), data.index(b'"three"')
    assert one < two < three
    assert data.count(b"HTTP/1.1 200 OK") == 3


def test_malformed_request_gets_400_and_the_connection_closes(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{gateway.url}/").status_code == 200


def test_streamed_upload_of_256_mib_with_checksum_and_bounded_memory(gateway):
    size = 256 * 1024 * 1024
    digest = hashlib.sha256()
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(gateway.proc.pid))
            time.sleep(0.05)

    def body():
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            digest.update(block)
            yield block

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = httpx.post(f"{gateway.url}/upload", content=body(), timeout=120)
    finally:
        done.set()
        watcher.join()
    assert response.status_code == 200
    assert response.json() == {"bytes": size, "sha256": digest.hexdigest()}
    assert peak[0] < 96 * 1024, f"gateway RSS peaked at {peak[0]} KiB during a 256 MiB upload"


def test_streamed_download_of_256_mib_with_checksum_and_bounded_memory(gateway):
    size = 256 * 1024 * 1024
    expected = hashlib.sha256()
    index = 0
    remaining = size
    while remaining:
        part = pattern_block(index, min(65536, remaining))
        expected.update(part)
        remaining -= len(part)
        index += 1
    received = hashlib.sha256()
    total = 0
    peak = 0
    with httpx.stream("GET", f"{gateway.url}/download?size={size}", timeout=120) as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        for chunk in response.iter_raw():
            received.update(chunk)
            total += len(chunk)
            if total % (16 * 1024 * 1024) < len(chunk):
                peak = max(peak, rss_kib(gateway.proc.pid))
    assert total == size
    assert received.hexdigest() == expected.hexdigest()
    assert peak < 96 * 1024, f"gateway RSS peaked at {peak} KiB during a 256 MiB download"


def test_slow_reader_gets_backpressure_not_buffering(gateway):
    # Read 64 MiB slowly at first: the gateway must not buffer the backend's output in memory.
    size = 64 * 1024 * 1024
    with httpx.stream("GET", f"{gateway.url}/download?size={size}", timeout=60) as response:
        chunks = response.iter_raw()
        next(chunks)
        time.sleep(2)  # the backend keeps producing; the gateway must stop reading it
        assert rss_kib(gateway.proc.pid) < 64 * 1024
        total = sum(len(chunk) for chunk in chunks)
    assert total > 0


def test_server_sent_events_arrive_one_by_one(gateway):
    arrivals = []
    with httpx.stream("GET", f"{gateway.url}/sse?n=4&interval=0.4", timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert all(gap > 0.25 for gap in gaps), f"events were buffered: gaps {gaps}"


def test_backend_down_gives_502_and_recovers_when_it_returns(gateway, uvicorn_backend):
    assert httpx.get(f"{gateway.url}/").status_code == 200
    uvicorn_backend.stop()
    down = httpx.get(f"{gateway.url}/")
    assert down.status_code == 502
    assert down.json()["error"].startswith("backend")
    assert httpx.get(f"{gateway.url}/orderbook/ACME").status_code == 200
    uvicorn_backend.start()
    assert httpx.get(f"{gateway.url}/").status_code == 200
    assert "backend exchange failed" in gateway.log()


def test_backend_timeout_gives_504(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", backend_extra="response_timeout = 0.5")
    response = httpx.get(f"{gateway.url}/slow?seconds=3", timeout=10)
    assert response.status_code == 504
    assert "did not answer in time" in response.json()["error"]
    assert httpx.get(f"{gateway.url}/slow?seconds=0.1").status_code == 200


def test_keepalive_reuses_backend_connections(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", args=["--log-level", "debug"])
    with httpx.Client() as client:
        for _ in range(200):
            assert client.get(f"{gateway.url}/hello/x").status_code == 200
    opened = gateway.log().count("backend connection opened")
    # Sequential requests on one client connection need one backend connection; a churning pool opens ~200.
    assert 1 <= opened <= 2, f"{opened} backend connections for 200 sequential requests"


@pytest.fixture
def gunicorn_backend(tmp_path, processes) -> Backend:
    backend = Backend("gunicorn", str(tmp_path / "wsgi.sock"), tmp_path / "gunicorn.log").start()
    processes.append(backend)
    return backend


def test_gunicorn_wsgi_backend(gateway_factory, gunicorn_backend):
    gateway = gateway_factory(f"unix:{gunicorn_backend.socket_path}")
    assert httpx.get(f"{gateway.url}/").text == "hello from gunicorn\n"
    payload = os.urandom(8 * 1024 * 1024)
    response = httpx.post(f"{gateway.url}/upload", content=payload, timeout=60)
    assert response.json() == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "server": "gunicorn"}
    chunked = httpx.post(f"{gateway.url}/upload", content=iter([payload[:1000], payload[1000:5000]]), timeout=60)
    assert chunked.json()["bytes"] == 5000
    headers = httpx.get(f"{gateway.url}/headers").json()["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert httpx.get(f"{gateway.url}/orderbook/ACME").status_code == 200


def exchange_raw(gateway, request: bytes) -> bytes:
    """Sends raw request bytes on a new connection and reads until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.fixture
def raw_backend_gateway(tmp_path, gateway_factory, processes):
    """A gateway in front of raw_response_backend.py, which answers each path with fixed bytes."""
    import sys
    from pathlib import Path
    from conftest import Managed, can_connect_unix, wait_for
    socket_path = str(tmp_path / "raw.sock")
    backend = Managed([sys.executable, str(Path(__file__).with_name("raw_response_backend.py")), socket_path],
                      tmp_path, tmp_path / "raw-backend.log").start()
    processes.append(backend)
    wait_for(lambda: can_connect_unix(socket_path), 10, "raw backend")
    # One event loop, so one backend pool: the stale-connection test needs its connections in the same pool.
    return gateway_factory(f"unix:{socket_path}", server_extra="workers = 1")


def test_backend_responses_framed_by_close_by_chunks_with_trailers_or_by_bare_lf_arrive_whole(raw_backend_gateway):
    gateway = raw_backend_gateway
    response = httpx.get(f"{gateway.url}/until-close")
    assert response.status_code == 200 and response.text == "body framed by the end of the connection"
    response = httpx.get(f"{gateway.url}/bare-lf")
    assert response.status_code == 200 and response.text == "bare lf" and response.headers["x-shape"] == "bare-lf"
    response = httpx.get(f"{gateway.url}/interim")
    assert response.status_code == 200 and response.text == "final"
    # An unknown status code keeps the backend's reason phrase.
    data = exchange_raw(gateway, b"GET /custom-reason HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 299 Mostly Fine\r\n") and data.endswith(b"\r\n\r\nok"), data
    # Chunked with an extension and a trailer: the body and the trailer reach the client.
    data = exchange_raw(gateway, b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), data
    assert b"chunk1" in body and b"chunk2" in body and body.endswith(b"0\r\nX-Checksum: abc123\r\n\r\n"), data


def test_header_bytes_over_0x7f_pass_unchanged_both_ways(raw_backend_gateway):
    """RFC 9110 allows obs-text (bytes 0x80-0xFF) in field values; as nginx does, the
    gateway passes them byte for byte to the backend and back (it used to turn
    what is not UTF-8 into U+FFFD)."""
    gateway = raw_backend_gateway
    data = exchange_raw(gateway, b"GET /echo-head HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nX-Latin: caf\xe9\r\n" in head, data
    # What the backend received: the byte, and the gateway's forwarding fields.
    assert b"\r\nX-Latin: caf\xe9\r\n" in body and b"\r\nx-forwarded-for: 127.0.0.1\r\n" in body, body


def test_fields_a_backend_response_names_in_connection_stop_at_the_gateway_over_http1_and_http2(raw_backend_gateway):
    gateway = raw_backend_gateway
    response = httpx.get(f"{gateway.url}/hop-named")
    assert response.text == "ok" and response.headers["x-kept"] == "yes"
    assert "x-hop" not in response.headers and "keep-alive" not in response.headers, response.headers
    out = subprocess.run(["curl", "-s", "-D-", "--http2-prior-knowledge", f"{gateway.url}/hop-named"],
                         capture_output=True, text=True, timeout=30).stdout
    head, _, body = out.partition("\n\n")  # text mode reads CRLF as LF
    assert head.startswith("HTTP/2 200") and body == "ok", out
    names = [line.split(":", 1)[0] for line in head.splitlines()[1:]]
    assert "x-kept" in names and not {"x-hop", "keep-alive", "connection"} & set(names), out


def test_a_malformed_backend_response_gets_502_with_the_reason_and_the_gateway_keeps_serving(raw_backend_gateway):
    gateway = raw_backend_gateway
    reasons = {
        "/obs-fold": "folded over lines",
        "/cl-and-te": "both Content-Length and Transfer-Encoding",
        "/two-lengths": "more than one Content-Length",
        "/gzip-coded": "transfer coding other than chunked",
        "/not-http": "status line",
    }
    for path, reason in reasons.items():
        response = httpx.get(f"{gateway.url}{path}")
        assert response.status_code == 502, (path, response.text)
        assert "backend sent an invalid response" in response.json()["error"] and reason in response.json()["error"]
        assert reason in gateway.log()
    # A chunk that breaks after the head went out: the client's connection is closed, not left hanging.
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{gateway.url}/bad-chunk")
    assert httpx.get(f"{gateway.url}/until-close").status_code == 200


def test_a_request_on_a_pooled_connection_the_backend_closed_is_retried_on_a_new_one(raw_backend_gateway):
    from concurrent.futures import ThreadPoolExecutor
    gateway = raw_backend_gateway
    # Two requests at once leave two pooled connections, each of which the backend closes instead of answering again.
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda _: httpx.get(f"{gateway.url}/keepalive-once").status_code, range(2)))
    assert statuses == [200, 200]
    # The retry must not take the other stale connection.
    response = httpx.get(f"{gateway.url}/keepalive-once")
    assert response.status_code == 200 and response.text == "ok"


def test_a_client_that_stops_reading_a_streamed_response_is_named_in_the_log(gateway_factory, uvicorn_backend):
    """The backend is paused while the client does not take the response; after
    backend.idle_timeout the exchange ends and the connection closes. The log said
    "backend stream stalled" (a warning, and a backend idle timeout in the metrics),
    blaming a backend that was only waiting; it names the client now."""
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", backend_extra="idle_timeout = 1")
    size = 200_000_000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(f"GET /download?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(3)  # takes nothing for longer than idle_timeout
        received = count_until_closed(sock, 5)
    assert received < size
    wait_for(lambda: "client stopped reading the response" in gateway.log(), 5, "the log line")
    assert "backend stream stalled" not in gateway.log()
    assert httpx.get(f"{gateway.url}/hello/after").status_code == 200
