import ApusProxy
import Testing

@testable import ApusServer

@Suite("HTTP/1.1 request head framing")
struct HTTP1RequestHeadTests {
    private func scan(_ text: String) -> (HTTP1RequestHead.Scan, [HTTP1RequestHead.Field], [UInt8]) {
        let bytes = Array(text.utf8)
        var fields: [HTTP1RequestHead.Field] = []
        let result = bytes.withUnsafeBytes { HTTP1RequestHead.scan($0, fields: &fields, maxFields: 100) }
        return (result, fields, bytes)
    }

    private func text(_ bytes: [UInt8], _ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }

    @Test func framesACanonicalHeadInPlace() throws {
        let request = "POST /a/b?x=1 HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\nX-Request-ID: abc\r\nX-Pad:  v v \r\n\r\nhello"
        let (result, fields, bytes) = scan(request)
        guard case .complete(let head) = result else {
            Issue.record("not framed: \(result)")
            return
        }
        #expect(text(bytes, head.method) == "POST")
        #expect(text(bytes, head.target) == "/a/b?x=1")
        #expect(head.minorVersion == 1 && head.keepAlive)
        #expect(head.contentLength == 5)
        #expect(head.length == request.utf8.count - 5)
        #expect(head.requestID.map { text(bytes, $0) } == "abc")
        #expect(fields.map { text(bytes, $0.name) } == ["Host", "Content-Length", "X-Request-ID", "X-Pad"])
        #expect(fields.map { text(bytes, $0.value) } == ["example", "5", "abc", "v v"])
    }

    @Test func everyPrefixOfAHeadIsIncomplete() {
        let request = "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"
        let bytes = Array(request.utf8)
        for length in 0..<bytes.count {
            var fields: [HTTP1RequestHead.Field] = []
            let result = bytes[..<length].withUnsafeBytes { HTTP1RequestHead.scan($0, fields: &fields, maxFields: 100) }
            guard case .incomplete = result else {
                Issue.record("prefix of \(length) bytes gave \(result)")
                return
            }
        }
    }

    @Test func keepAliveFollowsVersionAndConnection() {
        let cases: [(String, Bool)] = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nHost: a\r\nconnection: foo, Close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ]
        for (request, keepAlive) in cases {
            guard case .complete(let head) = scan(request).0 else {
                Issue.record("not framed: \(request)")
                continue
            }
            #expect(head.keepAlive == keepAlive, "\(request)")
        }
    }

    /// Shapes whose framing another parser could read differently: they must be left to the codec.
    @Test(arguments: [
        "GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET /x HTTP/1.1\nHost: a\n\n",
        "GET /x HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX: a\u{1}b\r\n\r\n",
        "GET  /x HTTP/1.1\r\n\r\n",
        "\r\nGET /x HTTP/1.1\r\n\r\n",
        "get /x HTTP/1.1\r\n\r\n",
        "GET x HTTP/1.1\r\n\r\n",
        "GET http://a/x HTTP/1.1\r\n\r\n",
        "GET /x HTTP/2.0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        "GET /x HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n",
        "GET /x\u{7F} HTTP/1.1\r\n\r\n",
    ])
    func leavesAnythingNonCanonicalToTheCodec(_ request: String) {
        guard case .unframeable = scan(request).0 else {
            Issue.record("framed a non-canonical head: \(request.debugDescription)")
            return
        }
    }

    @Test func tooManyFieldsAreLeftToTheCodec() {
        var request = "GET / HTTP/1.1\r\nHost: a\r\n"
        for index in 0..<100 { request += "X-\(index): v\r\n" }
        request += "\r\n"
        guard case .unframeable = scan(request).0 else {
            Issue.record("framed 101 fields")
            return
        }
    }
}
