"""TLS termination and HTTP/2: real curl, httpx, h2load, raw h2 frames and headless Chromium."""

import asyncio
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx
import pytest

from certs import Authority, write_cert, write_pair
from conftest import APUS, can_connect_tcp, child_env, free_port, wait_for


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "certs"
    folder.mkdir()
    ca = Authority()
    other_ca = Authority("Someone Else")
    material = {"folder": folder, "ca": write_cert(folder / "ca.pem", ca.cert), "authority": ca}
    material["server"] = write_pair(folder, "server", *ca.issue("localhost", ["localhost", "127.0.0.1"]))
    material["other"] = write_pair(folder, "other", *ca.issue("other.test", ["other.test", "*.other.test"]))
    material["client"] = write_pair(folder, "client", *ca.issue("good client", client=True))
    material["stranger"] = write_pair(folder, "stranger", *other_ca.issue("bad client", client=True))
    return material


def tls_block(port, pki, extra=""):
    cert, key = pki["server"]
    other_cert, other_key = pki["other"]
    return (f'hsts = "max-age=63072000"\n'
            f'[[server.tls]]\nlisten = "127.0.0.1:{port}"\ncertificate = "{cert}"\nprivate_key = "{key}"\n{extra}\n'
            f'[[server.tls.sni]]\nserver_names = ["other.test", "*.other.test"]\n'
            f'certificate = "{other_cert}"\nprivate_key = "{other_key}"\n')


@pytest.fixture
def tls_gateway(gateway_factory, uvicorn_backend, pki):
    port = free_port()
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra=tls_block(port, pki))
    gateway.tls_port = port
    wait_for(lambda: can_connect_tcp(port), 10, "TLS listener")
    return gateway


def curl(*args):
    result = subprocess.run(["curl", "-s", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)
    return result


def test_curl_http1_and_http2_over_tls(tls_gateway, pki):
    base = f"https://localhost:{tls_gateway.tls_port}"
    h1 = curl("--cacert", str(pki["ca"]), "--http1.1", "-w", "\\n%{http_version}", f"{base}/hello/tls")
    assert h1.stdout.endswith("\n1.1") and '"hello":"tls"' in h1.stdout, h1.stderr
    h2 = curl("--cacert", str(pki["ca"]), "--http2", "-D-", "-w", "\\n%{http_version}", f"{base}/orderbook/ACME?n=2")
    assert h2.stdout.endswith("\n2"), h2.stderr
    assert "strict-transport-security: max-age=63072000" in h2.stdout
    assert '"count":2' in h2.stdout
    forwarded = httpx.get(f"{base}/headers", verify=ssl.create_default_context(cafile=str(pki["ca"]))).json()["headers"]
    assert forwarded["x-forwarded-proto"] == "https"


def test_plain_http_on_the_tls_port_is_told_to_use_https(tls_gateway, pki):
    """As from nginx: a 400 saying so, instead of a connection closed by a failed
    handshake; TLS on the same port goes on working."""
    plain = curl("-i", f"http://127.0.0.1:{tls_gateway.tls_port}/hello/plain")
    assert plain.stdout.startswith("HTTP/1.1 400"), (plain.stdout, plain.stderr)
    assert json.loads(plain.stdout.split("\n\n", 1)[1]) == {"error": "plain HTTP was sent to an HTTPS port: use https://"}
    secure = curl("--cacert", str(pki["ca"]), f"https://localhost:{tls_gateway.tls_port}/hello/secure")
    assert '"hello":"secure"' in secure.stdout, secure.stderr


def test_h2c_prior_knowledge_and_http1_share_the_plain_port(gateway):
    h2 = curl("--http2-prior-knowledge", "-w", "\\n%{http_version}", f"{gateway.url}/hello/h2c")
    assert h2.stdout.endswith("\n2") and '"hello":"h2c"' in h2.stdout
    native = curl("--http2-prior-knowledge", "-D-", f"{gateway.url}/orderbook/ACME?n=1")
    assert native.stdout.startswith("HTTP/2 200") and "transfer-encoding" not in native.stdout.lower()
    h1 = curl("-w", "\\n%{http_version}", f"{gateway.url}/hello/h1")
    assert h1.stdout.endswith("\n1.1")


def test_proxied_responses_on_h2_have_no_hop_by_hop_headers(gateway):
    out = curl("--http2-prior-knowledge", "-D-", "-o", "/dev/null", f"{gateway.url}/download?size=100000")
    headers = out.stdout.lower()
    assert headers.startswith("http/2 200")
    assert "transfer-encoding" not in headers and "connection:" not in headers and "keep-alive" not in headers


def h2_exchange(sock, conn, request_headers):
    """Sends one request on a raw h2 connection; returns (response headers, body)."""
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, request_headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda e: any(isinstance(x, h2.events.StreamEnded) and x.stream_id == stream
                                                   for x in e))
    response = next(x for x in events if isinstance(x, h2.events.ResponseReceived) and x.stream_id == stream)
    body = b"".join(x.data for x in events if isinstance(x, h2.events.DataReceived) and x.stream_id == stream)
    return dict((k.decode(), v.decode()) for k, v in response.headers), body


