/// The header rules every path that writes or reads HTTP/1 heads shares: the
/// front handler's parser, its response writer, and the codec path's native
/// responses. Generic over the byte collection, so received bytes and Swift
/// strings (`.utf8`) are checked by the same code.
enum HeaderRules {
    /// RFC 9110 `tchar`: what a method or a header name is made of.
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
        default: return false
        }
    }

    /// A header name a handler may send: one or more token characters.
    static func isValidName(_ name: some Collection<UInt8>) -> Bool {
        !name.isEmpty && name.allSatisfy(isTokenByte)
    }

    /// A header value a handler may send: no CR, LF or NUL, nothing that could end the line or the head early.
    static func isValidValue(_ value: some Collection<UInt8>) -> Bool {
        !value.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }
    }

    /// Framing and connection headers the gateway writes itself, replacing a handler's.
    static func isGatewayOwned(_ name: some Collection<UInt8>) -> Bool {
        switch name.count {
        case 4: return equalsLowercase(name, "date")
        case 10: return equalsLowercase(name, "connection") || equalsLowercase(name, "keep-alive")
        case 14: return equalsLowercase(name, "content-length")
        case 17: return equalsLowercase(name, "transfer-encoding")
        default: return false
        }
    }

    /// Whether `bytes` equal the lower-case ASCII `word`, ignoring ASCII case.
    static func equalsLowercase(_ bytes: some Collection<UInt8>, _ word: StaticString) -> Bool {
        guard bytes.count == word.utf8CodeUnitCount else { return false }
        var expected = word.utf8Start
        for var byte in bytes {
            if byte >= 0x41 && byte <= 0x5A { byte |= 0x20 }
            if byte != expected.pointee { return false }
            expected += 1
        }
        return true
    }
}
