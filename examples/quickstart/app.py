"""The quickstart's Python service: an ordinary Starlette (ASGI) app.

Apus sits in front of it. `GET /orderbook/{symbol}` is served natively by
handlers/orderbook.swift; every other route reaches this app over a Unix socket.
`/py/orderbook/{symbol}` is the same endpoint in Python, for comparison: both
produce byte-identical bodies. `/account/orderbook/{symbol}` must stay in Python
(it checks an API key) yet imports the native route's Swift serializer with
`apus.load`, so its body is the native route's, byte for byte.
"""

import asyncio
import hashlib
import json
import os
from pathlib import Path

import orjson

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import orderbook


async def index(request: Request) -> Response:
    return PlainTextResponse("Hello from Python behind Apus\n")


async def hello(request: Request) -> Response:
    return JSONResponse({"hello": request.path_params["name"], "from": "python"})


async def py_orderbook(request: Request) -> Response:
    symbol = request.path_params["symbol"]
    try:
        count = int(request.query_params.get("n", "200"))
        body = orderbook.render(symbol, count)
    except ValueError as error:
        return JSONResponse({"error": str(error)}, status_code=422)
    return Response(body, media_type="application/json")


async def py_orderbook_orjson(request: Request) -> Response:
    """The same endpoint serialized with orjson: the fastest Python can go here."""
    symbol = request.path_params["symbol"]
    try:
        body = orderbook.render(symbol, int(request.query_params.get("n", "200")), dumps=orjson.dumps)
    except ValueError as error:
        return JSONResponse({"error": str(error)}, status_code=422)
    return Response(body, media_type="application/json")


API_KEY = os.environ.get("QUICKSTART_API_KEY", "demo-key")
_swift_orderbook = None


async def swift_orderbook():
    """handlers/orderbook.swift as a Python module, compiled (cached) on first use."""
    global _swift_orderbook
    if _swift_orderbook is None:
        import apus  # the apus Python package: pip install ./python
        source = Path(__file__).with_name("handlers") / "orderbook.swift"
        _swift_orderbook = await asyncio.to_thread(apus.load, source)
    return _swift_orderbook


async def account_orderbook(request: Request) -> Response:
    """Python-only logic (an API key check) around the native route's Swift serializer."""
    if request.headers.get("x-api-key") != API_KEY:
        return JSONResponse({"error": "missing or wrong X-API-Key"}, status_code=401)
    module = await swift_orderbook()
    try:
        body = module.orderbook_json(request.path_params["symbol"], int(request.query_params.get("n", "200")))
    except ValueError as error:
        return JSONResponse({"error": str(error)}, status_code=422)
    return Response(body, media_type="application/json")


async def headers(request: Request) -> Response:
    """Echoes what the backend received, so forwarding headers can be checked."""
    return JSONResponse({
        "headers": {k.decode(): v.decode() for k, v in request.scope["headers"]},
        "path": request.scope["path"],
        "raw_path": request.scope.get("raw_path", b"").decode(),
        "query": request.scope["query_string"].decode(),
        "client": request.client.host if request.client else None,
    })


async def upload(request: Request) -> Response:
    """Streams the request body in, hashing as it goes."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})


def pattern_block(index: int, size: int) -> bytes:
    seed = hashlib.sha256(str(index).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def download(request: Request) -> Response:
    """Streams `size` deterministic bytes in 64 KiB chunks (chunked encoding)."""
    size = int(request.query_params.get("size", "1048576"))
    block = 65536

    async def chunks():
        sent = 0
        index = 0
        while sent < size:
            part = pattern_block(index, min(block, size - sent))
            sent += len(part)
            index += 1
            yield part

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def sse(request: Request) -> Response:
    """Server-sent events, one every `interval` seconds."""
    count = int(request.query_params.get("n", "5"))
    interval = float(request.query_params.get("interval", "0.3"))

    async def events():
        for number in range(count):
            yield f"id: {number}\ndata: {json.dumps({'n': number})}\n\n"
            await asyncio.sleep(interval)

    return StreamingResponse(events(), media_type="text/event-stream")


PAGE = """<!doctype html>
<html><head><title>Apus quickstart</title></head>
<body>
<h1>Served by Python</h1>
<pre id="result">loading</pre>
<script>
// The HTML comes from Python; the JSON below comes from the native Swift route.
fetch("/orderbook/ACME?n=2").then(r => r.json()).then(book => {
  document.getElementById("result").textContent = "native:" + book.symbol + ":" + book.count + ":" + book.orders.length;
}).catch(e => { document.getElementById("result").textContent = "error:" + e; });
</script>
</body></html>
"""


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("seconds", "2")))
    return JSONResponse({"slept": True})


async def ws_echo(websocket: WebSocket) -> None:
    """Echoes text and binary messages until the client closes."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


async def ws_goodbye(websocket: WebSocket) -> None:
    """Answers one message, then closes from the server side with 4000."""
    await websocket.accept()
    await websocket.send_text("goodbye " + await websocket.receive_text())
    await websocket.close(code=4000, reason="server says bye")


async def ws_ticker(websocket: WebSocket) -> None:
    """Sends a tick every 100 ms until the connection goes."""
    await websocket.accept()
    number = 0
    try:
        while True:
            await websocket.send_text(f"tick {number}")
            number += 1
            await asyncio.sleep(0.1)
    except (WebSocketDisconnect, RuntimeError):
        return


async def ws_deny(websocket: WebSocket) -> None:
    """Refuses the handshake: the client gets 403."""
    await websocket.close(code=1008)


app = Starlette(routes=[
    Route("/", index),
    Route("/page", page),
    Route("/hello/{name}", hello),
    Route("/py/orderbook/{symbol}", py_orderbook),
    Route("/orderbook/{symbol}", py_orderbook),
    Route("/py/orderbook-orjson/{symbol}", py_orderbook_orjson),
    Route("/account/orderbook/{symbol}", account_orderbook),
    Route("/headers", headers, methods=["GET", "POST"]),
    Route("/upload", upload, methods=["POST", "PUT"]),
    Route("/download", download),
    Route("/sse", sse),
    Route("/slow", slow),
    WebSocketRoute("/ws/echo", ws_echo),
    WebSocketRoute("/ws/goodbye", ws_goodbye),
    WebSocketRoute("/ws/ticker", ws_ticker),
    WebSocketRoute("/ws/deny", ws_deny),
])
