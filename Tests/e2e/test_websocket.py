"""WebSocket passthrough to a real uvicorn app, over HTTP/1.1 upgrade and HTTP/2 extended CONNECT (RFC 8441)."""

import asyncio
import os
import signal
import socket
import time

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
    ws = connect(ws_url(gateway, "/ws/echo"))
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


def test_other_upgrades_are_stripped_not_tunnelled(gateway):
    response = httpx.get(f"{gateway.url}/headers", headers={"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings",
                                                            "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
    assert response.status_code == 200
    seen = response.json()["headers"]
    assert "upgrade" not in seen and "http2-settings" not in seen and "connection" not in seen


def test_tunnel_limit_answers_503(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="max_websockets = 2")
    first = connect(ws_url(gateway, "/ws/echo"))
    second = connect(ws_url(gateway, "/ws/echo"))
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        connect(ws_url(gateway, "/ws/echo"))
    assert refused.value.response.status_code == 503
    first.close()
    wait_for(lambda: try_connect(gateway), 5, "a slot to free up")
    second.close()


def try_connect(gateway):
    try:
        connect(ws_url(gateway, "/ws/echo")).close()
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
