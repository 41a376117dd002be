@testable import ApusServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// The HTTP/1.1 codec path with Apus's response encoder must put exactly the bytes
/// on the wire that NIO's own server pipeline does, for the same requests and answers.
@Suite("HTTP/1.1 response encoder")
struct HTTP1ResponseEncoderTests {
    /// Sends `request` into a pipeline, answers with `parts`, and returns every byte written.
    func bytes(apus: Bool, request: String, parts: [HTTPServerResponsePart]) throws -> [UInt8] {
        let channel = EmbeddedChannel()
        if apus {
            // What a connection the front handler handed over has behind it.
            try channel.pipeline.syncOperations.addHandler(HTTP1ResponseEncoder())
            try HTTPPipelines.addHTTP1Decoding(channel.pipeline.syncOperations, decoderPosition: .first, decoderLimits: .init())
        } else {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: true, withServerUpgrade: nil, withErrorHandling: true,
                withOutboundHeaderValidation: false, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: .init())
        }
        _ = try? channel.writeInbound(ByteBuffer(string: request))
        while case .some(.some) = try? channel.readInbound(as: HTTPServerRequestPart.self) {}
        for part in parts {
            // A body for a HEAD answer is refused by both; the bytes are what matters.
            channel.write(part, promise: nil)
        }
        channel.flush()
        var out: [UInt8] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { Issue.record("unexpected file region"); continue }
            out += buffer.readableBytesView
        }
        _ = try? channel.finish()
        return out
    }

    @Test func sameBytesAsNIOsServerPipeline() throws {
        func head(_ status: HTTPResponseStatus, _ headers: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPServerResponsePart {
            .head(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(headers)))
        }
        let body = HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello")))
        let get = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
        let cases: [(String, [HTTPServerResponsePart])] = [
            (get, [head(.ok, [("content-length", "5"), ("X-Mixed", "Case")]), body, .end(nil)]),
            (get, [head(.ok, [("content-type", "text/plain")]), body, body, .end(["x-checksum": "abc"])]),
            (get, [head(.ok, [("content-type", "text/plain")]), body, .end(nil)]),
            (get, [head(.noContent, [("content-length", "5"), ("transfer-encoding", "chunked")]), .end(nil)]),
            (get, [head(.notModified, [("etag", "\"1\"")]), .end(nil)]),
            // Framing fields in any case are dropped or replaced as NIO does.
            (get, [head(.ok, [("Content-Length", "5"), ("X-A", "b"), ("Transfer-Encoding", "chunked")]), body, .end(nil)]),
            (get, [head(.ok, [("Transfer-Encoding", "gzip"), ("X-A", "b")]), body, .end(nil)]),
            (get, [head(.noContent, [("Content-Length", "0"), ("X-A", "b"), ("TRANSFER-ENCODING", "chunked")]), .end(nil)]),
            (get, [head(.custom(code: 299, reasonPhrase: "Fine"), [("content-length", "5")]), body, .end(nil)]),
            (get, [head(.badGateway, [("content-length", "5"), ("connection", "close")]), body, .end(nil)]),
            ("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", [head(.ok, [("content-length", "5")]), body, .end(nil)]),
            ("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", [head(.ok, [("content-type", "text/plain")]), body, .end(nil)]),
            ("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
             [head(.continue, []), head(.created, [("content-length", "5")]), body, .end(nil)]),
            ("GET /x HTTP/1.0\r\n\r\n", [head(.ok, [("content-type", "text/plain")], version: .http1_0), body, .end(nil)]),
            ("GET /x HTTP/1.1\r\nHost: a\r\n\r\nHEAD /y HTTP/1.1\r\nHost: a\r\n\r\n",
             [head(.ok, [("content-length", "5")]), body, .end(nil), head(.ok, [("content-length", "5")]), body, .end(nil)]),
            // What the decoder refuses is answered by the gateway (JSON error), not NIO: see Tests/e2e.
        ]
        for (request, parts) in cases {
            let ours = try bytes(apus: true, request: request, parts: parts)
            let nios = try bytes(apus: false, request: request, parts: parts)
            #expect(ours == nios, "\(String(decoding: ours, as: UTF8.self))\nvs\n\(String(decoding: nios, as: UTF8.self))")
            #expect(!ours.isEmpty)
        }
    }
}
