/// A parsed route pattern: `"GET /quote/{symbol}"`, `"ANY /static/{path...}"`.
///
/// Grammar: `METHOD SP PATH`, where METHOD is an HTTP token or `ANY` (also `*`),
/// and PATH is `/`-separated segments, each a literal, `{name}` (one segment),
/// or, last only, `{name...}` (the rest of the path, possibly empty).
public struct RoutePattern: Sendable, Hashable, CustomStringConvertible {
    /// One segment of a pattern.
    public enum Segment: Sendable, Hashable {
        case literal(String)
        case parameter(String)
        case catchAll(String)
    }

    /// The method this route answers, or `nil` for any. A `GET` route also answers `HEAD`.
    public let method: String?
    /// The path segments.
    public let segments: [Segment]
    /// The pattern as written.
    public let description: String

    /// Parses a pattern, or throws an error that says what is wrong with it.
    public init(_ text: String) throws(RoutePatternError) {
        description = text
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 else {
            throw RoutePatternError(pattern: text, reason: "expected \"METHOD /path\", for example \"GET /quote/{symbol}\"")
        }
        let methodText = String(parts[0])
        if methodText == "ANY" || methodText == "*" {
            method = nil
        } else {
            guard methodText.utf8.allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else {
                throw RoutePatternError(pattern: text, reason: "method \"\(methodText)\" must be upper-case letters, or ANY")
            }
            method = methodText
        }
        let path = parts[1]
        guard path.first == "/" else {
            throw RoutePatternError(pattern: text, reason: "path must start with \"/\"")
        }
        var segments: [Segment] = []
        var names = Set<String>()
        let rawSegments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for (index, raw) in rawSegments.enumerated() {
            if raw.isEmpty {
                // "/" alone is the root; an empty segment anywhere else is a typo.
                if rawSegments.count == 1 { break }
                throw RoutePatternError(pattern: text, reason: "empty path segment (\"//\" or a trailing \"/\")")
            }
            if raw.first == "{" {
                guard raw.last == "}", raw.count > 2 else {
                    throw RoutePatternError(pattern: text, reason: "segment \"\(raw)\" must be {name} or {name...}")
                }
                var name = raw.dropFirst().dropLast()
                let isCatchAll = name.hasSuffix("...")
                if isCatchAll { name = name.dropLast(3) }
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw RoutePatternError(pattern: text, reason: "parameter name in \"\(raw)\" must be letters, digits or _")
                }
                guard names.insert(String(name)).inserted else {
                    throw RoutePatternError(pattern: text, reason: "parameter \"\(name)\" appears twice")
                }
                if isCatchAll {
                    guard index == rawSegments.count - 1 else {
                        throw RoutePatternError(pattern: text, reason: "\"\(raw)\" must be the last segment")
                    }
                    segments.append(.catchAll(String(name)))
                } else {
                    segments.append(.parameter(String(name)))
                }
            } else {
                guard !raw.contains("{"), !raw.contains("}") else {
                    throw RoutePatternError(pattern: text, reason: "segment \"\(raw)\" mixes text and a parameter; use a whole segment")
                }
                guard raw != ".", raw != "..", !raw.contains("%") else {
                    throw RoutePatternError(pattern: text, reason: "segment \"\(raw)\" must be plain text (patterns are matched against decoded paths)")
                }
                segments.append(.literal(String(raw)))
            }
        }
        self.segments = segments
    }
}

/// A route pattern that cannot be parsed.
public struct RoutePatternError: Error, CustomStringConvertible, Sendable {
    /// The pattern as written.
    public let pattern: String
    /// What is wrong with it.
    public let reason: String
    public var description: String { "bad route pattern \"\(pattern)\": \(reason)" }
}