def test_h2_cookie_crumbs_reach_the_backend_joined_and_a_spoofed_protocol_header_does_not(gateway):
    # RFC 9113 8.2.3: browsers split Cookie into one field per crumb; an HTTP/1.1 backend
    # must see one header, or frameworks that read the first one lose the rest.
    sock, conn = h2_connection(gateway.port)
    request = headers("/headers", gateway.port) + [("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2"),
                                                   ("cookie", "c=3"), ("x-apus-h2-protocol", "websocket")]
    status, body = h2_exchange(sock, conn, request)
    seen = json.loads(body)["headers"]
    assert status[":status"] == "200" and seen["cookie"] == "a=1; b=2; c=3", seen
    assert "x-apus-h2-protocol" not in seen and seen["accept"] == "*/*"
    sock.close()


def test_h2_authority_is_the_host_the_backend_and_native_handlers_see(gateway):
    """RFC 9113 8.3.1: the HTTP/1.1 Host made from an HTTP/2 request takes :authority,
    replacing a Host field sent with it (the backend got the client's Host, so the
    gateway and the backend could act for different sites). Without :authority, Host stands."""
    sock, conn = h2_connection(gateway.port, validate=False)
    both = [(":method", "GET"), (":path", "/headers"), (":scheme", "http"), (":authority", "api.example"),
            ("host", "evil.example")]
    status, body = h2_exchange(sock, conn, both)
    seen = json.loads(body)["headers"]
    assert status[":status"] == "200" and seen["host"] == "api.example" and seen["x-forwarded-host"] == "api.example"
    status, body = h2_exchange(sock, conn, [(":method", "GET"), (":path", "/echo/a/b"), (":scheme", "http"),
                                            (":authority", "api.example"), ("host", "evil.example")])
    assert status[":status"] == "200" and json.loads(body)["host"] == "api.example"
    status, body = h2_exchange(sock, conn, [(":method", "GET"), (":path", "/headers"), (":scheme", "http"),
                                            ("host", "only.example")])
    assert status[":status"] == "200" and json.loads(body)["headers"]["host"] == "only.example"
    sock.close()


MALFORMED_H2_REQUESTS = {
    "uppercase name": [("X-Upper", "1")],
    "connection-specific field": [("connection", "keep-alive")],
    "te other than trailers": [("te", "gzip")],
    "CR LF in a value": [("x-injected", "a\r\nx-evil: 1")],
    "pseudo-header after a regular field": [("accept", "*/*"), (":scheme", "http")],
    "unknown pseudo-header": [(":status", "200")],
}


@pytest.mark.parametrize("case", list(MALFORMED_H2_REQUESTS) + ["no :path", ":protocol on GET", "two :path",
                                  "two hosts, no :authority"])
