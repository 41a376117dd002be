@testable import ApusProxy
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// Apus's backend request encoder must put exactly NIO's bytes on the wire.
@Suite("Upstream request encoder")
struct UpstreamRequestEncoderTests {
    /// Writes the parts through Apus's backend connection handler (`apus`) or NIO's
    /// encoder and returns every byte that left.
    func bytes(apus: Bool, _ parts: [HTTPClientRequestPart]) throws -> [UInt8] {
        let channel: EmbeddedChannel
        if apus {
            let handler = UpstreamHandler()
            channel = EmbeddedChannel(handler: handler)
            for part in parts { handler.send(part) }
            handler.flush()
        } else {
            channel = EmbeddedChannel(handler: HTTPRequestEncoder())
            for part in parts { try channel.writeOutbound(part) }
        }
        var out: [UInt8] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { Issue.record("unexpected file region"); continue }
            out += buffer.readableBytesView
        }
        _ = try channel.finish()
        return out
    }

    @Test func sameBytesAsNIOsEncoder() throws {
        func head(_ method: HTTPMethod, _ headers: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
            HTTPRequestHead(version: version, method: method, uri: "/items?q=1", headers: HTTPHeaders(headers))
        }
        let body = ByteBuffer(string: "hello")
        let trailers: HTTPHeaders = ["x-checksum": "abc"]
        let cases: [[HTTPClientRequestPart]] = [
            [.head(head(.GET, [("host", "x"), ("x-request-id", "r1")])), .end(nil)],
            [.head(head(.POST, [("host", "x")])), .body(.byteBuffer(body)), .body(.byteBuffer(ByteBuffer())), .end(nil)],
            [.head(head(.POST, [("host", "x"), ("content-length", "5"), ("transfer-encoding", "chunked")])), .body(.byteBuffer(body)), .end(nil)],
            [.head(head(.PUT, [("host", "x")])), .body(.byteBuffer(body)), .end(trailers)],
            [.head(head(.TRACE, [("content-length", "5")])), .end(nil)],
            // Framing fields in any case are dropped or replaced as NIO does.
            [.head(head(.TRACE, [("Content-Length", "5"), ("Host", "x"), ("Transfer-Encoding", "chunked")])), .end(nil)],
            [.head(head(.PUT, [("Transfer-Encoding", "gzip"), ("Host", "x")])), .body(.byteBuffer(body)), .end(nil)],
            [.head(head(.GET, [("Content-Length", "5"), ("Transfer-Encoding", "chunked")])), .body(.byteBuffer(body)), .end(nil)],
            [.head(head(.GET, [("transfer-encoding", "chunked")])), .body(.byteBuffer(body)), .end(nil)],
            [.head(head(.DELETE, [("content-length", "5")])), .body(.byteBuffer(body)), .end(nil)],
            [.head(head(.POST, [("host", "x")], version: .http1_0)), .body(.byteBuffer(body)), .end(nil)],
            [.head(head(.RAW(value: "PURGE"), [("host", "x"), ("X-Mixed-Case", "Value")])), .end(nil)],
        ]
        for parts in cases {
            let ours = try bytes(apus: true, parts)
            let nios = try bytes(apus: false, parts)
            #expect(ours == nios, "\(String(decoding: ours, as: UTF8.self)) vs \(String(decoding: nios, as: UTF8.self))")
        }
    }
}
