"""Native handlers through the real gateway: params, bodies, kinds, errors."""

import json
import subprocess
import threading
import time

import httpx

from conftest import QUICKSTART


def test_native_route_serves_json_identical_to_python(gateway):
    native = httpx.get(f"{gateway.url}/orderbook/ACME?n=200")
    python = httpx.get(f"{gateway.url}/py/orderbook/ACME?n=200")
    assert native.status_code == 200 and python.status_code == 200
    assert native.headers["content-type"] == "application/json"
    assert "server" not in native.headers  # uvicorn's header: this answer never reached Python
    assert python.headers["server"] == "uvicorn"
    assert native.content == python.content
    assert len(native.json()["orders"]) == 200


def test_path_params_query_headers_and_body_reach_the_handler(gateway):
    response = httpx.post(f"{gateway.url}/echo/alpha/x/y/z?q=hello%20world&other=1", content=b"payload bytes",
                          headers={"X-Test": "yes", "X-Request-ID": "client-id-123"})
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo/alpha/x/y/z"
    assert seen["params"] == {"name": "alpha", "rest": "x/y/z"}
    assert seen["q"] == "hello world"
    assert seen["query"] == "q=hello%20world&other=1"
    assert seen["header_x_test"] == "yes"
    assert seen["body"] == "payload bytes" and seen["body_length"] == 13
    assert seen["request_id"] == "client-id-123"
    assert response.headers["x-request-id"] == "client-id-123"


def test_percent_encoded_and_dotted_paths_reach_the_same_native_route(gateway):
    plain = httpx.get(f"{gateway.url}/orderbook/ACME?n=3").content
    for path in ["/%6Frderbook/ACME?n=3", "//orderbook//ACME?n=3", "/x/../orderbook/./ACME?n=3"]:
        response = httpx.get(gateway.url + path)
        assert response.status_code == 200, path
        assert "server" not in response.headers, f"{path} dodged the native route"
        assert response.content == plain


def test_ambiguous_paths_are_refused(gateway):
    for path in ["/orderbook/..%2F..%2Fetc", "/orderbook/%00", "/orderbook/%zz", "/../etc/passwd"]:
        # curl sends the target exactly as written (httpx would normalise it).
        out = subprocess.run(["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", gateway.url + path],
                             capture_output=True, text=True, timeout=10).stdout
        assert out == "400", f"{path}: {out}"


def test_throwing_handler_answers_500_and_the_gateway_keeps_serving(gateway):
    response = httpx.get(f"{gateway.url}/boom")
    assert response.status_code == 500
    assert "boom: the handler failed on purpose" in response.json()["error"]
    assert httpx.get(f"{gateway.url}/boom?status=418").status_code == 418
    assert httpx.get(f"{gateway.url}/orderbook/ACME").status_code == 200
    assert "handler threw" in gateway.log()


def test_body_over_the_route_limit_gets_413(gateway):
    assert httpx.post(f"{gateway.url}/small/a", content=b"x" * 1024).status_code == 200
    response = httpx.post(f"{gateway.url}/small/a", content=b"x" * 1025)
    assert response.status_code == 413
    # chunked, so the limit is found while reading
    chunked = httpx.post(f"{gateway.url}/small/a", content=iter([b"x" * 800, b"x" * 800]))
    assert chunked.status_code == 413
    assert httpx.get(f"{gateway.url}/orderbook/ACME").status_code == 200


def test_blocking_handler_does_not_stall_the_event_loop(gateway):
    # Eight 500 ms sleeps on the thread pool, while inline requests keep answering fast.
    results = []

    def sleepy():
        results.append(httpx.get(f"{gateway.url}/sleepy?ms=500", timeout=10).status_code)

    threads = [threading.Thread(target=sleepy) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    with httpx.Client() as client:
        for _ in range(20):
            assert client.get(f"{gateway.url}/orderbook/ACME?n=5").status_code == 200
    inline_done_while_sleeping = len(results) < 8
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert inline_done_while_sleeping


def test_async_handler_completes_from_another_thread(gateway):
    response = httpx.get(f"{gateway.url}/later?ms=30")
    assert response.status_code == 201
    assert response.json() == {"waited_ms": 30, "kind": "async"}


def test_head_on_a_get_route_has_no_body(gateway):
    response = httpx.head(f"{gateway.url}/orderbook/ACME?n=3")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) == len(httpx.get(f"{gateway.url}/orderbook/ACME?n=3").content)


def test_native_routes_keep_serving_with_no_backend(gateway_factory, tmp_path):
    gateway = gateway_factory(f"unix:{tmp_path}/nobody-listens.sock")
    assert httpx.get(f"{gateway.url}/orderbook/ACME").status_code == 200
    down = httpx.get(f"{gateway.url}/anything")
    assert down.status_code == 502
    assert down.headers["content-type"] == "application/json"
    assert "backend unreachable" in down.json()["error"]
    assert "request_id" in down.json()