def test_malformed_h2_requests_reset_their_stream_and_spare_the_connection(gateway, case):
    sock, conn = h2_connection(gateway.port, validate=False)
    request = headers("/headers", gateway.port) + MALFORMED_H2_REQUESTS.get(case, [])
    if case == "no :path":
        request = [field for field in request if field[0] != ":path"]
    elif case == ":protocol on GET":
        request.insert(1, (":protocol", "websocket"))
    elif case == "two :path":
        request.insert(1, (":path", "/other"))
    elif case == "two hosts, no :authority":
        request = [field for field in request if field[0] != ":authority"] + [("host", "a.example"), ("host", "b.example")]
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, request, end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda e: any(isinstance(x, (h2.events.StreamReset, h2.events.ResponseReceived))
                                                   for x in e))
    resets = [x for x in events if isinstance(x, h2.events.StreamReset) and x.stream_id == stream]
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR, events
    # The connection goes on: the next request on it is answered.
    response, body = h2_exchange(sock, conn, headers("/hello/again", gateway.port))
    assert response[":status"] == "200" and b"again" in body
    sock.close()


def test_malformed_h2_requests_are_logged_and_counted(gateway_factory, uvicorn_backend):
    """The reset is all the client gets, but the gateway logs a malformed HTTP/2 request
    as nginx does: an access line with 400 and a request id, a count (kind `gateway`,
    route `(none)`), and the reason in its own log. Before, it left no trace at all."""
    from test_observability import scrape, start_with_admin, value
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}", access_log="json")
    before = scrape(gateway)
    sock, conn = h2_connection(gateway.port, validate=False)
    for extra in ([("X-Upper", "1")], [("connection", "close")]):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, headers("/headers", gateway.port) + extra, end_stream=True)
        sock.sendall(conn.data_to_send())
        events = read_events(sock, conn, lambda e: any(isinstance(x, h2.events.StreamReset) for x in e))
        assert any(isinstance(x, h2.events.StreamReset) and x.stream_id == stream for x in events), events
    sock.close()

    def refused():
        return [line for line in map(json.loads, (l for l in gateway.log().splitlines() if l.startswith("{")))
                if line.get("status") == 400 and line.get("version") == "HTTP/2.0"]
    wait_for(lambda: len(refused()) == 2, 5, "two access lines")
    assert all(line["kind"] == "gateway" and line["request_id"] for line in refused()), refused()
    assert "malformed HTTP/2 request: invalid field name" in gateway.log()
    assert "malformed HTTP/2 request: connection-specific field connection" in gateway.log()
    after = scrape(gateway)
    assert value(after, "apus_requests_total", route="(none)", method="OTHER", status="4xx", kind="gateway") \
        - value(before, "apus_requests_total", route="(none)", method="OTHER", status="4xx", kind="gateway") == 2
    assert value(after, "apus_inflight_requests") == 0


def test_an_h2_answer_that_stops_leaving_is_reset_and_a_slow_reader_gets_it_all(gateway_factory, uvicorn_backend):
    """nginx's send_timeout over HTTP/2: a client that stopped opening its flow-control
    window kept the stream, and the 750 KB native answer waiting in it, for as long as
    the connection lived. The stream is reset once nothing has left for
    keepalive_timeout; a client that reads slowly but steadily, for longer than
    that, gets the whole answer."""
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="keepalive_timeout = 1")
    target = "/orderbook/ACME?n=10000"
    expected = httpx.get(gateway.url + target).content

    sock, conn = h2_connection(gateway.port)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers(target, gateway.port), end_stream=True)
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    # Never acknowledges a byte: the 64 KiB initial window is all that comes.
    events = read_events(sock, conn, lambda e: any(isinstance(x, h2.events.StreamReset) for x in e), timeout=8)
    resets = [x for x in events if isinstance(x, h2.events.StreamReset) and x.stream_id == stream]
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.CANCEL, events
    assert time.monotonic() - started < 6
    sock.close()

    sock, conn = h2_connection(gateway.port)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers(target, gateway.port), end_stream=True)
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    body = bytearray()
    ended = False
    while not ended and time.monotonic() - started < 30:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                time.sleep(0.05)  # a slow reader: about 300 KB/s
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            ended = ended or isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset))
        sock.sendall(conn.data_to_send())
    assert bytes(body) == expected and time.monotonic() - started > 1.5
    sock.close()


