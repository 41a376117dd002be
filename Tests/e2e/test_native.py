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


def test_a_body_the_client_stops_sending_is_given_up_after_keepalive_timeout(gateway_factory, uvicorn_backend):
    """A body only the gateway waits for — a native handler's (chunked, so NIO's codec
    frames it), or an HTTP/2 body not yet on its way to the backend — that stops
    arriving is given up after keepalive_timeout as nginx's client_body_timeout does:
    closed without an answer, logged as 408. It held its buffer and connection for
    ever. A body that keeps coming, however slowly, is served."""
    import socket
    import h2.config
    import h2.connection
    import h2.events
    from conftest import wait_for

    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="keepalive_timeout = 1")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(b"POST /echo/a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        assert sock.recv(65536) == b""  # closed, no answer (a socket timeout fails the test)

    for path, data in [("/echo/a/b", b"abc"), ("/upload", None)]:  # native; proxied, no DATA yet
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", path)])
            if data:
                conn.send_data(1, data)
            sock.sendall(conn.data_to_send())
            resets = []
            while not resets:
                chunk = sock.recv(65536)
                assert chunk, f"{path}: connection closed instead of the stream"
                events = conn.receive_data(chunk)
                assert not any(isinstance(e, h2.events.ResponseReceived) for e in events), (path, events)
                resets = [e for e in events if isinstance(e, h2.events.StreamReset) and e.stream_id == 1]
                sock.sendall(conn.data_to_send())

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(b"POST /echo/a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            time.sleep(0.5)
            sock.sendall(b"1\r\nx\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200") and b'"body":"xxxxx"' in answer

    wait_for(lambda: gateway.log().count('" 408 ') == 3, 5, "three 408 access lines")
    assert '"POST /echo/a/b HTTP/1.1" 408' in gateway.log() and '"POST /upload HTTP/2.0" 408' in gateway.log()


def test_an_async_or_blocking_handler_that_does_not_answer_in_time_gets_504(gateway_factory, uvicorn_backend):
    """backend.response_timeout bounds a native handler's answer as it bounds the
    backend's (the request waited for ever): 504 with the reason, a handler error in
    the log; the handler's late answer is dropped and the connection serves on. The
    async handler is answered by the front handler, the blocking one by the gateway."""
    from conftest import wait_for

    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", backend_extra="response_timeout = 1")
    with httpx.Client(timeout=10) as client:
        for name, path in [("later", "/later?ms=3000"), ("sleepy", "/sleepy?ms=3000")]:
            response = client.get(f"{gateway.url}{path}")
            assert response.status_code == 504, (name, response.text)
            assert response.json() == {"error": f"handler {name} did not answer within 1 s (backend.response_timeout)"}
            assert response.headers["x-request-id"]
            assert client.get(f"{gateway.url}/later?ms=10").status_code == 201  # and the gateway serves on
    wait_for(lambda: gateway.log().count("handler answered after it timed out; answer dropped") == 2, 10, "late answers dropped")
    assert gateway.log().count('" 504 ') == 2 and gateway.proc.poll() is None
