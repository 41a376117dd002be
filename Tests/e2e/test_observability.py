"""The admin listener: Prometheus metrics, health, readiness, the route table; trace context."""

import json
import re
import socket
import time
import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import DEFAULT_ROUTES, free_port, wait_for


def start_with_admin(gateway_factory, backend_address, **config):
    admin = free_port()
    routes = DEFAULT_ROUTES + f'\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
    gateway = gateway_factory(backend_address, routes=routes, **config)
    gateway.admin = f"http://127.0.0.1:{admin}"
    wait_for(lambda: httpx.get(f"{gateway.admin}/healthz").status_code == 200, 10, "admin listener")
    return gateway


def scrape(gateway):
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway.admin}/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_histograms_move_by_exactly_the_requests_sent(gateway_factory, uvicorn_backend):
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}")
    httpx.get(f"{gateway.url}/hello/warm")  # first proxied request opens the pool
    before = scrape(gateway)
    native_bytes = 0
    with httpx.Client() as client:
        for _ in range(7):
            response = client.get(f"{gateway.url}/orderbook/ACME?n=5")
            assert response.status_code == 200
            native_bytes += len(response.content)
        response = client.get(f"{gateway.url}/orderbook/lower")
        assert response.status_code == 422
        native_bytes += len(response.content)
        for _ in range(5):
            assert client.get(f"{gateway.url}/hello/x").status_code == 200
        for _ in range(2):
            assert client.get(f"{gateway.url}/missing").status_code == 404
        assert client.post(f"{gateway.url}/upload", content=b"z" * 1000).status_code == 200
        response = client.get(f"{gateway.url}/boom")
        assert response.status_code == 500
        native_bytes += len(response.content)
    after = scrape(gateway)
    book = "GET /orderbook/{symbol}"

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("apus_requests_total", route=book, method="GET", status="2xx", kind="native") == 7
    assert delta("apus_requests_total", route=book, method="GET", status="4xx", kind="native") == 1
    assert delta("apus_requests_total", route="(backend)", method="GET", status="2xx", kind="proxy") == 5
    assert delta("apus_requests_total", route="(backend)", method="GET", status="4xx", kind="proxy") == 2
    assert delta("apus_requests_total", route="(backend)", method="POST", status="2xx", kind="proxy") == 1
    assert delta("apus_requests_total", route="GET /boom", method="GET", status="5xx", kind="native") == 1
    assert delta("apus_request_duration_seconds_count", route=book, kind="native") == 8
    assert delta("apus_request_duration_seconds_count", route="(backend)", kind="proxy") == 8
    assert delta("apus_upstream_duration_seconds_count", route="(backend)") == 8
    assert delta("apus_received_bytes_total", kind="proxy") == 1000
    assert delta("apus_sent_bytes_total", kind="native") == native_bytes
    assert delta("apus_handler_errors_total", handler="boom") == 1
    assert value(after, "apus_inflight_requests") == 0  # the admin listener's own requests are not counted
    assert value(after, "apus_handler_loads_total", handler="orderbook") == 1
    assert value(after, "apus_upstream_connections") >= 1


def test_open_connections_gauge_counts_client_connections_while_they_are_open(gateway_factory, uvicorn_backend):
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}")

    def open_http1():
        return value(scrape(gateway), "apus_open_connections", protocol="http1")

    baseline = open_http1()
    clients = [socket.create_connection(("127.0.0.1", gateway.port), timeout=5) for _ in range(3)]
    try:
        for index, client in enumerate(clients):
            # A native answer and a proxied one: the connection is counted whichever path serves it.
            path = "/orderbook/ACME?n=1" if index % 2 == 0 else "/hello/gauge"
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: apus\r\n\r\n".encode())
            assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert open_http1() == baseline + 3
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: open_http1() == baseline, 5, "the gauge to drop back once the clients closed")