def test_h2_request_trailers_and_a_valid_extended_set_of_fields_pass(gateway):
    sock, conn = h2_connection(gateway.port)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [(":method", "POST"), (":path", "/upload"), (":scheme", "http"),
                               (":authority", f"127.0.0.1:{gateway.port}"), ("te", "trailers"),
                               ("x-odd_but.valid~name!", "v")])
    conn.send_data(stream, b"x" * 1000)
    conn.send_headers(stream, [("x-checksum", "done")], end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda e: any(isinstance(x, (h2.events.StreamEnded, h2.events.StreamReset))
                                                   for x in e))
    response = next(x for x in events if isinstance(x, h2.events.ResponseReceived))
    body = b"".join(x.data for x in events if isinstance(x, h2.events.DataReceived))
    assert dict(response.headers)[b":status"] == b"200" and b"1000" in body, body
    sock.close()


def stream_frames(gateway, path, until, method="GET"):
    from hyperframe.frame import SettingsFrame
    sock, conn = h2_connection(gateway.port)
    stream = conn.get_next_available_stream_id()
    request = [(":method", method)] + [field for field in headers(path, gateway.port) if field[0] != ":method"]
    conn.send_headers(stream, request, end_stream=True)
    sock.sendall(conn.data_to_send())
    frames = [f for f in raw_frames(sock, until) if f.stream_id == stream and not isinstance(f, SettingsFrame)]
    sock.close()
    return frames


def test_h2_response_ends_on_its_last_frame_and_streamed_bodies_are_not_held(gateway):
    from hyperframe.frame import DataFrame, HeadersFrame
    ended = lambda frames: any("END_STREAM" in f.flags for f in frames if f.stream_id == 1)
    # A native answer: HEADERS, then DATA carrying END_STREAM; no empty DATA frame to end it.
    frames = stream_frames(gateway, "/orderbook/ACME?n=3", ended)
    assert [type(f) for f in frames] == [HeadersFrame, DataFrame], frames
    assert "END_STREAM" in frames[-1].flags and len(frames[-1].data) > 0
    # An answer to HEAD has no body: it ends on its HEADERS frame.
    frames = stream_frames(gateway, "/orderbook/ACME?n=1", ended, method="HEAD")
    assert [type(f) for f in frames] == [HeadersFrame] and "END_STREAM" in frames[0].flags, frames
    # A streamed body: each event arrives on its own as it is sent, not held for the next.
    started = time.monotonic()
    first = stream_frames(gateway, "/sse?n=2&interval=3", lambda frames: any(isinstance(f, DataFrame) for f in frames))
    assert time.monotonic() - started < 2.5, "the first event waited for the second"
    assert any(isinstance(f, DataFrame) and b"id: 0" in f.data for f in first), first


def test_h2_responses_index_only_repeating_headers(gateway):
    # Per-response values (x-request-id, content-length) must not churn the client's
    # HPACK dynamic table; repeating ones (content-type, and date within its second)
    # are indexed once and reused.
    sock, conn = h2_connection(gateway.port)
    ids, dates = set(), set()
    for n in range(1, 6):
        response, body = h2_exchange(sock, conn, headers(f"/orderbook/ACME?n={n}", gateway.port))
        assert response[":status"] == "200" and len(body) == int(response["content-length"])
        ids.add(response["x-request-id"])
        dates.add(response["date"])
    assert len(ids) == 5
    table = [(name.decode(), value.decode()) for name, value in conn.decoder.header_table.dynamic_entries]
    assert ("content-type", "application/json") in table, table
    assert not any(name in ("x-request-id", "content-length") for name, _ in table), table
    # One entry per distinct date: a repeated date was sent as a reference, not added again.
    assert sorted(value for name, value in table if name == "date") == sorted(dates), table
    sock.close()


