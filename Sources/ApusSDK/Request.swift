/// A request as a native handler sees it: plain Swift values, copied out of the
/// host's borrowed C data, so a handler may keep it as long as it likes.
public struct Request: Sendable {
    /// The method, upper-case: `"GET"`.
    public let method: String
    /// The normalised, percent-decoded path: `"/quote/ACME"`.
    public let path: String
    /// The raw query string without `?`, empty when there is none.
    public let query: String
    /// The request id the gateway logs and returns in `X-Request-ID`.
    public let requestID: String
    /// The client's address, `"127.0.0.1:51234"`, or empty when unknown.
    public let remoteAddress: String
    /// The request headers, in order, names lower-case.
    public let headers: Headers
    /// Values of the route's `{name}` segments, decoded.
    public let pathParameters: [String: String]
    /// The whole request body (at most the route's `max_body_size`).
    public let body: [UInt8]

    /// Creates a request; the gateway does this for you, tests may too.
    public init(
        method: String, path: String, query: String = "", requestID: String = "",
        remoteAddress: String = "", headers: Headers = Headers(),
        pathParameters: [String: String] = [:], body: [UInt8] = []
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.requestID = requestID
        self.remoteAddress = remoteAddress
        self.headers = headers
        self.pathParameters = pathParameters
        self.body = body
    }

    /// The body decoded as UTF-8 (invalid bytes become U+FFFD).
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The first value of a query parameter, percent-decoded (`+` is a space).
    public func queryParameter(_ name: String) -> String? {
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if percentDecoded(parts[0]) == name {
                return parts.count > 1 ? percentDecoded(parts[1]) : ""
            }
        }
        return nil
    }
}

/// Header fields in order, looked up without regard to case.
public struct Headers: Sendable, Sequence {
    /// The fields in the order they arrived.
    public private(set) var fields: [(name: String, value: String)]

    /// Creates a header list.
    public init(_ fields: [(name: String, value: String)] = []) { self.fields = fields }

    /// The first value for `name`, compared case-insensitively (ASCII letters:
    /// header names are ASCII tokens; compared in place, not lowercased copies).
    public subscript(_ name: String) -> String? {
        fields.first { sameIgnoringASCIICase($0.name, name) }?.value
    }

    /// Appends a field.
    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

/// Whether two names are equal when ASCII letters are folded to lower case.
func sameIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
    let a = a.utf8, b = b.utf8
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x != y {
        let lower = x | 0x20
        guard lower == y | 0x20, lower >= UInt8(ascii: "a"), lower <= UInt8(ascii: "z") else { return false }
    }
    return true
}

/// Percent-decodes a query component; `+` stands for a space there.
func percentDecoded(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.utf8.count)
    var iterator = text.utf8.makeIterator()
    while let byte = iterator.next() {
        switch byte {
        case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
        case UInt8(ascii: "%"):
            if let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        default: bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