def test_readyz_follows_the_backend_and_healthz_stays_up(gateway_factory, uvicorn_backend):
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}")
    ready = httpx.get(f"{gateway.admin}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    uvicorn_backend.stop()
    down = httpx.get(f"{gateway.admin}/readyz")
    assert down.status_code == 503 and "backend does not accept connections" in down.json()["reason"]
    assert httpx.get(f"{gateway.admin}/healthz").status_code == 200
    uvicorn_backend.start()
    assert httpx.get(f"{gateway.admin}/readyz").status_code == 200


def test_admin_answers_wrong_methods_with_405_and_closes_after_a_malformed_request(gateway_factory, uvicorn_backend):
    """A malformed request got NIO's 400 with `Connection: close`, but the connection
    stayed open; a POST to an endpoint got 404."""
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}")
    posted = httpx.post(f"{gateway.admin}/healthz", content=b"x")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert httpx.head(f"{gateway.admin}/routes").status_code == 200
    port = int(gateway.admin.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"get /metrics HTTP/1.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # a socket timeout fails the test
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{gateway.admin}/healthz").status_code == 200


def test_admin_endpoints_are_not_on_the_public_listener(gateway_factory, uvicorn_backend):
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}")
    for path in ["/metrics", "/healthz", "/readyz", "/routes"]:
        public = httpx.get(f"{gateway.url}{path}")
        assert public.status_code == 404 and public.headers["server"] == "uvicorn", path
    routes = httpx.get(f"{gateway.admin}/routes").json()["routes"]
    book = next(r for r in routes if r["handler"] == "orderbook")
    assert book["match"] == "GET /orderbook/{symbol}" and book["kind"] == "inline"
    assert book["source"].endswith("handlers/orderbook.swift") and re.fullmatch(r"[0-9a-f]{24}", book["build_hash"])
    assert next(r for r in routes if r["handler"] == "sleepy")["kind"] == "blocking"


def test_trace_context_is_passed_through_or_started(gateway_factory, uvicorn_backend):
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}", access_log="json")
    given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen = httpx.get(f"{gateway.url}/headers", headers={"traceparent": given, "tracestate": "vendor=1"}).json()["headers"]
    assert seen["traceparent"] == given and seen["tracestate"] == "vendor=1"
    started = httpx.get(f"{gateway.url}/headers", headers={"X-Request-ID": "trace-check"}).json()["headers"]["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", started)
    wait_for(lambda: "trace-check" in gateway.log(), 5, "access line")
    line = next(json.loads(l) for l in gateway.log().splitlines() if '"trace-check"' in l)
    assert line["trace_id"] == started[3:35]
    bad = httpx.get(f"{gateway.url}/headers", headers={"traceparent": "garbage"}).json()["headers"]["traceparent"]
    assert bad != "garbage" and bad.startswith("00-")


def test_trace_start_can_be_turned_off(gateway_factory, uvicorn_backend):
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}", server_extra="start_traces = false")
    assert "traceparent" not in httpx.get(f"{gateway.url}/headers").json()["headers"]


def exchange_until_closed(gateway, request: bytes) -> tuple[int, dict, bytes]:
    """Sends raw bytes, reads until the gateway closes: status, headers, body."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        time.sleep(0.3)  # the gateway reads all of it before it answers and closes (no reset from unread bytes)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def test_malformed_requests_get_the_gateways_json_error_an_access_line_and_a_count(gateway_factory, uvicorn_backend):
    """What NIO's decoder refuses is answered like every other refusal: the JSON error
    with a request id, a line in the access log and a count in the metrics; then the
    connection closes. A head nothing of which was understood counts as kind
    `gateway`, route `(none)`; a routed request whose chunked body goes bad keeps its kind."""
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}", access_log="json")
    before = scrape(gateway)
    refused = [
        (b"get /hello/x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request: invalid method"),
        (b"GET /hello/x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400, "malformed request: invalid Content-Length"),
        (b"GET /hello/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (66 * 1024) + b"\r\n\r\n", 431,
         "request head is larger than the limit (max_header_size)"),
    ]
    bad_chunk = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    ids = []
    for request, status, error in [*refused, (bad_chunk, 400, "malformed request: invalid chunk size in the chunked body")]:
        got, headers, body = exchange_until_closed(gateway, request)
        assert got == status, (request[:40], got, body)
        assert json.loads(body) == {"error": error, "request_id": headers["x-request-id"]}
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
        ids.append(headers["x-request-id"])
    assert httpx.get(f"{gateway.url}/hello/still-up").status_code == 200

    wait_for(lambda: all(i in gateway.log() for i in ids), 5, "access lines")
    lines = {line["request_id"]: line for line in map(json.loads, (l for l in gateway.log().splitlines() if l.startswith("{")))
             if line.get("request_id") in ids}
    for (_, status, _), request_id in zip(refused, ids):
        assert lines[request_id]["status"] == status and lines[request_id]["kind"] == "gateway", lines[request_id]
    assert lines[ids[-1]]["status"] == 400 and lines[ids[-1]]["kind"] == "proxy"
    assert lines[ids[-1]]["method"] == "POST" and lines[ids[-1]]["path"] == "/upload"

    after = scrape(gateway)
    assert value(after, "apus_requests_total", route="(none)", method="OTHER", status="4xx", kind="gateway") \
        - value(before, "apus_requests_total", route="(none)", method="OTHER", status="4xx", kind="gateway") == 3
    assert value(after, "apus_requests_total", route="(backend)", method="POST", status="4xx", kind="proxy") \
        - value(before, "apus_requests_total", route="(backend)", method="POST", status="4xx", kind="proxy") == 1
    assert value(after, "apus_inflight_requests") == 0
