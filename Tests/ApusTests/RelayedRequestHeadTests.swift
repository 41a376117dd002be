@testable import ApusProxy
@testable import ApusServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// A proxied request the HTTP/1.1 front handler framed has its head for the
/// backend written straight from the client's bytes (`UpstreamRequestHead.relaying`).
/// It must be exactly what the general path makes of the same request:
/// `makeUpstreamHead`, the gateway's trace context, and NIO's framing.
@Suite("Relayed request heads")
struct RelayedRequestHeadTests {
    /// The client's head as the front handler frames it: its bytes and field offsets.
    func framed(_ text: String) throws -> (HTTPRequestHead, ReceivedRequestHead) {
        let buffer = ByteBuffer(string: text)
        var fields: [HTTPSyntax.Field] = []
        let scan = buffer.withUnsafeReadableBytes { HTTP1RequestHead.scan($0, fields: &fields, maxFields: 100) }
        guard case .complete(let head) = scan else {
            Issue.record("the front handler does not frame \(text.debugDescription)")
            throw CancellationError()
        }
        let request = buffer.withUnsafeReadableBytes { bytes in
            HTTPRequestHead(
                version: HTTPVersion(major: 1, minor: head.minorVersion),
                method: HTTPMethod(rawValue: HTTPSyntax.string(bytes, head.method)),
                uri: HTTPSyntax.string(bytes, head.target), headers: HTTPSyntax.headers(bytes, fields))
        }
        return (request, ReceivedRequestHead(bytes: buffer.getSlice(at: 0, length: head.length)!, target: head.target, fields: fields))
    }

    /// What the general path sends: `GatewayHandler.upstreamHead`'s steps for a head without bytes.
    func general(_ head: HTTPRequestHead, client: ClientFacts, startTraces: Bool, traceparent: String) -> ([UInt8], String) {
        var upstream = makeUpstreamHead(head, requestID: "req-1", client: client)
        var traceID = ""
        if let value = upstream.headers.first(name: "traceparent"), let valid = traceIDIfValid(value) {
            traceID = valid
        } else if startTraces {
            upstream.headers.remove(name: "traceparent")
            upstream.headers.remove(name: "tracestate")
            upstream.headers.add(name: "traceparent", value: traceparent)
            traceID = String(traceparent.dropFirst(3).prefix(32))
        }
        let encoded = UpstreamRequestHead(encoding: upstream, allocator: ByteBufferAllocator())
        return (Array(encoded.bytes.readableBytesView) + (encoded.chunked ? [1] : [0]), traceID)
    }

    @Test func sameBytesAsTheGeneralPath() throws {
        let heads = [
            "GET /hello/x HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "GET /a?b=1 HTTP/1.1\r\nHost: h:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\nX-Request-ID: client-id\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: front\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: \r\n\r\n",
            "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\n\r\n",
            "POST /upload HTTP/1.1\r\nHost: h\r\n\r\n",
            "PUT /x HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
            "PATCH /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            "DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
            "TRACE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
            "PURGE /cache HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\ntracestate: a=1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTraceparent: not-valid\r\nTracestate: a=1\r\nTraceState: b=2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: traceparent\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\nX-Obs: caf\u{e9}\r\nX-Empty: \r\n\r\n",
        ]
        let local = try SocketAddress(ipAddress: "10.0.0.5", port: 8080)
        let clients = [
            ClientFacts(peerAddress: "192.0.2.7", peerIsTrusted: false, scheme: "http", localAddress: local),
            ClientFacts(peerAddress: "192.0.2.7", peerIsTrusted: true, scheme: "https", localAddress: local),
            ClientFacts(peerAddress: "", peerIsTrusted: false, scheme: "http", localAddress: nil),
            ClientFacts(peerAddress: "", peerIsTrusted: true, scheme: "http", localAddress: nil),
        ]
        let traceparent = "00-11111111111111111111111111111111-2222222222222222-01"
        for text in heads {
            let (head, received) = try framed(text)
            for client in clients {
                for startTraces in [true, false] {
                    let (expected, expectedTrace) = general(head, client: client, startTraces: startTraces, traceparent: traceparent)
                    let relayed = UpstreamRequestHead.relaying(
                        received, method: head.method, requestID: "req-1", client: client, startTraces: startTraces,
                        makeTraceparent: { traceparent }, allocator: ByteBufferAllocator())
                    let actual = Array(relayed.head.bytes.readableBytesView) + (relayed.head.chunked ? [1] : [0])
                    #expect(
                        actual == expected,
                        "\(text.debugDescription) trusted \(client.peerIsTrusted) peer \(client.peerAddress) traces \(startTraces):\n\(String(decoding: actual, as: UTF8.self))\nvs\n\(String(decoding: expected, as: UTF8.self))"
                    )
                    #expect(relayed.traceID == expectedTrace)
                    #expect(relayed.head.method == head.method)
                }
            }
        }
    }
}