def test_many_concurrent_h2_streams_with_large_bodies(tls_gateway, pki):
    base = f"https://localhost:{tls_gateway.tls_port}"

    async def run():
        async with httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=str(pki["ca"])), timeout=60,
                                     limits=httpx.Limits(max_connections=1)) as client:
            async def upload(i):
                payload = hashlib.sha256(str(i).encode()).digest() * (65536 // 32 * (i % 4 + 1))
                response = await client.post(f"{base}/upload", content=payload)
                assert response.http_version == "HTTP/2"
                assert response.json() == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

            async def download(i):
                size = (i % 5 + 1) * 1024 * 1024
                digest = hashlib.sha256()
                total = 0
                async with client.stream("GET", f"{base}/download?size={size}") as response:
                    async for chunk in response.aiter_raw():
                        digest.update(chunk)
                        total += len(chunk)
                assert total == size

            async def native(i):
                response = await client.get(f"{base}/orderbook/ACME?n={i + 1}")
                assert response.status_code == 200 and response.json()["count"] == i + 1

            async def echo(i):
                response = await client.post(f"{base}/echo/n{i}/x", content=b"z" * (i * 100))
                assert response.json()["body_length"] == i * 100

            tasks = []
            for i in range(20):
                tasks += [upload(i), download(i), native(i), echo(i)]
            await asyncio.gather(*tasks)

    asyncio.run(run())


def test_sni_picks_the_matching_certificate(tls_gateway, pki):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    for name, expected in [("localhost", "localhost"), ("other.test", "other.test"), ("api.other.test", "other.test")]:
        with socket.create_connection(("127.0.0.1", tls_gateway.tls_port)) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                subject = dict(x[0] for x in tls.getpeercert()["subject"])
                assert subject["commonName"] == expected
                assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(tls_gateway):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", tls_gateway.tls_port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass


def test_mtls_accepts_a_good_client_and_rejects_others(gateway_factory, uvicorn_backend, pki):
    port = free_port()
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}",
                              server_extra=tls_block(port, pki, extra=f'client_ca = "{pki["ca"]}"'))
    wait_for(lambda: can_connect_tcp(port), 10, "TLS listener")
    url = f"https://localhost:{port}/hello/mtls"
    good_cert, good_key = pki["client"]
    good = curl("--cacert", str(pki["ca"]), "--cert", str(good_cert), "--key", str(good_key), url)
    assert '"hello":"mtls"' in good.stdout, good.stderr
    assert curl("--cacert", str(pki["ca"]), url).returncode != 0
    bad_cert, bad_key = pki["stranger"]
    assert curl("--cacert", str(pki["ca"]), "--cert", str(bad_cert), "--key", str(bad_key), url).returncode != 0
    assert gateway.proc.poll() is None


def peer_serial(port, ca):
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert()["serialNumber"]


def replace_server_pair(pki):
    """A new server certificate and key over the configured files, each replaced in one rename."""
    cert_path, key_path = pki["server"]
    new_cert, new_key = pki["authority"].issue("localhost", ["localhost", "127.0.0.1"])
    staged = write_pair(pki["folder"], "staged", new_cert, new_key)
    os.replace(staged[1], key_path)
    os.replace(staged[0], cert_path)


def test_certificate_reload_keeps_open_connections_and_survives_a_broken_file(tls_gateway, pki):
    port = tls_gateway.tls_port
    before = peer_serial(port, pki["ca"])
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki["ca"]))) as client:
        assert client.get(f"https://localhost:{port}/hello/a").status_code == 200
        replace_server_pair(pki)
        wait_for(lambda: peer_serial(port, pki["ca"]) != before, 10, "new certificate served")
        # The connection opened before the reload still works.
        assert client.get(f"https://localhost:{port}/hello/b").status_code == 200
    after = peer_serial(port, pki["ca"])
    pki["server"][0].write_text("not a certificate\n")
    tls_gateway.signal(signal.SIGHUP)
    wait_for(lambda: "certificate reload failed" in tls_gateway.log(), 10, "reload failure logged")
    assert peer_serial(port, pki["ca"]) == after
    assert httpx.get(f"https://localhost:{port}/hello/c", verify=ssl.create_default_context(cafile=str(pki["ca"]))).status_code == 200


def test_a_broken_certificate_file_is_reported_once_and_the_next_good_one_is_served(tls_gateway, pki):
    port = tls_gateway.tls_port
    before = peer_serial(port, pki["ca"])
    pki["server"][0].write_text("not a certificate\n")
    wait_for(lambda: "certificate reload failed" in tls_gateway.log(), 10, "reload failure logged")
    time.sleep(2.5)  # the watcher looks every second: a file that stays broken is not tried (and logged) again
    assert tls_gateway.log().count("certificate reload failed") == 1, tls_gateway.log()
    assert peer_serial(port, pki["ca"]) == before
    replace_server_pair(pki)
    wait_for(lambda: peer_serial(port, pki["ca"]) != before, 10, "new certificate served")


