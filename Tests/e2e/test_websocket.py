"""WebSocket passthrough to a real uvicorn app, over HTTP/1.1 upgrade and HTTP/2 extended CONNECT (RFC 8441)."""

import asyncio
import hashlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.sync.client import connect

from conftest import free_port, wait_for


def ws_url(gateway, path):
    return f"ws://127.0.0.1:{gateway.port}{path}"


def test_echo_text_and_binary_up_to_16_mib(gateway):
    with connect(ws_url(gateway, "/ws/echo"), max_size=None) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        for size in [1, 1000, 70_000, 16 * 1024 * 1024]:
            payload = os.urandom(size)
            ws.send(payload)
            assert ws.recv(timeout=60) == payload
    assert '"GET /ws/echo HTTP/1.1" 101' in gateway.log()


def test_a_thousand_messages_arrive_in_order(gateway):
    with connect(ws_url(gateway, "/ws/echo")) as ws:
        for number in range(1000):
            ws.send(f"message {number}")
        received = [ws.recv(timeout=10) for _ in range(1000)]
    assert received == [f"message {number}" for number in range(1000)]


def test_two_hundred_concurrent_sockets(gateway):
    async def one(number):
        async with websockets.connect(ws_url(gateway, "/ws/echo")) as ws:
            for round_ in range(3):
                await ws.send(f"{number}:{round_}")
                assert await ws.recv() == f"{number}:{round_}"

    async def run():
        await asyncio.gather(*(one(number) for number in range(200)))

    asyncio.run(run())
    assert httpx.get(f"{gateway.url}/hello/after").status_code == 200


def test_server_initiated_close_reaches_the_client(gateway):
    with connect(ws_url(gateway, "/ws/goodbye")) as ws:
        ws.send("you")
        assert ws.recv() == "goodbye you"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4000 and closed.value.rcvd.reason == "server says bye"


def test_client_close_then_the_gateway_keeps_serving(gateway):
    with connect(ws_url(gateway, "/ws/echo")) as ws:
        ws.send("x")
        assert ws.recv() == "x"
        ws.close(code=1000)
        assert ws.close_code == 1000
    assert httpx.get(f"{gateway.url}/hello/ok").status_code == 200


