/// A JSON value, written with literals: `["ok": true, "items": [1, 2]]`.
/// Objects keep their keys in the order written.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (lhs: JSON, rhs: JSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }
}

extension JSON: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(elements) }
}

/// A value the `JSONWriter` can write directly, without building a `JSON` tree.
public protocol JSONWritable {
    /// Appends this value's JSON text.
    func write(to writer: inout JSONWriter)
}

extension String: JSONWritable {
    @inlinable public func write(to writer: inout JSONWriter) { writer.appendString(self) }
}
extension Int: JSONWritable {
    @inlinable public func write(to writer: inout JSONWriter) { writer.appendInteger(self) }
}
extension Double: JSONWritable {
    @inlinable public func write(to writer: inout JSONWriter) { writer.appendDouble(self) }
}
extension Bool: JSONWritable {
    @inlinable public func write(to writer: inout JSONWriter) { writer.appendRaw(self ? "true" : "false") }
}
extension Optional: JSONWritable where Wrapped: JSONWritable {
    @inlinable public func write(to writer: inout JSONWriter) {
        if let value = self { value.write(to: &writer) } else { writer.appendRaw("null") }
    }
}
extension JSON: JSONWritable {
    public func write(to writer: inout JSONWriter) {
        switch self {
        case .null: writer.appendRaw("null")
        case .bool(let value): value.write(to: &writer)
        case .int(let value): writer.appendInteger(value)
        case .double(let value): writer.appendDouble(value)
        case .string(let value): writer.appendString(value)
        case .array(let values):
            writer.array { array in for value in values { array.element(value) } }
        case .object(let fields):
            writer.object { object in for (key, value) in fields { object.field(key, value) } }
        }
    }
}

/// A fast, allocation-light JSON writer that appends compact UTF-8 straight into
/// one byte array: no intermediate tree, no Foundation.
///
/// The output matches Python's `json.dumps(v, separators=(",", ":"), ensure_ascii=False)`
/// and `orjson.dumps(v)` for strings, integers, booleans and null; doubles use
/// the shortest round-trip form, as both do for ordinary magnitudes.
public struct JSONWriter: Sendable {
    /// The JSON text written so far.
    public var bytes: [UInt8]
    @usableFromInline var needsSeparator = false

    /// Creates a writer, reserving `capacity` bytes up front.
    @inlinable
    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Writes one value (at the top level or as an array element).
    @inlinable
    public mutating func element(_ value: some JSONWritable) {
        separate()
        value.write(to: &self)
        needsSeparator = true
    }

    /// Writes `"key":value` inside an object.
    @inlinable
    public mutating func field(_ key: String, _ value: some JSONWritable) {
        self.key(key)
        value.write(to: &self)
        needsSeparator = true
    }

    /// Writes `"key":{…}` inside an object.
    @inlinable
    public mutating func field(_ key: String, object body: (inout JSONWriter) throws -> Void) rethrows {
        self.key(key)
        try object(body)
    }

    /// Writes `"key":[…]` inside an object.
    @inlinable
    public mutating func field(_ key: String, array body: (inout JSONWriter) throws -> Void) rethrows {
        self.key(key)
        try array(body)
    }

    /// Writes an object; `body` writes its fields.
    @inlinable
    public mutating func object(_ body: (inout JSONWriter) throws -> Void) rethrows {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsSeparator = false
        try body(&self)
        bytes.append(UInt8(ascii: "}"))
        needsSeparator = true
    }

    /// Writes an array; `body` writes its elements.
    @inlinable
    public mutating func array(_ body: (inout JSONWriter) throws -> Void) rethrows {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsSeparator = false
        try body(&self)
        bytes.append(UInt8(ascii: "]"))
        needsSeparator = true
    }

    /// Writes `"key":` inside an object; the next `element`, `object` or `array` is its value.
    @inlinable
    public mutating func key(_ key: String) {
        separate()
        appendString(key)
        bytes.append(UInt8(ascii: ":"))
        needsSeparator = false
    }

    @inlinable @inline(__always)
    mutating func separate() {
        if needsSeparator { bytes.append(UInt8(ascii: ",")) }
    }

    /// Appends text as it is; for literals such as `true`.
    @inlinable
    public mutating func appendRaw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// Appends a decimal integer without going through `String`.
    @inlinable
    public mutating func appendInteger(_ value: Int) {
        if value == 0 {
            bytes.append(UInt8(ascii: "0"))
            return
        }
        var magnitude = value.magnitude
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let start = bytes.count
        while magnitude > 0 {
            bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10))
            magnitude /= 10
        }
        bytes[start...].reverse()
    }

    /// Appends a double in shortest round-trip form; NaN and infinities, which
    /// JSON cannot hold, become `null`.
    @inlinable
    public mutating func appendDouble(_ value: Double) {
        guard value.isFinite else {
            appendRaw("null")
            return
        }
        bytes.append(contentsOf: value.description.utf8)
    }

    /// Appends a quoted, escaped string.
    @inlinable
    public mutating func appendString(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            var runStart = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index]))
                runStart = index + 1
                switch byte {
                case UInt8(ascii: "\""): appendRaw("\\\"")
                case UInt8(ascii: "\\"): appendRaw("\\\\")
                case 0x0A: appendRaw("\\n")
                case 0x0D: appendRaw("\\r")
                case 0x09: appendRaw("\\t")
                case 0x08: appendRaw("\\b")
                case 0x0C: appendRaw("\\f")
                default:
                    appendRaw("\\u00")
                    bytes.append(byte >> 4 < 10 ? UInt8(ascii: "0") + byte >> 4 : UInt8(ascii: "a") + byte >> 4 - 10)
                    bytes.append(byte & 0xF < 10 ? UInt8(ascii: "0") + byte & 0xF : UInt8(ascii: "a") + (byte & 0xF) - 10)
                }
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<utf8.count]))
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
