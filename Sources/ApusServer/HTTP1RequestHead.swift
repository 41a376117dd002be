import ApusProxy

/// One HTTP/1.1 request head, located in place in the bytes it was parsed from
/// (every range is an offset from the start of those bytes).
///
/// The parser behind it (`HTTP1RequestHead.scan`) accepts only the canonical form
/// of a request head that clients actually send: `METHOD SP origin-target SP
/// HTTP/1.x CRLF`, `name: value CRLF` lines, an empty line. Anything else — bare
/// LF, obs-fold, a space before a colon, control bytes, `CONNECT`, a `#` in the
/// target, a `Transfer-Encoding`, an upgrade, duplicate or odd `Content-Length`s,
/// a repeated `Host` (or none in HTTP/1.1) — is `.unframeable`, and the
/// connection's bytes then go to NIO's full HTTP/1 codec (llhttp) unchanged. So
/// where this parser frames a request, both parsers agree on where it ends; where
/// they might not, this one steps aside instead of guessing.
struct HTTP1RequestHead {
    /// A header line's name and value (value without surrounding whitespace).
    typealias Field = HTTPSyntax.Field

    var method: Range<Int> = 0..<0
    var target: Range<Int> = 0..<0
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    var minorVersion = 1
    /// Bytes of the head, including the empty line that ends it.
    var length = 0
    /// The body's length (0 without `Content-Length`).
    var contentLength = 0
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    var keepAlive = true
    /// An `Expect` header: the gateway answers `100-continue` itself.
    var expects = false
    /// Where a client-supplied `X-Request-ID` is.
    var requestID: Range<Int>?

    /// What a scan of the buffered bytes found.
    enum Scan {
        /// No complete head yet.
        case incomplete
        /// A complete head whose framing is certain; its fields are in the array passed to `scan`.
        case complete(HTTP1RequestHead)
        /// Not in the canonical form: leave the connection to the full codec.
        case unframeable
    }

    /// Parses the head at the start of `bytes`; header fields go into `fields`
    /// (cleared first), which the caller keeps to reuse its storage.
    static func scan(_ bytes: UnsafeRawBufferPointer, fields: inout [Field], maxFields: Int) -> Scan {
        fields.removeAll(keepingCapacity: true)
        var head = HTTP1RequestHead()
        let end = bytes.count
        var index = 0

        // Request line.
        while index < end, isUpper(bytes[index]) { index += 1 }
        guard index < end else { return .incomplete }
        guard index > 0, index <= 16, bytes[index] == space else { return .unframeable }
        head.method = 0..<index
        // CONNECT goes to the gateway, which refuses it (its target is not a path anyway).
        if index == connect.count, bytes.starts(with: connect) { return .unframeable }
        index += 1
        let targetStart = index
        // A `#` (a fragment, which clients do not send) goes to the gateway, which drops it.
        while index < end, bytes[index] > space, bytes[index] < 0x7F, bytes[index] != hash { index += 1 }
        guard index < end else { return .incomplete }
        guard index > targetStart, bytes[index] == space, bytes[targetStart] == slash else { return .unframeable }
        head.target = targetStart..<index
        index += 1
        // "HTTP/1.x\r\n"
        guard end - index >= 10 else { return .incomplete }
        guard bytes[index] == 0x48, bytes[index + 1] == 0x54, bytes[index + 2] == 0x54, bytes[index + 3] == 0x50,
            bytes[index + 4] == slash, bytes[index + 5] == 0x31, bytes[index + 6] == 0x2E,
            bytes[index + 7] == 0x31 || bytes[index + 7] == 0x30, bytes[index + 8] == cr, bytes[index + 9] == lf
        else { return .unframeable }
        head.minorVersion = bytes[index + 7] == 0x31 ? 1 : 0
        head.keepAlive = head.minorVersion == 1
        index += 10

        var sawContentLength = false
        var hosts = 0
        var connectionKeepAlive = false
        var connectionClose = false
        while true {
            guard index < end else { return .incomplete }
            if bytes[index] == cr {
                guard index + 1 < end else { return .incomplete }
                guard bytes[index + 1] == lf else { return .unframeable }
                head.length = index + 2
                break
            }
            guard fields.count < maxFields else { return .unframeable }
            // Name: one or more token characters, then the colon (no space before it; no obs-fold).
            let nameStart = index
            while index < end, HeaderRules.isTokenByte(bytes[index]) { index += 1 }
            guard index < end else { return .incomplete }
            guard index > nameStart, bytes[index] == colon else { return .unframeable }
            let name = nameStart..<index
            index += 1
            while index < end, bytes[index] == space || bytes[index] == tab { index += 1 }
            let valueStart = index
            // Visible bytes, obs-text and spaces run on; anything else is looked at once.
            while index < end {
                let byte = bytes[index]
                if byte >= space && byte != 0x7F || byte == tab {
                    index += 1
                } else if byte == cr {
                    break
                } else {
                    return .unframeable
                }
            }
            guard index + 1 < end else { return .incomplete }
            guard bytes[index + 1] == lf else { return .unframeable }
            var valueEnd = index
            while valueEnd > valueStart, bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab { valueEnd -= 1 }
            let value = valueStart..<valueEnd
            index += 2
            fields.append(Field(name: name, value: value))

            switch classify(bytes, name) {
            case .contentLength:
                guard !sawContentLength, let length = HTTPSyntax.decimal(bytes, value) else { return .unframeable }
                sawContentLength = true
                head.contentLength = length
            case .transferEncoding, .upgrade:
                return .unframeable
            case .connection:
                for token in tokens(bytes, value) {
                    if HeaderRules.equalsLowercase(bytes[token], "close") {
                        connectionClose = true
                    } else if HeaderRules.equalsLowercase(bytes[token], "keep-alive") {
                        connectionKeepAlive = true
                    } else if HeaderRules.equalsLowercase(bytes[token], "upgrade") {
                        return .unframeable
                    }
                }
            case .host:
                hosts += 1
            case .expect:
                head.expects = true
            case .requestID:
                // The first, as `HTTPHeaders.first(name:)` finds it.
                if head.requestID == nil { head.requestID = value }
            case .other:
                break
            }
        }
        // Two Hosts, or none in HTTP/1.1: the gateway answers 400 (RFC 9112 3.2) from NIO's codec.
        guard hosts == 1 || hosts == 0 && head.minorVersion == 0 else { return .unframeable }
        if connectionClose {
            head.keepAlive = false
        } else if connectionKeepAlive {
            head.keepAlive = true
        }
        return .complete(head)
    }

