import NIOHTTP1

/// Byte-level HTTP/1 syntax on raw bytes, shared by the front handler's request
/// parser and the backend response decoder; non-generic so that callers in other
/// modules pay one plain call (a generic helper called across modules ran
/// unspecialised: callgrind showed it at 2,000 instructions a request). The
/// per-byte checks of the front handler's parser stay in `ApusServer`'s
/// `HeaderRules`, inlined there.
package enum HTTPSyntax {
    /// A header line's name and value, as offsets into the bytes it was parsed
    /// from (the value without surrounding whitespace).
    package struct Field {
        package var name: Range<Int>
        package var value: Range<Int>

        package init(name: Range<Int>, value: Range<Int>) {
            self.name = name
            self.value = value
        }
    }

    /// The fields as NIO's `HTTPHeaders`, names and values as received (made once:
    /// `HTTPHeaders.add` would check every name again).
    package static func headers(_ bytes: UnsafeRawBufferPointer, _ fields: [Field]) -> HTTPHeaders {
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(fields.count)
        for field in fields { pairs.append((string(bytes, field.name), string(bytes, field.value))) }
        return HTTPHeaders(pairs)
    }

    /// The bytes at `range` as a string (invalid UTF-8 repaired, as NIO's decoders do).
    package static func string(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// RFC 9110 `tchar` as a bit set over ASCII: `!#$%&'*+-.^_`|~`, digits and letters.
    private static let tokenBelow64: UInt64 = 0x03FF_6CFA_0000_0000
    private static let token64To127: UInt64 = 0x57FF_FFFF_C7FF_FFFE

    /// Whether `byte` may appear in a method or a header name.
    package static func isTokenByte(_ byte: UInt8) -> Bool {
        byte < 64 ? tokenBelow64 >> byte & 1 == 1 : byte < 128 && token64To127 >> (byte - 64) & 1 == 1
    }

    /// A `Content-Length` value: 1–15 digits and nothing else.
    package static func decimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 15 else { return nil }
        var value = 0
        for index in range {
            let digit = bytes[index] &- 0x30
            guard digit < 10 else { return nil }
            value = value * 10 + Int(digit)
        }
        return value
    }

    /// Whether `bytes[range]` spell the lower-case ASCII `word`, ignoring ASCII case.
    package static func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ word: StaticString) -> Bool {
        guard range.count == word.utf8CodeUnitCount else { return false }
        var expected = word.utf8Start
        for index in range {
            if bytes[index] | (bytes[index] &- 0x41 < 26 ? 0x20 : 0) != expected.pointee { return false }
            expected += 1
        }
        return true
    }

    /// Whether two ranges of `bytes` spell the same ASCII text, ignoring ASCII case.
    package static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        for (x, y) in zip(a, b) {
            let left = bytes[x], right = bytes[y]
            if left != right, left | (left &- 0x41 < 26 ? 0x20 : 0) != right | (right &- 0x41 < 26 ? 0x20 : 0) { return false }
        }
        return true
    }

    /// The comma-separated elements of a field value (`close, Upgrade`), without
    /// surrounding spaces and tabs; empty elements are skipped.
    package static func tokens(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) -> [Range<Int>] {
        var tokens: [Range<Int>] = []
        var start = value.lowerBound
        while start <= value.upperBound {
            var end = start
            while end < value.upperBound, bytes[end] != UInt8(ascii: ",") { end += 1 }
            var first = start, last = end
            while first < last, bytes[first] == 0x20 || bytes[first] == 0x09 { first += 1 }
            while last > first, bytes[last - 1] == 0x20 || bytes[last - 1] == 0x09 { last -= 1 }
            if first < last { tokens.append(first..<last) }
            start = end + 1
        }
        return tokens
    }
}
