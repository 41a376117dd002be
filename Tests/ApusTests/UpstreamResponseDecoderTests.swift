@testable import ApusProxy
@testable import ApusServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// Apus's backend response decoder must hand the proxy the same response parts
/// NIO's `HTTPResponseDecoder` does, however the bytes are split, and refuse
/// what a proxy must not pass on.
/// Records what Apus's backend connection handler (`UpstreamHandler`) hands the
/// exchange: response parts, as the decoder delivers them, and errors.
final class UpstreamRecorder: UpstreamDelegate {
    var parts: [UpstreamResponsePart] = []
    var errors: [any Error] = []
    func upstreamRead(_ part: UpstreamResponsePart) { parts.append(part) }
    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(_ writable: Bool) {}
    func upstreamClosed() {}
    func upstreamError(_ error: any Error) { errors.append(error) }
    var upstreamMayRead: Bool { true }
}

@Suite("Backend response decoder")
struct UpstreamResponseDecoderTests {
    enum Event: Equatable {
        case head(HTTPResponseHead)
        case body([UInt8])
        case end(HTTPHeaders?)
        case error(String)
    }

    /// Sends one request per method, feeds `response` in pieces of `split` bytes
    /// (then the end of the connection, if `close`), and returns the parts that came
    /// out, with adjacent body parts merged: from Apus's `UpstreamHandler` (`apus`),
    /// or from NIO's HTTP/1 client codec.
    func decode(apus: Bool, _ methods: [HTTPMethod], _ response: String, split: Int, close: Bool = false) throws -> [Event] {
        let channel = EmbeddedChannel()
        let recorder = UpstreamRecorder()
        if apus {
            let handler = UpstreamHandler()
            handler.delegate = recorder
            try channel.pipeline.syncOperations.addHandler(handler)
            for method in methods {
                handler.send(.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
                handler.send(.end(nil))
            }
        } else {
            try channel.pipeline.syncOperations.addHandlers([
                HTTPRequestEncoder(), ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
            ])
            for method in methods {
                channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")), promise: nil)
                channel.write(HTTPClientRequestPart.end(nil), promise: nil)
            }
        }
        channel.flush()
        while try channel.readOutbound(as: IOData.self) != nil {}

        var events: [Event] = []
        func drain() throws {
            // NIO's parts (from its decoder) and Apus's (from the recorder), in one form.
            var parts: [HTTPClientResponsePart] = []
            while let part = try channel.readInbound(as: HTTPClientResponsePart.self) { parts.append(part) }
            for part in recorder.parts {
                switch part {
                case .head(let head): parts.append(.head(head.head))
                case .body(let buffer): parts.append(.body(buffer))
                case .end(let trailers): parts.append(.end(trailers))
                }
            }
            for part in parts {
                switch part {
                case .head(let head): events.append(.head(head))
                case .body(let buffer):
                    if case .body(let earlier) = events.last {
                        events[events.count - 1] = .body(earlier + buffer.readableBytesView)
                    } else {
                        events.append(.body(Array(buffer.readableBytesView)))
                    }
                case .end(let trailers): events.append(.end(trailers))
                }
            }
            recorder.parts.removeAll()
            for error in recorder.errors { events.append(.error("\(error)")) }
            recorder.errors.removeAll()
        }
        let bytes = Array(response.utf8)
        var offset = 0
        while offset < bytes.count {
            let piece = bytes[offset..<min(offset + split, bytes.count)]
            offset += piece.count
            do {
                try channel.writeInbound(ByteBuffer(bytes: piece))
            } catch {
                try drain()
                events.append(.error("\(error)"))
                _ = try? channel.finish()
                return events
            }
            if !recorder.errors.isEmpty {
                // Apus's handler reports a response it refuses to the exchange and closes the connection.
                try drain()
                _ = try? channel.finish()
                return events
            }
        }
        if close { channel.pipeline.fireChannelInactive() }
        try drain()
        _ = try? channel.finish()
        return events
    }

    @Test(arguments: [1, 3, 1 << 20])
    func sameResponsePartsAsNIOsDecoder(split: Int) throws {
        let cases: [([HTTPMethod], String, Bool)] = [
            ([.GET], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Mixed: Case\r\n\r\nhello", false),
            ([.GET], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            ([.GET], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", false),
            ([.GET], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-Checksum: abc\r\n\r\n", false),
            ([.GET], "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
            ([.GET], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the connection ends", true),
            ([.GET], "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", false),
            ([.GET], "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", false),
            ([.GET], "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"1\"\r\n\r\n", false),
            ([.HEAD], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            ([.HEAD], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            ([.POST], "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", false),
            ([.GET], "HTTP/1.1 502 \r\ncontent-length: 1\r\n\r\nx", false),
            ([.GET, .GET], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", false),
            ([.GET], "HTTP/1.1 200 OK\r\nServer: uvicorn\r\nX-Obs: caf\u{e9}\r\nContent-Length: 3\r\n\r\nabc", false),
        ]
        for (methods, response, close) in cases {
            let expected = try decode(apus: false, methods, response, split: split, close: close)
            let actual = try decode(apus: true, methods, response, split: split, close: close)
            #expect(actual == expected, "\(response.debugDescription)")
            #expect(!actual.contains { if case .error = $0 { true } else { false } }, "\(response.debugDescription)")
        }
    }

    @Test func linesMayEndInABareLineFeedAndValuesLoseSurroundingWhitespace() throws {
        let events = try decode(apus: true, [.GET], "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: \t b c \t\n\nhi", split: 1 << 20)
        let headers: HTTPHeaders = ["Content-Length": "2", "X-A": "b c"]
        #expect(events == [.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), .body(Array("hi".utf8)), .end(nil)])
    }

    @Test func anUnknownStatusCodeKeepsItsReasonPhrase() throws {
        let events = try decode(apus: true, [.GET], "HTTP/1.1 299 Fine\r\nContent-Length: 0\r\n\r\n", split: 1 << 20)
        let status = HTTPResponseStatus.custom(code: 299, reasonPhrase: "Fine")
        #expect(events == [.head(HTTPResponseHead(version: .http1_1, status: status, headers: ["Content-Length": "0"])), .end(nil)])
    }

    @Test(arguments: [1, 1 << 20])
    func refusesWhatAProxyMustNotPassOn(split: Int) throws {
        let cases: [(String, String)] = [
            ("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n", "obs-fold"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", "more than one Content-Length"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nhi", "not a number"),
            ("HTTP/2 200\r\n\r\n", "status line"),
            ("HTTP/1.1 20 OK\r\n\r\n", "three digits"),
            ("HTTP/1.1 200 OK\r\nX-A: a\u{1}b\r\n\r\n", "control byte"),
            ("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "not a token"),
            ("HTTP/1.1 200 OK\r\nX-A: b\rX-B: c\r\n\r\n", "CR without LF"),
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "switched protocols"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n", "answer no request"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "start with its size"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n", "not followed by a line break"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "transfer coding other than chunked"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", "transfer coding other than chunked"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "more than one Transfer-Encoding"),
        ]
        for (response, reason) in cases {
            let events = try decode(apus: true, [.GET], response, split: split)
            guard case .error(let message) = events.last else {
                Issue.record("accepted \(response.debugDescription): \(events)")
                continue
            }
            #expect(message.contains(reason), "\(response.debugDescription): \(message)")
        }
    }

    @Test func refusesAHeadOver80KiB() throws {
        let response = "HTTP/1.1 200 OK\r\nX-Big: " + String(repeating: "a", count: 81 * 1024) + "\r\n\r\n"
        let events = try decode(apus: true, [.GET], response, split: 4096)
        guard case .error(let message) = events.last else {
            Issue.record("accepted a head over 80 KiB")
            return
        }
        #expect(message.contains("80 KiB"))
    }

    @Test func byteRulesAgreeWithTheFrontHandlers() {
        for byte in UInt8.min...UInt8.max {
            #expect(HTTPSyntax.isTokenByte(byte) == HeaderRules.isTokenByte(byte), "byte \(byte)")
        }
        let bytes = Array("Content-LENGTH chunked CHUNKEd chunkeD@".utf8)
        bytes.withUnsafeBytes { raw in
            #expect(HTTPSyntax.equalsLowercase(raw, 0..<14, "content-length"))
            #expect(HTTPSyntax.equalsLowercase(raw, 15..<22, "chunked"))
            #expect(HTTPSyntax.equalsLowercase(raw, 23..<30, "chunked"))
            #expect(!HTTPSyntax.equalsLowercase(raw, 31..<39, "chunked`"))  // "@" is not an upper-case "`"
            #expect(!HTTPSyntax.equalsLowercase(raw, 31..<38, "chunkee"))
        }
    }
}
