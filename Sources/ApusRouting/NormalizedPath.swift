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
        var path = rawPath
        // absolute-form (RFC 9112 3.2.2): keep only the path.
        if path.hasPrefix("http://") || path.hasPrefix("https://") {
            let afterScheme = path[path.index(path.firstIndex(of: ":")!, offsetBy: 3)...]
            path = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        }
        guard path.first == "/" else { throw .notOriginForm }
        var segments: [String] = []
        let rawSegments = path.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        for raw in rawSegments where !raw.isEmpty {
            let decoded = try Self.percentDecode(raw)
            switch decoded {
            case ".": continue
            case "..":
                guard !segments.isEmpty else { throw .aboveRoot }
                segments.removeLast()
            default: segments.append(decoded)
            }
        }
        self.segments = segments
        let last = rawSegments.last
        self.hasTrailingSlash = rawSegments.count > 1 && (last?.isEmpty ?? false)
    }

    private static func percentDecode(_ raw: Substring.UTF8View.SubSequence) throws(PathError) -> String {
        guard raw.contains(UInt8(ascii: "%")) else {
            guard !raw.contains(0) else { throw .forbiddenByte }
            return String(decoding: raw, as: UTF8.self)
        }
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
