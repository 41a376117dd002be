"""A raw HTTP/1.1 backend on a Unix socket that answers each path with fixed
bytes, well-formed or not, so tests can check how the gateway reads backend
responses. The connection closes after the answer, except for
/keepalive-once: answered after 0.3 s and kept open, and the next request on that
connection is met by closing it (what a backend does when its keep-alive timeout
ends just as a request arrives); and /echo-head, answered with the request head
it received.
"""

import asyncio
import sys

ANSWERS = {
    # Well-formed, in the shapes a real backend may send.
    b"/until-close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody framed by the end of the connection",
    b"/trailers": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                   b"6;name=ext\r\nchunk1\r\n6\r\nchunk2\r\n0\r\nX-Checksum: abc123\r\n\r\n"),
    b"/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 7\nX-Shape: bare-lf\n\nbare lf",
    b"/custom-reason": b"HTTP/1.1 299 Mostly Fine\r\nContent-Length: 2\r\n\r\nok",
    b"/hop-named": (b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
                    b"X-Kept: yes\r\nContent-Length: 2\r\n\r\nok"),
    b"/interim": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    # What a proxy must not pass on.
    b"/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: b\r\n folded\r\nContent-Length: 2\r\n\r\nok",
    b"/cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"/gzip-coded": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"/not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    b"/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
}


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ", 2)[1]
    if path == b"/echo-head":
        # The request head as it arrived, as the body; a header value with a byte over 0x7F (obs-text).
        writer.write(b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: %d\r\n\r\n" % len(head) + head)
        await writer.drain()
    elif path == b"/keepalive-once":
        await asyncio.sleep(0.3)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
    else:
        writer.write(ANSWERS.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_unix_server(serve, sys.argv[1])
    async with server:
        await server.serve_forever()


asyncio.run(main())