def test_a_certificate_rotated_as_kubernetes_does_it_is_picked_up(gateway_factory, uvicorn_backend, pki, tmp_path):
    # A Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>; an update writes a
    # new timestamped folder and swaps ..data in one rename, so the files the config names never change.
    secret = tmp_path / "secret"
    secret.mkdir()

    def version(name, cert, key):
        folder = secret / name
        folder.mkdir()
        cert_path, _ = write_pair(folder, "tls", cert, key)  # tls.pem and tls.key
        os.replace(cert_path, folder / "tls.crt")

    version("..2026_11_29_a", *pki["authority"].issue("localhost", ["localhost", "127.0.0.1"]))
    os.symlink("..2026_11_29_a", secret / "..data")
    for name in ["tls.crt", "tls.key"]:
        os.symlink(f"..data/{name}", secret / name)
    port = free_port()
    gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra=(
        f'[[server.tls]]\nlisten = "127.0.0.1:{port}"\ncertificate = "{secret / "tls.crt"}"\n'
        f'private_key = "{secret / "tls.key"}"\n'))
    wait_for(lambda: can_connect_tcp(port), 10, "TLS listener")
    before = peer_serial(port, pki["ca"])
    version("..2026_11_29_b", *pki["authority"].issue("localhost", ["localhost", "127.0.0.1"]))
    os.symlink("..2026_11_29_b", secret / "..data_tmp")
    os.replace(secret / "..data_tmp", secret / "..data")
    wait_for(lambda: peer_serial(port, pki["ca"]) != before, 10, "rotated certificate served")


def run_check(config_text, tmp_path):
    config = tmp_path / "tls.conf"
    config.write_text(config_text)
    return subprocess.run([str(APUS), "check", "--config", str(config)], capture_output=True, text=True, timeout=120,
                          env=child_env())


def test_bad_certificates_are_refused_at_check(tmp_path, pki):
    cert, key = pki["server"]
    other_cert, other_key = pki["other"]
    mismatch = run_check(f'[[server.tls]]\nlisten = "127.0.0.1:0"\ncertificate = "{cert}"\nprivate_key = "{other_key}"\n',
                         tmp_path)
    assert mismatch.returncode != 0 and "does not match certificate" in mismatch.stderr and ":2: server.tls[0]" in mismatch.stderr
    expired = write_pair(pki["folder"], "expired", *pki["authority"].issue("localhost", ["localhost"], days_valid=(-10, -1)))
    result = run_check(f'[[server.tls]]\nlisten = "127.0.0.1:0"\ncertificate = "{expired[0]}"\nprivate_key = "{expired[1]}"\n',
                       tmp_path)
    assert result.returncode != 0 and "expired on" in result.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    result = run_check(f'[[server.tls]]\nlisten = "127.0.0.1:0"\ncertificate = "{garbage}"\nprivate_key = "{key}"\n', tmp_path)
    assert result.returncode != 0 and "not a PEM certificate" in result.stderr
    missing = run_check(f'[[server.tls]]\nlisten = "127.0.0.1:0"\ncertificate = "/nope.pem"\nprivate_key = "{key}"\n', tmp_path)
    assert missing.returncode != 0 and "server.tls[0].certificate" in missing.stderr and "does not exist" in missing.stderr


def test_http_redirects_to_https(gateway_factory, uvicorn_backend, pki):
    tls_port, redirect_port = free_port(), free_port()
    gateway_factory(f"unix:{uvicorn_backend.socket_path}",
                    server_extra=f'redirect_https = ["127.0.0.1:{redirect_port}"]\n' + tls_block(tls_port, pki))
    wait_for(lambda: can_connect_tcp(redirect_port), 10, "redirect listener")
    response = httpx.get(f"http://localhost:{redirect_port}/hello/x?y=1")
    assert response.status_code == 308
    assert response.headers["location"] == f"https://localhost:{tls_port}/hello/x?y=1"


