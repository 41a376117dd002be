/// Byte-level HTTP/1 syntax on raw bytes, non-generic so that callers in other
/// modules pay one plain call (a generic helper called across modules ran
/// unspecialised: callgrind showed it at 2,000 instructions a request). The
/// per-byte checks of the front handler's parser stay in `ApusServer`'s
/// `HeaderRules`, inlined there.
package enum HTTPSyntax {
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
}
