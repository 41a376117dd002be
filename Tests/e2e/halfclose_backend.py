"""A raw upgrade backend on a Unix socket for the TCP half-close tests.

GET /server-first: answers 101, sends bytes, then shuts its write side at once
(the bytes and the EOF arrive together), and records everything the client sends
afterwards in <record> until the client's EOF.
GET /client-first: answers 101, reads until the client's EOF, then answers with the
byte count and a SHA-256 of what it read, and closes.
"""

import asyncio
import hashlib
import sys

SOCKET, RECORD = sys.argv[1], sys.argv[2]
SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ", 2)[1]
    if path == b"/server-first":
        writer.write(SWITCH + b"server bytes, then EOF")
        writer.write_eof()
        await writer.drain()
        received = await reader.read()  # until the client's EOF
        with open(RECORD, "wb") as record:
            record.write(received)
    elif path == b"/client-first":
        writer.write(SWITCH)
        await writer.drain()
        received = await reader.read()
        writer.write(b"got %d bytes, sha256 %s" % (len(received), hashlib.sha256(received).hexdigest().encode()))
        await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_unix_server(serve, SOCKET)
    async with server:
        await server.serve_forever()


asyncio.run(main())
