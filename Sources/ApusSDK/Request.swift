/// A request as a native handler sees it.
///
/// The host lends its request data only for the call, so the SDK copies it once,
/// as bytes, before the handler runs; the text properties are decoded from those
/// bytes when they are read. A handler pays only for what it reads (most read a
/// path parameter or two, not every header), and may keep the request as long as
/// it likes.
public struct Request: Sendable {
    private let received: ReceivedBytes
    /// The request headers, in order, names lower-case.
    public let headers: Headers
    /// Values of the route's `{name}` segments, decoded.
    public let pathParameters: [String: String]
    /// The whole request body (at most the route's `max_body_size`).
    public let body: [UInt8]

    /// The method, upper-case: `"GET"`.
    public var method: String { received.string(received.method) }
    /// The normalised, percent-decoded path: `"/quote/ACME"`.
    public var path: String { received.string(received.path) }
    /// The raw query string without `?`, empty when there is none.
    public var query: String { received.string(received.query) }
    /// The request id the gateway logs and returns in `X-Request-ID`.
    public var requestID: String { received.string(received.requestID) }
    /// The client's address, `"127.0.0.1:51234"`, or empty when unknown.
    public var remoteAddress: String { received.string(received.remoteAddress) }

    /// Creates a request; the gateway does this for you, tests may too.
    public init(
        method: String, path: String, query: String = "", requestID: String = "",
        remoteAddress: String = "", headers: Headers = Headers(),
        pathParameters: [String: String] = [:], body: [UInt8] = []
    ) {
        self.init(
            received: ReceivedBytes(method: method, path: path, query: query, requestID: requestID, remoteAddress: remoteAddress),
            headers: headers, pathParameters: pathParameters, body: body)
    }

    init(received: ReceivedBytes, headers: Headers, pathParameters: [String: String], body: [UInt8]) {
        self.received = received
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
///
/// A request's headers stay the bytes the host sent until they are read: the
/// lookup compares names in place and decodes only the value it returns.
public struct Headers: Sendable, Sequence {
    private enum Storage: Sendable {
        case list([(name: String, value: String)])
        case received(ReceivedBytes)
    }

    private var storage: Storage

    /// Creates a header list.
    public init(_ fields: [(name: String, value: String)] = []) { storage = .list(fields) }

    init(received: ReceivedBytes) { storage = .received(received) }

    /// The fields in the order they arrived.
    public var fields: [(name: String, value: String)] {
        switch storage {
        case .list(let fields): fields
        case .received(let received): received.headers.map { (received.string($0.name), received.string($0.value)) }
        }
    }

    /// The first value for `name`, compared case-insensitively (ASCII letters:
    /// header names are ASCII tokens; compared in place, not lowercased copies).
    public subscript(_ name: String) -> String? {
        switch storage {
        case .list(let fields):
            return fields.first { sameIgnoringASCIICase($0.name.utf8, name.utf8) }?.value
        case .received(let received):
            guard let field = received.headers.first(where: { sameIgnoringASCIICase(received.bytes[$0.name], name.utf8) })
            else { return nil }
            return received.string(field.value)
        }
    }

    /// Appends a field.
    public mutating func add(_ name: String, _ value: String) {
        var list = fields
        storage = .list([])  // so that `list` is the only reference and appends in place
        list.append((name, value))
        storage = .list(list)
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

/// The text of a request (method, path, query, request id, client address and
/// header fields) as one run of bytes with where each part lies, copied once from
/// what the host lent. Immutable, so copies of a request share it across threads.
final class ReceivedBytes: Sendable {
    let bytes: [UInt8]
    let method: Range<Int>
    let path: Range<Int>
    let query: Range<Int>
    let requestID: Range<Int>
    let remoteAddress: Range<Int>
    let headers: [(name: Range<Int>, value: Range<Int>)]

    init(
        bytes: [UInt8], method: Range<Int>, path: Range<Int>, query: Range<Int>, requestID: Range<Int>,
        remoteAddress: Range<Int>, headers: [(name: Range<Int>, value: Range<Int>)]
    ) {
        self.bytes = bytes
        self.method = method
        self.path = path
        self.query = query
        self.requestID = requestID
        self.remoteAddress = remoteAddress
        self.headers = headers
    }

    /// The request parts given as strings (a request made in Swift, as tests do).
    convenience init(method: String, path: String, query: String, requestID: String, remoteAddress: String) {
        var bytes: [UInt8] = []
        func append(_ text: String) -> Range<Int> {
            let start = bytes.count
            bytes.append(contentsOf: text.utf8)
            return start..<bytes.count
        }
        let method = append(method), path = append(path), query = append(query)
        let requestID = append(requestID), remoteAddress = append(remoteAddress)
        self.init(
            bytes: bytes, method: method, path: path, query: query, requestID: requestID, remoteAddress: remoteAddress,
            headers: [])
    }

    /// The bytes at `range` as a string (invalid UTF-8 becomes U+FFFD).
    func string(_ range: Range<Int>) -> String {
        bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[range]), as: UTF8.self) }
    }
}

/// Whether two names are equal when ASCII letters are folded to lower case.
func sameIgnoringASCIICase<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
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
