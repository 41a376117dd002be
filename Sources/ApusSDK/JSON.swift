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
/// one growing buffer: no intermediate tree, no Foundation.
///
/// It owns its memory and is non-copyable, so each append is a bounds check and a
/// store (no reference counting, no copy-on-write check); `bytes` copies the text
/// out once at the end.
///
/// The output matches Python's `json.dumps(v, separators=(",", ":"), ensure_ascii=False)`
/// and `orjson.dumps(v)` for strings, integers, booleans and null; doubles use
/// the shortest round-trip form, as both do for ordinary magnitudes.
public struct JSONWriter: ~Copyable, @unchecked Sendable {
    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var count = 0
    @usableFromInline var capacity: Int
    @usableFromInline var needsSeparator = false

    /// Creates a writer, reserving `capacity` bytes up front.
    @inlinable
    public init(capacity: Int = 256) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// The JSON text written so far.
    @inlinable
    public var bytes: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    /// Makes room for `extra` more bytes.
    @inlinable @inline(__always)
    mutating func reserve(_ extra: Int) {
        if count &+ extra > capacity { grow(count &+ extra) }
    }

    @usableFromInline
    mutating func grow(_ needed: Int) {
        let newCapacity = max(needed, capacity &* 2)
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newBase.update(from: base, count: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    /// Appends one byte.
    @inlinable @inline(__always)
    public mutating func appendByte(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count &+= 1
    }

    /// Appends bytes as they are.
    @inlinable @inline(__always)
    public mutating func appendBytes(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        UnsafeMutableRawPointer(base + count).copyMemory(from: source, byteCount: bytes.count)
        count &+= bytes.count
    }

    /// Writes one value (at the top level or as an array element).
    @inlinable
    public mutating func element(_ value: some JSONWritable) {
        separate()
        value.write(to: &self)
        needsSeparator = true
    }

    /// Writes `"key":value` inside an object.
    @inlinable @_disfavoredOverload
    public mutating func field(_ key: String, _ value: some JSONWritable) {
        self.key(key)
        value.write(to: &self)
        needsSeparator = true
    }

    /// Writes `"key":value` inside an object, for a literal key (the usual case: its bytes
    /// are at hand, no `String` to look into).
    @inlinable @inline(__always)
    public mutating func field(_ key: StaticString, _ value: some JSONWritable) {
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
        appendByte(UInt8(ascii: "{"))
        needsSeparator = false
        try body(&self)
        appendByte(UInt8(ascii: "}"))
        needsSeparator = true
    }

    /// Writes an array; `body` writes its elements.
    @inlinable
    public mutating func array(_ body: (inout JSONWriter) throws -> Void) rethrows {
        separate()
        appendByte(UInt8(ascii: "["))
        needsSeparator = false
        try body(&self)
        appendByte(UInt8(ascii: "]"))
        needsSeparator = true
    }

    /// Writes `"key":` inside an object; the next `element`, `object` or `array` is its value.
    @inlinable @_disfavoredOverload
    public mutating func key(_ key: String) {
        appendQuoted(key, comma: needsSeparator, colon: true)
        needsSeparator = false
    }

    /// Writes `"key":` for a literal key. Inlined into the handler, where the key's bytes
    /// are a constant: the compiler settles the escaping check and copies them as words.
    @inlinable @inline(__always)
    public mutating func key(_ key: StaticString) {
        if key.hasPointerRepresentation {
            appendQuoted(UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount), comma: needsSeparator, colon: true)
        } else {
            let comma = needsSeparator
            key.withUTF8Buffer { appendQuoted($0, comma: comma, colon: true) }
        }
        needsSeparator = false
    }

    @inlinable @inline(__always)
    mutating func separate() {
        if needsSeparator { appendByte(UInt8(ascii: ",")) }
    }

    /// Appends text as it is; for literals such as `true`.
    @inlinable
    public mutating func appendRaw(_ text: StaticString) {
        appendBytes(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Appends a decimal integer without going through `String`: digit pairs from a
    /// table, written backwards straight into the buffer's free space.
    @inlinable
    public mutating func appendInteger(_ value: Int) {
        var magnitude = value.magnitude
        let length = Self.decimalDigits(magnitude) &+ (value < 0 ? 1 : 0)
        reserve(length)
        var position = count &+ length
        let pairs = UnsafeRawPointer(Self.digitPairs)
        let destination = UnsafeMutableRawPointer(base)
        // Four digits a round: one 64-bit division, then two cheap 32-bit ones.
        while magnitude >= 10_000 {
            let four = UInt32(truncatingIfNeeded: magnitude % 10_000)
            magnitude /= 10_000
            position &-= 4
            destination.storeBytes(of: pairs.loadUnaligned(fromByteOffset: Int(four / 100) &* 2, as: UInt16.self), toByteOffset: position, as: UInt16.self)
            destination.storeBytes(of: pairs.loadUnaligned(fromByteOffset: Int(four % 100) &* 2, as: UInt16.self), toByteOffset: position &+ 2, as: UInt16.self)
        }
        if magnitude >= 100 {
            let pair = Int(truncatingIfNeeded: magnitude % 100) &* 2
            magnitude /= 100
            position &-= 2
            destination.storeBytes(of: pairs.loadUnaligned(fromByteOffset: pair, as: UInt16.self), toByteOffset: position, as: UInt16.self)
        }
        if magnitude >= 10 {
            let pair = Int(truncatingIfNeeded: magnitude) &* 2
            position &-= 2
            destination.storeBytes(of: pairs.loadUnaligned(fromByteOffset: pair, as: UInt16.self), toByteOffset: position, as: UInt16.self)
        } else {
            position &-= 1
            base[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude)
        }
        if value < 0 { base[count] = UInt8(ascii: "-") }
        count &+= length
    }

    /// "00" through "99", back to back (a literal: no lazy global to check per use).
    @usableFromInline
    static var digitPairs: UnsafePointer<UInt8> {
        ("00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899" as StaticString).utf8Start
    }

    /// The number of decimal digits of `value`: estimated from its bit width
    /// (log10(2) ≈ 1233/4096), then corrected with one comparison.
    @inlinable @inline(__always)
    static func decimalDigits(_ value: UInt) -> Int {
        let nonZero = value | 1  // 0 has one digit; setting bit 0 never crosses a power of ten
        let bits = UInt.bitWidth &- nonZero.leadingZeroBitCount
        let estimate = (bits &* 1233) >> 12  // the digit count, or one more
        return estimate &+ 1 &- (nonZero < powerOfTen(estimate) ? 1 : 0)
    }

    /// 10^exponent for 0...19 (a switch: a jump table, no global to initialise).
    @inlinable @inline(__always)
    static func powerOfTen(_ exponent: Int) -> UInt {
        switch exponent {
        case 0: return 1
        case 1: return 10
        case 2: return 100
        case 3: return 1_000
        case 4: return 10_000
        case 5: return 100_000
        case 6: return 1_000_000
        case 7: return 10_000_000
        case 8: return 100_000_000
        case 9: return 1_000_000_000
        case 10: return 10_000_000_000
        case 11: return 100_000_000_000
        case 12: return 1_000_000_000_000
        case 13: return 10_000_000_000_000
        case 14: return 100_000_000_000_000
        case 15: return 1_000_000_000_000_000
        case 16: return 10_000_000_000_000_000
        case 17: return 100_000_000_000_000_000
        case 18: return 1_000_000_000_000_000_000
        default: return 10_000_000_000_000_000_000
        }
    }

    /// Appends a double in shortest round-trip form (as Swift's `description` and
    /// Python's `repr` write it); NaN and infinities, which JSON cannot hold, become
    /// `null`. Values with at most two decimals (prices) take a fast path that
    /// writes the same digits without formatting a `String`.
    @inlinable
    public mutating func appendDouble(_ value: Double) {
        guard value.isFinite else {
            appendRaw("null")
            return
        }
        // If `cents / 100` (correctly rounded) gives back `value`, that decimal round-trips; below
        // 1e13 doubles are far closer together than 0.01, so no shorter decimal does.
        if value.magnitude < 1e13 {
            // Rounds half away from zero by truncation (no call to `round`); where adding the
            // half is itself rounded, the check below catches a wrong value.
            let cents = Int(value * 100 + (value < 0 ? -0.5 : 0.5))
            if Double(cents) / 100 == value {
                let whole = cents / 100
                let fraction = (cents % 100).magnitude
                if whole == 0 && value.sign == .minus { appendByte(UInt8(ascii: "-")) }
                appendInteger(whole)
                reserve(3)
                base[count] = UInt8(ascii: ".")
                base[count &+ 1] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: fraction / 10)
                count &+= 2
                if fraction % 10 != 0 {
                    base[count] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: fraction % 10)
                    count &+= 1
                }
                return
            }
        }
        var text = value.description
        text.withUTF8 { appendBytes(UnsafeRawBufferPointer($0)) }
    }

    /// Appends a quoted, escaped string.
    @inlinable
    public mutating func appendString(_ text: String) {
        appendQuoted(text, comma: false, colon: false)
    }

    /// Appends `"text"`, with a comma before it and a colon after it as asked (one
    /// reservation for a key's four parts). The common case, nothing to escape, copies
    /// a word at a time and checks each word with a few bit operations.
    @inlinable @inline(__always)
    mutating func appendQuoted(_ text: String, comma: Bool, colon: Bool) {
        // Borrows the bytes of native and small strings without copying or retaining the string.
        if text.utf8.withContiguousStorageIfAvailable({ appendQuoted($0, comma: comma, colon: colon) }) != nil { return }
        var text = text
        text.withUTF8 { appendQuoted($0, comma: comma, colon: colon) }
    }

    @inlinable @inline(__always)
    mutating func appendQuoted(_ utf8: UnsafeBufferPointer<UInt8>, comma: Bool, colon: Bool) {
        let length = utf8.count
        reserve(length &+ 4)  // quotes, comma and colon
        var start = count
        if comma {
            base[start] = UInt8(ascii: ",")
            start &+= 1
        }
        base[start] = UInt8(ascii: "\"")
        let destination = UnsafeMutableRawPointer(base + (start &+ 1))
        var clean = true
        if let source = UnsafeRawPointer(utf8.baseAddress) {
            // Whole words, the last one overlapping the one before; shorter strings as two
            // overlapping halves or three single bytes. No load reads outside the string.
            if length >= 8 {
                var offset = 0
                while offset &+ 8 < length {
                    let word = source.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                    destination.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
                    if Self.needsEscaping(word) { clean = false }
                    offset &+= 8
                }
                let last = source.loadUnaligned(fromByteOffset: length &- 8, as: UInt64.self)
                destination.storeBytes(of: last, toByteOffset: length &- 8, as: UInt64.self)
                if Self.needsEscaping(last) { clean = false }
            } else if length >= 4 {
                let first = source.loadUnaligned(as: UInt32.self)
                let last = source.loadUnaligned(fromByteOffset: length &- 4, as: UInt32.self)
                destination.storeBytes(of: first, as: UInt32.self)
                destination.storeBytes(of: last, toByteOffset: length &- 4, as: UInt32.self)
                clean = !Self.needsEscaping(UInt64(first) | UInt64(last) &<< 32)
            } else if length > 0 {
                let first = source.load(as: UInt8.self)
                let middle = source.load(fromByteOffset: length >> 1, as: UInt8.self)
                let last = source.load(fromByteOffset: length &- 1, as: UInt8.self)
                destination.storeBytes(of: first, as: UInt8.self)
                destination.storeBytes(of: middle, toByteOffset: length >> 1, as: UInt8.self)
                destination.storeBytes(of: last, toByteOffset: length &- 1, as: UInt8.self)
                // The other five bytes of the word are a letter, which needs no escaping.
                clean = !Self.needsEscaping(
                    UInt64(first) | UInt64(middle) &<< 8 | UInt64(last) &<< 16 | 0x4141_4141_4100_0000)
            }
        }
        guard clean else {
            // Nothing was counted yet: the comma goes in again and the string starts over.
            if comma { appendByte(UInt8(ascii: ",")) }
            appendEscaped(utf8)
            if colon { appendByte(UInt8(ascii: ":")) }
            return
        }
        var end = start &+ 1 &+ length
        base[end] = UInt8(ascii: "\"")
        end &+= 1
        if colon {
            base[end] = UInt8(ascii: ":")
            end &+= 1
        }
        count = end
    }

    /// Whether any of the word's eight bytes is a control character, `"` or `\`, the
    /// bytes JSON escapes. Each test is the classic "has a byte below n" bit trick, which
    /// is exact about whether such a byte exists; bytes of 0x80 and above never match.
    @inlinable @inline(__always)
    static func needsEscaping(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highBits: UInt64 = 0x8080_8080_8080_8080
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let control = (word &- ones &* 0x20) & ~word
        let isQuote = (quote &- ones) & ~quote
        let isBackslash = (backslash &- ones) & ~backslash
        return (control | isQuote | isBackslash) & highBits != 0
    }

    /// The slow path of `appendString`: a string with quotes, backslashes or control characters.
    @usableFromInline
    mutating func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        appendByte(UInt8(ascii: "\""))
        var runStart = 0
        for index in 0..<utf8.count {
            let byte = utf8[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            appendBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[runStart..<index]))
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
                appendByte(byte >> 4 < 10 ? UInt8(ascii: "0") + byte >> 4 : UInt8(ascii: "a") + byte >> 4 - 10)
                appendByte(byte & 0xF < 10 ? UInt8(ascii: "0") + byte & 0xF : UInt8(ascii: "a") + (byte & 0xF) - 10)
            }
        }
        appendBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[runStart..<utf8.count]))
        appendByte(UInt8(ascii: "\""))
    }
}
