@testable import ApusProxy
@testable import ApusServer
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// A proxied response's head is written for an HTTP/1.1 client straight from the
/// backend's bytes (`UpstreamResponseHead.clientHead`). It must be exactly what the
/// general path makes of the same head: `makeDownstreamHead`, HSTS, and the
/// response encoder's framing (which also decides how the body is framed).
@Suite("Relayed response heads")
struct RelayedResponseHeadTests {
    /// The head Apus's backend connection handler reads from `response`, answering a `method` request.
    func receivedHead(_ response: String, method: HTTPMethod) throws -> UpstreamResponseHead {
        try receivedHead(ByteBuffer(string: response), method: method)
    }

    func receivedHead(_ response: ByteBuffer, method: HTTPMethod) throws -> UpstreamResponseHead {
        let handler = UpstreamHandler()
        let recorder = UpstreamRecorder()
        handler.delegate = recorder
        let channel = EmbeddedChannel(handler: handler)
        handler.send(.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
        handler.send(.end(nil))
        try channel.writeInbound(response)
        _ = try? channel.finish()
        #expect(recorder.errors.isEmpty, "backend response refused: \(recorder.errors)")
        let head = recorder.parts.lazy.compactMap { part -> UpstreamResponseHead? in
            if case .head(let head) = part { return head }
            return nil
        }.first
        return try #require(head, "no head in \(String(buffer: response).debugDescription)")
    }

    /// The bytes the client gets for a head, a two-byte body part and the end, written
    /// on the relayed path (`relay`) or the general one.
    func clientBytes(
        _ head: UpstreamResponseHead, relay: Bool, method: HTTPMethod, version: HTTPVersion, keepAlive: Bool, hsts: String?
    ) throws -> [UInt8] {
        let encoder = HTTP1ResponseEncoder()
        let channel = EmbeddedChannel(handler: encoder)
        encoder.expectResponse(to: method)
        if relay {
            #expect(encoder.writeRelayedHead(head, version: version, requestID: "req-1", keepAlive: keepAlive, hsts: hsts))
        } else {
            var response = makeDownstreamHead(head.head, version: version, requestID: "req-1", keepAlive: keepAlive)
            if let hsts { response.headers.replaceOrAdd(name: "strict-transport-security", value: hsts) }
            try channel.writeOutbound(HTTPServerResponsePart.head(response))
        }
        if !method.isHEAD && head.status.mayHaveResponseBody {
            try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hi"))))
        }
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        var out: [UInt8] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data { out += buffer.readableBytesView }
        }
        _ = try channel.finish()
        return out
    }

    @Test func sameBytesAsTheGeneralPath() throws {
        let responses = [
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\nserver: uvicorn\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nDate: Sun, 29 Nov 2026 20:00:00 GMT\r\nCONTENT-LENGTH: 2\r\nX-Request-ID: from-backend\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nConnection: X-Secret , close\r\nX-Secret: 1\r\nx-secret: 2\r\nX-Kept: 3\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nTE: trailers\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: b\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"1\"\r\n\r\n",
            "HTTP/1.1 299 Fine\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 404 Whatever The Backend Says\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhi",
            "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: \t b c \t\nX-Empty:\n\nhi",
            "HTTP/1.1 201 Created\r\nLocation: /items/1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nX-Obs: caf\u{e9}\r\nContent-Length: 2\r\n\r\nhi",
        ]
        for response in responses {
            for method in [HTTPMethod.GET, .HEAD] {
                // An answer to HEAD has no body: the bytes after the head would answer no request.
                let end = response.range(of: "\r\n\r\n")?.upperBound ?? response.range(of: "\n\n")!.upperBound
                let head = try receivedHead(method.isHEAD ? String(response[..<end]) : response, method: method)
                for version in [HTTPVersion.http1_1, .http1_0] {
                    for keepAlive in [true, false] {
                        for hsts in [nil, "max-age=31536000"] {
                            let relayed = try clientBytes(head, relay: true, method: method, version: version, keepAlive: keepAlive, hsts: hsts)
                            let general = try clientBytes(head, relay: false, method: method, version: version, keepAlive: keepAlive, hsts: hsts)
                            #expect(
                                relayed == general,
                                "\(response.debugDescription) \(method) \(version) keepAlive \(keepAlive) hsts \(hsts ?? "-"):\n\(String(decoding: relayed, as: UTF8.self))\nvs\n\(String(decoding: general, as: UTF8.self))"
                            )
                        }
                    }
                }
            }
        }
    }

    @Test func valueBytesThatAreNotUTF8PassUnchanged() throws {
        // RFC 9110 allows obs-text (0x80-0xFF) in values; a `String` would turn 0xE9 into U+FFFD.
        var response = ByteBuffer(string: "HTTP/1.1 200 OK\r\nX-Latin: caf")
        response.writeInteger(UInt8(0xE9))
        response.writeString("\r\nContent-Length: 0\r\n\r\n")
        let head = try receivedHead(response, method: .GET)
        let bytes = try clientBytes(head, relay: true, method: .GET, version: .http1_1, keepAlive: true, hsts: nil)
        #expect(bytes.starts(with: Array("HTTP/1.1 200 OK\r\nX-Latin: caf".utf8) + [0xE9, 0x0D, 0x0A]))
    }

    @Test func keepAliveFollowsTheBackendsConnectionField() throws {
        let cases: [(String, Bool)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", true),
        ]
        for (response, keepAlive) in cases {
            let head = try receivedHead(response, method: .GET)
            #expect(head.isKeepAlive == keepAlive, "\(response.debugDescription)")
            #expect(head.head.isKeepAlive == keepAlive, "NIO: \(response.debugDescription)")
        }
    }
}