def closes_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_connections_that_never_start_http_are_closed_after_keepalive_timeout(gateway_factory, uvicorn_backend, pki):
    """A TCP connection that sends nothing (plain or TLS port), a TLS handshake that
    never finishes, an HTTP/2 preface cut short, and a quiet connection on the HTTPS
    redirect or admin listener were held for ever: no handler that times connections out was in
    their pipelines yet. They are closed after keepalive_timeout, as nginx closes them
    after client_header_timeout. A TLS connection that has started HTTP keeps its own
    timer: requests spaced out past the deadline are still answered on it."""
    from test_observability import start_with_admin
    tls_port, redirect_port = free_port(), free_port()
    gateway = start_with_admin(gateway_factory, f"unix:{uvicorn_backend.socket_path}",
                               server_extra=f'keepalive_timeout = 1\nredirect_https = ["127.0.0.1:{redirect_port}"]\n'
                               + tls_block(tls_port, pki))
    wait_for(lambda: can_connect_tcp(tls_port) and can_connect_tcp(redirect_port), 10, "listeners")
    admin_port = int(gateway.admin.rsplit(":", 1)[1])
    quiet = {
        "plain, nothing sent": (gateway.port, b""),
        "TLS, nothing sent": (tls_port, b""),
        "TLS, half a ClientHello": (tls_port, b"\x16\x03\x01\x00\xc8\x01"),
        "h2c, half the preface": (gateway.port, b"PRI * HTTP/2.0\r\n"),
        "redirect listener, nothing sent": (redirect_port, b""),
        "admin listener, nothing sent": (admin_port, b""),
    }
    sockets = {}
    for name, (port, first) in quiet.items():
        sockets[name] = socket.create_connection(("127.0.0.1", port))
        if first:
            sockets[name].sendall(first)
    started = time.monotonic()
    for name, sock in sockets.items():
        with sock:
            assert closes_within(sock, 8), name
    assert time.monotonic() - started < 8

    context = ssl.create_default_context(cafile=str(pki["ca"]))
    connection = http.client.HTTPSConnection("localhost", tls_port, context=context, timeout=10)
    try:
        connection.request("GET", "/hello/first")
        assert connection.getresponse().read() and connection.sock is not None
        first_socket = connection.sock
        for i in range(3):
            time.sleep(0.6)
            connection.request("GET", f"/hello/again{i}")
            response = connection.getresponse()
            assert response.status == 200 and f"again{i}".encode() in response.read()
        assert connection.sock is first_socket  # one connection throughout, 1.8 s past its start
    finally:
        connection.close()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_thousands_of_requests_without_failure(tls_gateway, gateway):
    for url in [f"https://127.0.0.1:{tls_gateway.tls_port}/orderbook/ACME?n=10",
                f"https://127.0.0.1:{tls_gateway.tls_port}/hello/load", f"{gateway.url}/hello/h2c"]:
        out = subprocess.run(["h2load", "-n", "3000", "-c", "10", "-m", "10", url], capture_output=True, text=True,
                             timeout=120).stdout
        assert "3000 succeeded, 0 failed, 0 errored" in out, out
        assert "status codes: 3000 2xx" in out, out