    // MARK: bytes

    private static let space: UInt8 = 0x20
    private static let tab: UInt8 = 0x09
    private static let cr: UInt8 = 0x0D
    private static let lf: UInt8 = 0x0A
    private static let colon: UInt8 = 0x3A
    private static let slash: UInt8 = 0x2F
    private static let hash: UInt8 = 0x23
    private static let connect = Array("CONNECT".utf8)

    private static func isUpper(_ byte: UInt8) -> Bool { byte >= 0x41 && byte <= 0x5A }

    private enum KnownHeader {
        case contentLength, transferEncoding, upgrade, connection, host, expect, requestID, other
    }

    /// The headers that decide framing or handling, found by length first so most names cost one compare.
    private static func classify(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>) -> KnownHeader {
        switch name.count {
        case 14: return HeaderRules.equalsLowercase(bytes[name], "content-length") ? .contentLength : .other
        case 17: return HeaderRules.equalsLowercase(bytes[name], "transfer-encoding") ? .transferEncoding : .other
        case 7: return HeaderRules.equalsLowercase(bytes[name], "upgrade") ? .upgrade : .other
        case 10: return HeaderRules.equalsLowercase(bytes[name], "connection") ? .connection : .other
        case 4: return HeaderRules.equalsLowercase(bytes[name], "host") ? .host : .other
        case 6: return HeaderRules.equalsLowercase(bytes[name], "expect") ? .expect : .other
        case 12: return HeaderRules.equalsLowercase(bytes[name], "x-request-id") ? .requestID : .other
        default: return .other
        }
    }

    /// The comma-separated tokens of a list value, without surrounding whitespace.
    private static func tokens(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> [Range<Int>] {
        var result: [Range<Int>] = []
        var start = range.lowerBound
        for index in range.lowerBound...range.upperBound where index == range.upperBound || bytes[index] == 0x2C {
            var lower = start
            var upper = index
            while lower < upper, bytes[lower] == space || bytes[lower] == tab { lower += 1 }
            while upper > lower, bytes[upper - 1] == space || bytes[upper - 1] == tab { upper -= 1 }
            if lower < upper { result.append(lower..<upper) }
            start = index + 1
        }
        return result
    }
}

/// What the HTTP/1.1 front handler's parse found in a request head's fields, given
/// to the gateway with a head it proxies at once (no native route): the gateway
/// reads these instead of the head's `HTTPHeaders`, which are then not made.
struct FramedHeadFacts {
    /// The first `X-Request-ID` value, if any (the gateway checks it).
    let requestID: String?
    /// Whether the connection stays open after this request (`Connection` and the version).
    let keepAlive: Bool
    /// Whether a body follows (a `Content-Length` over 0; the front handler frames no other).
    let hasBody: Bool
}
