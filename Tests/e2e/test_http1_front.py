"""The HTTP/1.1 front handler: native routes framed and answered from the
received bytes, everything else handed to the full codec, on one connection,
in order. Raw sockets, so each test controls exactly which bytes arrive when."""

import hashlib
import json
import subprocess
import socket
import time

import httpx

from conftest import count_until_closed


def connect(gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock, buffered: bytearray) -> tuple[int, dict, bytes]:
    """One response (content-length framed, as every answer here is): status, headers, body."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response head; got {bytes(buffered)!r}"
        buffered += chunk
    end = buffered.index(b"\r\n\r\n")
    lines = bytes(buffered[:end]).decode("latin-1").split("\r\n")
    del buffered[:end + 4]
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buffered) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        buffered += chunk
    body = bytes(buffered[:length])
    del buffered[:length]
    return status, headers, body


def read_until_closed(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_native_and_proxied_requests_pipelined_in_one_write_are_answered_in_order(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"GET /echo/first/a HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /hello/second HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo/third/b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                     b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /orderbook/ACME?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buffered = bytearray()
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and json.loads(body)["params"]["name"] == "first"
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and headers["server"] == "uvicorn" and b"second" in body
        status, headers, body = read_response(sock, buffered)
        seen = json.loads(body)
        assert status == 200 and seen["params"]["name"] == "third" and seen["body"] == "hello"
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and headers["server"] == "uvicorn" and json.loads(body)["bytes"] == 3
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and headers["connection"] == "close" and len(json.loads(body)["orders"]) == 2
        assert bytes(buffered) + read_until_closed(sock) == b""


def test_requests_arriving_byte_by_byte_are_framed_and_answered(gateway):
    request = (b"POST /echo/slow/x HTTP/1.1\r\nHost: x\r\nX-Test: drip\r\nContent-Length: 11\r\n\r\nhello world"
               b"GET /hello/after HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /echo/last/y HTTP/1.1\r\nHost: x\r\n\r\n")
    with connect(gateway) as sock:
        for index in range(len(request)):
            sock.sendall(request[index:index + 1])
            time.sleep(0.001)
        buffered = bytearray()
        status, _, body = read_response(sock, buffered)
        seen = json.loads(body)
        assert status == 200 and seen["body"] == "hello world" and seen["header_x_test"] == "drip"
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and headers["server"] == "uvicorn" and b"after" in body
        status, _, body = read_response(sock, buffered)
        assert status == 200 and json.loads(body)["params"]["name"] == "last"


def test_header_names_reach_the_handler_lower_case_and_values_unchanged(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"GET /echo/case/x HTTP/1.1\r\nHOST: x\r\nX-Test:   Mixed Case Value  \r\nx-lower: 1\r\n\r\n")
        status, _, body = read_response(sock, bytearray())
    seen = json.loads(body)
    assert status == 200
    assert seen["header_names"] == ["host", "x-test", "x-lower"]
    assert seen["header_x_test"] == "Mixed Case Value"


def test_chunked_body_to_a_native_route_goes_through_the_codec_and_the_connection_keeps_working(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"POST /echo/chunked/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                     b"GET /echo/next/y HTTP/1.1\r\nHost: x\r\n\r\n")
        buffered = bytearray()
        status, _, body = read_response(sock, buffered)
        assert status == 200 and json.loads(body)["body"] == "hello world"
        status, _, body = read_response(sock, buffered)
        assert status == 200 and json.loads(body)["params"]["name"] == "next"


def send_body_after_100_continue(gateway, head: bytes, body: bytes) -> tuple[int, dict, bytes]:
    """Sends a head that expects 100-continue, waits for the `100 Continue`, then sends the body."""
    with connect(gateway) as sock:
        sock.sendall(head)
        buffered = bytearray()
        while b"\r\n\r\n" not in buffered:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before 100 Continue; got {bytes(buffered)!r}"
            buffered += chunk
        assert bytes(buffered).startswith(b"HTTP/1.1 100 Continue\r\n")
        del buffered[:buffered.index(b"\r\n\r\n") + 4]
        sock.sendall(body)
        return read_response(sock, buffered)


def test_expect_100_continue_on_a_native_route(gateway):
    status, _, body = send_body_after_100_continue(
        gateway, b"POST /echo/expect/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", b"data")
    assert status == 200 and json.loads(body)["body"] == "data"


def test_expect_100_continue_on_a_proxied_route(gateway):
    """The gateway answers `100 Continue` itself, as nginx does (a backend's interim answers are
    not passed on, so this one is the gateway's), and the body then reaches the backend."""
    status, _, body = send_body_after_100_continue(
        gateway, b"POST /upload HTTP/1.1\r\nHost: x\r\nexpect: 100-Continue\r\nContent-Length: 4\r\n\r\n", b"data")
    assert status == 200 and json.loads(body) == {"bytes": 4, "sha256": hashlib.sha256(b"data").hexdigest()}


def test_transfer_codings_other_than_chunked_get_501(gateway):
    """Only chunked is understood (RFC 9112 6.1, as nginx answers): passing `gzip, chunked` on
    as chunked would hand the backend gzip bytes with nothing saying so. Native and proxied."""
    for path in [b"/upload", b"/echo/a/b"]:
        with connect(gateway) as sock:
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: GZIP, chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\n\r\n")
            status, headers, body = read_response(sock, bytearray())
            assert status == 501, (path, status, body)
            assert json.loads(body)["error"] == 'transfer coding "gzip" is not supported (only chunked is)'
            assert headers["connection"] == "close"
    with connect(gateway) as sock:  # plain chunked still goes through
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        status, _, body = read_response(sock, bytearray())
        assert status == 200 and json.loads(body)["bytes"] == 3

def test_smuggling_shapes_get_400_and_reach_no_handler(gateway):
    shapes = [
        b"POST /echo/a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo/a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"GET /echo/a/b HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /echo/a/b HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        # Two Hosts could send the gateway and the backend to different sites; HTTP/1.1 needs one.
        b"GET /echo/a/b HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
        b"GET /hello/a HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
        b"GET /echo/a/b HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ]
    for shape in shapes:
        with connect(gateway) as sock:
            sock.sendall(shape)
            data = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 400"), (shape, data)
        assert b'"params"' not in data and b"server: uvicorn" not in data.lower()  # neither a handler nor the backend answered
    assert httpx.get(f"{gateway.url}/echo/still/up").status_code == 200


def test_a_fragment_in_the_target_is_dropped_before_routing(gateway):
    """Clients do not send one (RFC 9110 4.2.5); NIO's decoder let it into a route's
    last parameter or the query, and on to the backend."""
    with connect(gateway) as sock:
        sock.sendall(b"GET /echo/a/b#frag HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /echo/a/b?q=1#frag HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /headers?a=1#frag HTTP/1.1\r\nHost: x\r\n\r\n")
        buffered = bytearray()
        (s1, _, first), (s2, _, second), (s3, _, proxied) = [read_response(sock, buffered) for _ in range(3)]
    assert (s1, s2, s3) == (200, 200, 200)
    first, second, proxied = json.loads(first), json.loads(second), json.loads(proxied)
    assert first["path"] == "/echo/a/b" and first["params"] == {"name": "a", "rest": "b"} and first["query"] == ""
    assert second["path"] == "/echo/a/b" and second["query"] == "q=1" and second["q"] == "1"
    assert proxied["path"] == "/headers" and proxied["query"] == "a=1"


def test_connect_is_refused_with_the_reason(gateway):
    """Not a forward proxy: 400, as from nginx, with the gateway's JSON error (the response
    encoder used to drop the body of every answer to CONNECT, not only of a 2xx), whatever
    the target; a path target goes neither to a native handler nor to the backend."""
    for target in [b"example.com:443", b"/echo/a/b", b"/hello/x"]:
        with connect(gateway) as sock:
            sock.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            status, headers, body = read_response(sock, bytearray())
        assert status == 400, (target, status, body)
        assert json.loads(body)["error"] == "CONNECT is not supported: this is a reverse proxy"
        assert headers["connection"] == "close"


def test_oversized_head_is_refused_by_the_codec(gateway):
    # Just over max_header_size (64 KiB by default), so the gateway has read all of it when it answers.
    with connect(gateway) as sock:
        sock.sendall(b"GET /echo/a/b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (66 * 1024) + b"\r\n\r\n")
        time.sleep(0.5)
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431"), data[:100]


def test_http10_and_connection_close_end_the_connection_after_a_native_answer(gateway):
    for request in [b"GET /echo/old/x HTTP/1.0\r\n\r\n",
                    b"GET /echo/close/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /echo/ignored/x HTTP/1.1\r\n\r\n"]:
        with connect(gateway) as sock:
            sock.sendall(request)
            data = read_until_closed(sock)
        assert data.count(b"HTTP/1.") == 1 and b"connection: close" in data.lower()
        assert b"ignored" not in data
    # An HTTP/1.0 client that asks to keep the connection is told it is kept (HTTP/1.0
    # closes by default, so without the header the client waits for the close), native or proxied.
    for kept, again in [(b"/echo/kept/x", b"/echo/again/x"), (b"/hello/kept", b"/hello/again")]:
        with connect(gateway) as sock:
            sock.sendall(b"GET " + kept + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = read_response(sock, bytearray())
            assert status == 200 and headers["connection"] == "keep-alive", (kept, headers)
            sock.sendall(b"GET " + again + b" HTTP/1.0\r\n\r\n")
            assert b'"again"' in read_until_closed(sock)


def test_keepalive_timeout_closes_quiet_and_dribbling_connections_but_not_busy_ones(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="keepalive_timeout = 1")
    with connect(gateway) as quiet, connect(gateway) as dribbling, connect(gateway) as busy:
        quiet.sendall(b"GET /echo/q/x HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(quiet, bytearray())
        started = time.monotonic()
        busy_buffer = bytearray()
        head = b"GET /echo/dribble/x HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 100
        dribbled = 0
        while time.monotonic() - started < 2.5:
            # A request every 0.3 s keeps `busy` open; a head that never ends does not keep `dribbling`.
            busy.sendall(b"GET /echo/b/x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(busy, busy_buffer)[0] == 200
            try:
                dribbling.sendall(head[dribbled:dribbled + 1])
                dribbled += 1
            except OSError:
                pass
            time.sleep(0.3)
        quiet.settimeout(1)
        dribbling.settimeout(1)
        assert read_until_closed(quiet) == b""
        assert read_until_closed(dribbling) == b""
        busy.sendall(b"GET /echo/b/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(busy, busy_buffer)[0] == 200


def test_pipelined_answers_wait_for_a_slow_reader_who_gets_them_all_and_a_stalled_one_is_closed(
        gateway_factory, uvicorn_backend):
    """A client that pipelines requests for large native answers and reads them slowly
    was cut off keepalive_timeout after its last request, although answers were still
    leaving; and the gateway served every pipelined request at once, holding all the
    answers in memory for a client that was not taking them. Now framing waits while
    the client does not take the answers, the connection stays while answers leave
    (nginx's send_timeout), and one whose answers stop leaving is closed."""
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="keepalive_timeout = 1")
    target = b"/orderbook/ACME?n=10000"
    requests = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    expected = httpx.get(gateway.url + target.decode()).content
    count = 20

    def served():
        return gateway.log().count('"GET /orderbook/ACME?n=10000 HTTP/1.1" 200')

    with connect(gateway) as slow:
        before = served()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.sendall(requests * count)
        time.sleep(0.6)
        assert served() - before < count  # the rest wait for the client to take the answers
        buffered = bytearray()
        for _ in range(count):  # about 15 MB, read over more than keepalive_timeout
            status, _, body = read_response(slow, buffered)
            assert status == 200 and body == expected
            time.sleep(0.06)
        assert served() - before == count

    with connect(gateway) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stalled.sendall(requests * count)
        time.sleep(4)  # takes nothing for more than two keepalive_timeouts
        received = count_until_closed(stalled, 5)
        assert received < count * len(expected)  # closed by the gateway before the end
    assert httpx.get(f"{gateway.url}/echo/still/up").status_code == 200


def h1(gateway, target: str) -> tuple[int, dict, bytes]:
    with connect(gateway) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return read_response(sock, bytearray())


def h2(gateway, target: str) -> tuple[int, dict, bytes]:
    out = subprocess.run(["curl", "-s", "-i", "--http2-prior-knowledge", f"{gateway.url}{target}"],
                         capture_output=True, timeout=30, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def test_a_handler_cannot_send_broken_headers_or_framing_over_either_protocol(gateway):
    # HTTP/1.1 goes through the front handler, HTTP/2 through the codec path: both must agree.
    for fetch in (h1, h2):
        for kind in ["crlf", "name", "status"]:
            status, headers, body = fetch(gateway, f"/shaped?kind={kind}")
            assert status == 500, (fetch.__name__, kind, status, body)
            assert "x-injected" not in headers and b"smuggled" not in body
        assert "native handler returned" in gateway.log()

        status, headers, body = fetch(gateway, "/shaped?kind=framing")
        assert status == 200 and body == b"framed by the gateway", (fetch.__name__, body)
        assert headers["content-length"] == str(len(body))
        assert headers["x-custom"] == "kept" and headers["date"] != "yesterday"
        assert "transfer-encoding" not in headers and "keep-alive" not in headers and "connection" not in headers

        status, headers, body = fetch(gateway, "/shaped?kind=nocontent")
        assert status == 204 and body == b"" and "content-length" not in headers, (fetch.__name__, headers)


def test_the_first_of_two_request_ids_is_kept_native_and_proxied(gateway):
    """With two X-Request-ID fields, both paths keep the first (as the gateway's
    `HTTPHeaders.first(name:)` would), and the backend gets the same id back."""
    with connect(gateway) as sock:
        sock.sendall(b"GET /echo/ids/x HTTP/1.1\r\nHost: x\r\nX-Request-ID: first-id\r\nX-Request-ID: second-id\r\n\r\n"
                     b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Request-ID: first-id\r\nX-Request-ID: second-id\r\n"
                     b"Connection: close\r\n\r\n")
        buffered = bytearray()
        status, headers, _ = read_response(sock, buffered)
        assert status == 200 and headers["x-request-id"] == "first-id"
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and headers["x-request-id"] == "first-id"
        assert json.loads(body)["headers"]["x-request-id"] == "first-id"
