/// A request path in the one form routing trusts: percent-decoded, dot segments
/// resolved, repeated slashes merged.
///
/// Native routes match this form, so `/%71uote/ACME`, `//quote/ACME` and
/// `/x/../quote/ACME` all reach `GET /quote/{symbol}`. Paths whose meaning
/// differs between decoders are refused rather than guessed: an encoded `/`
/// (`%2F`) or NUL, a malformed escape, or `..` above the root. The request
/// target itself is forwarded to the backend as the client sent it.
public struct NormalizedPath: Sendable, Equatable {
    /// The decoded segments; empty for `/`.
    public let segments: [String]
    /// Whether the path ended with `/` (other than the root).
    public let hasTrailingSlash: Bool

    /// The normalised path as text: `/quote/ACME`.
    public var text: String {
        "/" + segments.joined(separator: "/") + (hasTrailingSlash && !segments.isEmpty ? "/" : "")
    }

    /// Normalises the path part of a request target (no query), or says why it is refused.
    public init(_ rawPath: Substring) throws(PathError) {
        // Origin form only: the gateway rewrote absolute form before routing.
        let path = rawPath
        guard path.first == "/" else { throw .notOriginForm }
        // One pass over the bytes after the leading `/`: each `/` or the end closes a segment.
        let bytes = path.utf8
        var segments: [String] = []
        segments.reserveCapacity(4)
        var segmentStart = bytes.index(after: bytes.startIndex)
        var index = segmentStart
        var rawSegmentCount = 0
        while true {
            let atEnd = index == bytes.endIndex
            if atEnd || bytes[index] == UInt8(ascii: "/") {
                let raw = bytes[segmentStart..<index]
                rawSegmentCount += 1
                if !raw.isEmpty {
                    let decoded = try Self.percentDecode(raw)
                    switch decoded {
                    case ".": break
                    case "..":
                        guard !segments.isEmpty else { throw .aboveRoot }
                        segments.removeLast()
                    default: segments.append(decoded)
                    }
                }
                if atEnd {
                    self.hasTrailingSlash = rawSegmentCount > 1 && raw.isEmpty
                    break
                }
                segmentStart = bytes.index(after: index)
            }
            index = bytes.index(after: index)
        }
        self.segments = segments
    }

    /// Whether a raw path is already in normal form, so it can be routed as it is:
    /// no escape, NUL, repeated slash, or `.` or `..` segment. (A trailing slash is
    /// kept: it is part of the normal form.)
    @inlinable
    public static func isCanonical(_ path: UnsafeRawBufferPointer) -> Bool {
        var previous: UInt8 = 0
        var segmentStart = true
        var dots = 0
        for byte in path {
            switch byte {
            case UInt8(ascii: "%"), 0: return false
            case UInt8(ascii: "/"):
                if previous == UInt8(ascii: "/") || (segmentStart && dots > 0 && dots <= 2) { return false }
                segmentStart = true
                dots = 0
            case UInt8(ascii: "."):
                if segmentStart { dots += 1 }
            default:
                segmentStart = false
                dots = 0
            }
            previous = byte
        }
        return !(segmentStart && dots > 0 && dots <= 2)
    }

    private static func percentDecode(_ raw: Substring.UTF8View.SubSequence) throws(PathError) -> String {
        if let plain = try plainSegment(raw) { return plain }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(raw.count)
        var index = raw.startIndex
        while index < raw.endIndex {
            let byte = raw[index]
            if byte == UInt8(ascii: "%") {
                let high = raw.index(after: index)
                guard high < raw.endIndex, raw.index(after: high) < raw.endIndex,
                    let h = hexValue(raw[high]), let l = hexValue(raw[raw.index(after: high)])
                else { throw .badEscape }
                let value = h << 4 | l
                guard value != UInt8(ascii: "/"), value != 0 else { throw .forbiddenByte }
                bytes.append(value)
                index = raw.index(index, offsetBy: 3)
            } else {
                guard byte != 0 else { throw .forbiddenByte }
                bytes.append(byte)
                index = raw.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The segment as text when it has no escapes (the usual case), checked for NUL in the same pass.
    private static func plainSegment(_ raw: Substring.UTF8View.SubSequence) throws(PathError) -> String? {
        for byte in raw {
            if byte == UInt8(ascii: "%") { return nil }
            if byte == 0 { throw .forbiddenByte }
        }
        return String(Substring(raw))
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Why a request path was refused (answered with 400).
public enum PathError: Error, Sendable, CustomStringConvertible {
    case notOriginForm
    case badEscape
    case forbiddenByte
    case aboveRoot

    public var description: String {
        switch self {
        case .notOriginForm: return "request target must start with /"
        case .badEscape: return "malformed percent-escape in path"
        case .forbiddenByte: return "encoded slash or NUL in path"
        case .aboveRoot: return "path climbs above the root with .."
        }
    }
}