def h2_connection(port, validate=True):
    """A raw h2 connection; `validate=False` lets the client send what h2 itself would refuse."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=validate, normalize_outbound_headers=validate))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def read_events(sock, conn, until, timeout=10):
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            events.append("closed")
            break
        if not data:
            events.append("closed")
            break
        try:
            events += conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # The server ended the connection (GOAWAY) and kept talking (PING): it is over for us.
            events.append(f"protocol error: {error}")
            break
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                pass
        if until(events):
            break
    return events


def headers(path, port):
    return [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")]


def test_rapid_reset_flood_gets_the_connection_closed(gateway):
    sock, conn = h2_connection(gateway.port)
    read_events(sock, conn, lambda e: any(isinstance(x, h2.events.RemoteSettingsChanged) for x in e), timeout=2)
    closed = False
    try:
        for i in range(1000):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers("/slow?seconds=5", gateway.port))
            conn.reset_stream(stream)
            sock.sendall(conn.data_to_send())
    except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
        closed = True
    events = read_events(sock, conn, lambda e: "closed" in e or any(isinstance(x, h2.events.ConnectionTerminated) for x in e))
    goaway = [x for x in events if isinstance(x, h2.events.ConnectionTerminated)]
    terminated = conn.state_machine.state == h2.connection.ConnectionState.CLOSED
    assert closed or goaway or terminated or "closed" in events, "1000 rapid resets were tolerated"
    sock.close()
    assert httpx.get(f"{gateway.url}/hello/after").status_code == 200


def test_concurrent_stream_limit_is_enforced(gateway_factory, uvicorn_backend):
    gateway = gateway_factory(f"unix:{uvicorn_backend.socket_path}", server_extra="max_concurrent_streams = 5")
    sock, conn = h2_connection(gateway.port)
    events = read_events(sock, conn, lambda e: any(isinstance(x, h2.events.RemoteSettingsChanged) for x in e), timeout=3)
    settings = next(x for x in events if isinstance(x, h2.events.RemoteSettingsChanged))
    assert settings.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 5
    # Ignore the advertised limit on purpose: open 8 slow streams at once.
    conn.remote_settings.max_concurrent_streams = 100
    conn.remote_settings.acknowledge()
    streams = []
    for _ in range(8):
        streams.append(conn.get_next_available_stream_id())
        conn.send_headers(streams[-1], headers("/slow?seconds=1", gateway.port), end_stream=True)
    sock.sendall(conn.data_to_send())
    from hyperframe.frame import GoAwayFrame, HeadersFrame, RstStreamFrame
    frames = raw_frames(sock, lambda f: any(isinstance(x, GoAwayFrame) for x in f)
                        or sum(isinstance(x, RstStreamFrame) for x in f) >= 3, timeout=10)
    answered = {f.stream_id for f in frames if isinstance(f, HeadersFrame)}
    refused = {f.stream_id for f in frames if isinstance(f, RstStreamFrame)}
    goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert len(answered) <= 5
    # RFC 9113 5.1.2: the excess streams are refused, or the connection ends with PROTOCOL_ERROR.
    assert refused >= set(streams[5:]) or (goaway and goaway[0].error_code == 1), frames
    sock.close()
    assert httpx.get(f"{gateway.url}/hello/after").status_code == 200


def raw_frames(sock, until, timeout=10):
    """Reads frames with hyperframe directly: the h2 state machine refuses frames after a
    GOAWAY, while HTTP/2 lets streams below its last-stream-id finish."""
    from hyperframe.frame import Frame
    buffer = b""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(frames):
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9:9 + length]))
            frames.append(frame)
            buffer = buffer[9 + length:]
    return frames


def test_graceful_shutdown_sends_goaway_and_finishes_streams(gateway):
    from hpack import Decoder
    from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame
    sock, conn = h2_connection(gateway.port)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers("/slow?seconds=1.5", gateway.port), end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(0.4)
    gateway.signal(signal.SIGTERM)

    def stream_ended(frames):
        return any(isinstance(f, DataFrame) and f.stream_id == stream and "END_STREAM" in f.flags for f in frames)

    frames = raw_frames(sock, stream_ended)
    assert any(isinstance(f, GoAwayFrame) for f in frames), frames
    decoder = Decoder()
    statuses = [dict(decoder.decode(f.data)).get(":status") for f in frames if isinstance(f, HeadersFrame) and f.stream_id == stream]
    assert statuses == ["200"], frames
    body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == stream)
    assert body == b'{"slept":true}'
    assert stream_ended(frames)
    assert gateway.wait(timeout=15) == 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_chromium_loads_a_python_page_that_fetches_a_native_route_over_h2(tls_gateway, pki, tmp_path):
    url = f"https://localhost:{tls_gateway.tls_port}/page"
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert "Served by Python" in result.stdout, result.stderr[-2000:]
    assert "native:ACME:2:2" in result.stdout, result.stdout
    log = tls_gateway.log()
    assert '"GET /page HTTP/2.0" 200' in log and '"GET /orderbook/ACME?n=2 HTTP/2.0" 200' in log
