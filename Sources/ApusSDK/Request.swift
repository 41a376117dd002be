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
    public var method: String { received.string(received.parts.method) }
    /// The normalised, percent-decoded path: `"/quote/ACME"`.
    public var path: String { received.string(received.parts.path) }
    /// The raw query string without `?`, empty when there is none.
    public var query: String { received.string(received.parts.query) }
    /// The request id the gateway logs and returns in `X-Request-ID`.
    public var requestID: String { received.string(received.parts.requestID) }
    /// The client's address, `"127.0.0.1:51234"`, or empty when unknown.
    public var remoteAddress: String { received.string(received.parts.remoteAddress) }

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
        case .received(let received):
            (0..<received.fieldCount).map { index in
                let field = received.field(index)
                return (received.string(field.name), received.string(field.value))
            }
        }
    }

    /// The first value for `name`, compared case-insensitively (ASCII letters:
    /// header names are ASCII tokens; compared in place, not lowercased copies).
    public subscript(_ name: String) -> String? {
        switch storage {
        case .list(let fields):
            return fields.first { sameIgnoringASCIICase($0.name.utf8, name.utf8) }?.value
        case .received(let received):
            for index in 0..<received.fieldCount {
                let field = received.field(index)
                if received.withBytes(field.name, { sameIgnoringASCIICase($0, name.utf8) }) { return received.string(field.value) }
            }
            return nil
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
/// what the host lent. One allocation holds it all: where the parts lie in the
/// header, then each header field's place and the bytes in the tail (a byte array
/// and a field array of their own were two more allocations and releases per
/// request). Immutable once made, so copies of a request share it across threads
/// (hence `@unchecked`: `ManagedBuffer` is not `Sendable` itself).
struct ReceivedBytes: @unchecked Sendable {
    /// Where the request's parts lie in the text.
    struct Parts {
        var method = 0..<0
        var path = 0..<0
        var query = 0..<0
        var requestID = 0..<0
        var remoteAddress = 0..<0
        var fieldCount = 0
    }

    private final class Storage: ManagedBuffer<Parts, UInt8> {}

    private let storage: Storage

    /// A field's place in the tail: name start and end, value start and end, as
    /// `Int32`s (a request head is at most a few hundred KiB).
    private static let fieldStride = 4 * MemoryLayout<Int32>.size

    /// Allocates room for `fieldCount` header fields and `textCount` bytes of text;
    /// `fill` writes the fields' places (with `setField`) and the text, and says where the parts lie.
    init(
        fieldCount: Int, textCount: Int, _ fill: (_ fields: UnsafeMutableRawPointer, _ text: UnsafeMutablePointer<UInt8>) -> Parts
    ) {
        let buffer = Storage.create(minimumCapacity: fieldCount * Self.fieldStride + textCount) { _ in Parts() }
        // `create` called on a subclass makes an instance of that subclass.
        storage = unsafeDowncast(buffer, to: Storage.self)
        storage.withUnsafeMutablePointers { parts, tail in
            parts.pointee = fill(UnsafeMutableRawPointer(tail), tail + fieldCount * Self.fieldStride)
        }
    }

    /// Records field `index`'s place, for `init`'s `fill`.
    static func setField(_ index: Int, name: Range<Int>, value: Range<Int>, in fields: UnsafeMutableRawPointer) {
        let place = fields + index * fieldStride
        place.storeBytes(of: Int32(truncatingIfNeeded: name.lowerBound), toByteOffset: 0, as: Int32.self)
        place.storeBytes(of: Int32(truncatingIfNeeded: name.upperBound), toByteOffset: 4, as: Int32.self)
        place.storeBytes(of: Int32(truncatingIfNeeded: value.lowerBound), toByteOffset: 8, as: Int32.self)
        place.storeBytes(of: Int32(truncatingIfNeeded: value.upperBound), toByteOffset: 12, as: Int32.self)
    }

    /// The request parts given as strings (a request made in Swift, as tests do).
    init(method: String, path: String, query: String, requestID: String, remoteAddress: String) {
        let texts = [method, path, query, requestID, remoteAddress]
        self.init(fieldCount: 0, textCount: texts.reduce(0) { $0 + $1.utf8.count }) { _, text in
            var offset = 0
            let ranges = texts.map { part -> Range<Int> in
                let start = offset
                for byte in part.utf8 {
                    text[offset] = byte
                    offset += 1
                }
                return start..<offset
            }
            return Parts(method: ranges[0], path: ranges[1], query: ranges[2], requestID: ranges[3], remoteAddress: ranges[4])
        }
    }

    var parts: Parts { storage.header }
    var fieldCount: Int { storage.header.fieldCount }

    /// Field `index`'s name and value, as places in the text.
    func field(_ index: Int) -> (name: Range<Int>, value: Range<Int>) {
        storage.withUnsafeMutablePointerToElements { tail in
            let place = UnsafeRawPointer(tail) + index * Self.fieldStride
            func bound(_ offset: Int) -> Int { Int(place.loadUnaligned(fromByteOffset: offset, as: Int32.self)) }
            return (bound(0)..<bound(4), bound(8)..<bound(12))
        }
    }

    /// The text at `range`, lent to `body`.
    func withBytes<Result>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        storage.withUnsafeMutablePointers { parts, tail in
            body(UnsafeBufferPointer(start: tail + parts.pointee.fieldCount * Self.fieldStride + range.lowerBound, count: range.count))
        }
    }

    /// The bytes at `range` as a string (invalid UTF-8 becomes U+FFFD).
    func string(_ range: Range<Int>) -> String {
        withBytes(range) { String(decoding: $0, as: UTF8.self) }
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