def test_backend_killed_mid_session_closes_the_client(gateway, uvicorn_backend):
    with connect(ws_url(gateway, "/ws/echo")) as ws:
        ws.send("before")
        assert ws.recv() == "before"
        os.killpg(uvicorn_backend.proc.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            ws.recv(timeout=10)
        assert time.monotonic() - started < 5


def test_a_refused_handshake_is_passed_through(gateway):
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        connect(ws_url(gateway, "/ws/deny"))
    assert refused.value.response.status_code == 403
    assert httpx.get(f"{gateway.url}/hello/ok").status_code == 200


def test_an_upgrade_request_with_a_body_gets_400(gateway):
    """The bytes after a handshake's head belong to the tunnel: a body was dropped on
    the way while its Content-Length went on, and the backend waited for it until
    the gateway's 504 (response_timeout, 60 s by default)."""
    handshake = (b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    for framing in [b"Content-Length: 5\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(handshake + framing)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 400"), data[:200]
        assert b'"error":"an upgrade request cannot carry a body"' in data
    assert httpx.get(f"{gateway.url}/hello/ok").status_code == 200


def test_other_upgrades_are_stripped_not_tunnelled(gateway):
    response = httpx.get(f"{gateway.url}/headers", headers={"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings",
                                                            "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
    assert response.status_code == 200
    seen = response.json()["headers"]
    assert "upgrade" not in seen and "http2-settings" not in seen and "connection" not in seen


def test_tunnel_limit_answers_503(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="max_websockets = 2")
    with connect(ws_url(gateway, "/ws/echo")) as first, connect(ws_url(gateway, "/ws/echo")):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            with connect(ws_url(gateway, "/ws/echo")):
                pass
        assert refused.value.response.status_code == 503
        first.close()
        wait_for(lambda: try_connect(gateway), 5, "a slot to free up")


def try_connect(gateway):
    try:
        with connect(ws_url(gateway, "/ws/echo")):
            return True
    except websockets.exceptions.InvalidStatus:
        return False


def test_graceful_shutdown_closes_open_sockets_with_1001(gateway):
    with connect(ws_url(gateway, "/ws/ticker")) as ws:
        assert ws.recv(timeout=5).startswith("tick")
        gateway.signal(signal.SIGTERM)
        ticks_after = 0
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=20)
                ticks_after += 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert ticks_after > 5  # the tunnel kept flowing during the drain
    assert gateway.wait(timeout=20) == 0


def ws_frame(payload: bytes, opcode=0x1) -> bytes:
    """A masked client frame (RFC 6455 5.2), for the raw HTTP/2 test."""
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    length = len(payload)
    header += bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + length.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websocket_over_http2_extended_connect(gateway):
    from hpack import Decoder, Encoder
    from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame
    from test_tls_h2 import raw_frames

    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.settimeout(5)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    frames = raw_frames(sock, lambda f: any(isinstance(x, SettingsFrame) and "ACK" not in x.flags for x in f))
    settings = next(f for f in frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags).settings
    assert settings.get(0x8) == 1, settings  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    ack = SettingsFrame(0)
    ack.flags.add("ACK")
    headers = HeadersFrame(1)
    headers.data = Encoder().encode([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                     (":path", "/ws/echo"), (":authority", f"127.0.0.1:{gateway.port}"),
                                     ("sec-websocket-version", "13")])
    headers.flags.add("END_HEADERS")
    sock.sendall(ack.serialize() + headers.serialize())
    frames = raw_frames(sock, lambda f: any(isinstance(x, HeadersFrame) and x.stream_id == 1 for x in f))
    response = dict(Decoder().decode(next(f for f in frames if isinstance(f, HeadersFrame)).data))
    assert response[":status"] == "200", response
    data = DataFrame(1)
    data.data = ws_frame(b"over h2")
    sock.sendall(data.serialize())
    frames = raw_frames(sock, lambda f: sum(len(x.data) for x in f if isinstance(x, DataFrame)) >= 9)
    echoed = b"".join(f.data for f in frames if isinstance(f, DataFrame))
    assert echoed == bytes([0x81, 7]) + b"over h2"  # an unmasked server text frame
    sock.close()
    assert '"CONNECT /ws/echo HTTP/2.0" 200' in gateway.log()


@pytest.fixture
def halfclose_gateway(tmp_path, gateway_factory, processes):
    from conftest import Managed, can_connect_unix, wait_for
    socket_path, record = str(tmp_path / "raw.sock"), tmp_path / "record.bin"
    backend = Managed([sys.executable, str(Path(__file__).with_name("halfclose_backend.py")), socket_path, str(record)],
                      tmp_path, tmp_path / "raw-backend.log").start()
    processes.append(backend)
    wait_for(lambda: can_connect_unix(socket_path), 10, "raw backend")
    return gateway_factory(f"unix:{socket_path}"), record


def upgrade_request(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def read_until_eof(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_backend_half_close_reaches_the_client_and_the_client_can_still_send(halfclose_gateway):
    gateway, record = halfclose_gateway
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(upgrade_request("/server-first"))
        received = read_until_eof(sock)  # the backend's EOF arrives as ours: the tunnel is half-closed
        assert received.startswith(b"HTTP/1.1 101"), received
        assert received.endswith(b"\r\n\r\nserver bytes, then EOF"), received
        payload = os.urandom(300_000)
        sock.sendall(payload)  # our direction still flows
        sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: record.exists() and record.stat().st_size == len(payload), 10, "the backend to record our bytes")
        assert record.read_bytes() == payload
        assert sock.recv(1) == b""  # and once both sides are done, the connection is closed


def test_client_half_close_reaches_the_backend_which_still_answers(halfclose_gateway):
    gateway, _ = halfclose_gateway
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(upgrade_request("/client-first"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        payload = os.urandom(2_000_000)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = head.split(b"\r\n\r\n", 1)[1] + read_until_eof(sock)
        assert answer == b"got %d bytes, sha256 %s" % (len(payload), hashlib.sha256(payload).hexdigest().encode())


def open_h2_websocket(port: int, path: str):
    """A raw HTTP/2 connection with one RFC 8441 extended CONNECT stream (id 1) open."""
    from hpack import Decoder, Encoder
    from hyperframe.frame import HeadersFrame, SettingsFrame
    from test_tls_h2 import raw_frames

    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    raw_frames(sock, lambda f: any(isinstance(x, SettingsFrame) and "ACK" not in x.flags for x in f))
    ack = SettingsFrame(0)
    ack.flags.add("ACK")
    headers = HeadersFrame(1)
    headers.data = Encoder().encode([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                     (":path", path), (":authority", f"127.0.0.1:{port}"), ("sec-websocket-version", "13")])
    headers.flags.add("END_HEADERS")
    sock.sendall(ack.serialize() + headers.serialize())
    frames = raw_frames(sock, lambda f: any(isinstance(x, HeadersFrame) and x.stream_id == 1 for x in f))
    assert dict(Decoder().decode(next(f for f in frames if isinstance(f, HeadersFrame)).data))[":status"] == "200"
    return sock, frames


def test_http2_websocket_half_close_both_ways(halfclose_gateway):
    from hyperframe.frame import DataFrame
    from test_tls_h2 import raw_frames

    def ended(frames):
        return any(isinstance(x, DataFrame) and "END_STREAM" in x.flags and x.stream_id == 1 for x in frames)

    gateway, record = halfclose_gateway
    # Client first: our END_STREAM is the backend's EOF; its answer and its END_STREAM come back.
    sock, frames = open_h2_websocket(gateway.port, "/client-first")
    payload = os.urandom(40_000)  # within the initial flow-control window, in frames of at most 16 KiB
    for offset in range(0, len(payload), 16_384):
        data = DataFrame(1)
        data.data = payload[offset:offset + 16_384]
        if offset + 16_384 >= len(payload):
            data.flags.add("END_STREAM")
        sock.sendall(data.serialize())
    frames += raw_frames(sock, ended)
    answer = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert answer == b"got %d bytes, sha256 %s" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
    sock.close()
    # Server first: the backend's EOF is our END_STREAM; what we send afterwards still reaches it.
    sock, frames = open_h2_websocket(gateway.port, "/server-first")
    frames += raw_frames(sock, ended)
    assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"server bytes, then EOF"
    data = DataFrame(1)
    data.data = b"after the backend's EOF"
    data.flags.add("END_STREAM")
    sock.sendall(data.serialize())
    wait_for(lambda: record.exists() and record.read_bytes() == b"after the backend's EOF", 10, "the backend to record our bytes")
    sock.close()
