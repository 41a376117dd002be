/// The native route table: built once at load into a segment tree, so a lookup
/// walks the path's segments with no regex and no allocation beyond the
/// captured parameters. Literal segments win over `{name}`, which wins over
/// `{name...}`; a failed branch backtracks to the next kind.
public struct RouteTable<Target: Sendable>: Sendable {
    /// A successful lookup.
    public struct Match: Sendable {
        /// What the route points at.
        public let target: Target
        /// The pattern that matched.
        public let pattern: RoutePattern
        /// `{name}` values in pattern order, decoded.
        public let parameters: [(name: String, value: String)]
    }

    private struct Entry: Sendable {
        let pattern: RoutePattern
        let target: Target
    }

    // The tree holds indices into `entries`, so that it and the lookup are not generic:
    // a lookup runs specialised code with no type-metadata work per request.
    private let root = RouteNode()
    private let entries: [Entry]
    /// The tree node of every all-literal pattern, by its path text (`/health`):
    /// a request path already in normal form finds such a route with one lookup.
    private var literalPaths: [String: RouteNode] = [:]
    /// The routes in the order they were given.
    public let patterns: [RoutePattern]

    /// Builds the table; two routes with the same method and the same shape are an error.
    public init(_ routes: [(pattern: RoutePattern, target: Target)]) throws(RouteConflictError) {
        patterns = routes.map(\.pattern)
        entries = routes.map { Entry(pattern: $0.pattern, target: $0.target) }
        var literalPaths: [String: RouteNode] = [:]
        for (index, route) in routes.enumerated() {
            var node = root
            for segment in route.pattern.segments {
                switch segment {
                case .literal(let text):
                    if let next = node.literals[text] {
                        node = next
                    } else {
                        let next = RouteNode()
                        node.literals[text] = next
                        node = next
                    }
                case .parameter(let name):
                    if node.parameter == nil { node.parameter = (name, RouteNode()) }
                    guard node.parameter!.name == name else {
                        throw RouteConflictError(first: owner(of: node.parameter!.node), second: route.pattern)
                    }
                    node = node.parameter!.node
                case .catchAll(let name):
                    if node.catchAll == nil { node.catchAll = (name, RouteNode()) }
                    guard node.catchAll!.name == name else {
                        throw RouteConflictError(first: owner(of: node.catchAll!.node), second: route.pattern)
                    }
                    node = node.catchAll!.node
                }
            }
            let literals = route.pattern.segments.compactMap { segment -> String? in
                if case .literal(let text) = segment { return text }
                return nil
            }
            if literals.count == route.pattern.segments.count {
                literalPaths["/" + literals.joined(separator: "/")] = node
            }
            if let method = route.pattern.method {
                if let existing = node.byMethod[method] {
                    throw RouteConflictError(first: patterns[existing], second: route.pattern)
                }
                node.byMethod[method] = index
            } else {
                if let existing = node.anyMethod { throw RouteConflictError(first: patterns[existing], second: route.pattern) }
                node.anyMethod = index
            }
        }
        self.literalPaths = literalPaths
    }

    private func owner(of node: RouteNode) -> RoutePattern {
        patterns[node.byMethod.values.first ?? node.anyMethod ?? 0]
    }

    /// Whether no route is configured (every request goes to the backend).
    public var isEmpty: Bool { patterns.isEmpty }

    /// Finds an all-literal route for a path that is already in normal form (no
    /// escapes, dot segments, repeated or trailing slashes): one hash lookup, no
    /// allocation. `nil` means "ask `match`", not "no route": the answer is always
    /// the one `match` would give, because literal segments win there too.
    public func matchLiteral(method: String, normalPath: String) -> Match? {
        guard let node = literalPaths[normalPath], let entry = node.entry(method) else { return nil }
        return Match(target: entries[entry].target, pattern: entries[entry].pattern, parameters: [])
    }

    /// Finds the route for a method and a normalised path.
    public func match(method: String, path: NormalizedPath) -> Match? {
        var captured: [(name: String, value: String)] = []
        guard let found = root.match(method: method, segments: path.segments[...], hasTrailingSlash: path.hasTrailingSlash, captured: &captured)
        else { return nil }
        let entry = entries[found.entry]
        return Match(target: entry.target, pattern: entry.pattern, parameters: found.parameters)
    }
}

/// One segment position in the route tree.
private final class RouteNode: @unchecked Sendable {
    // Mutated only while the table is being built; read-only afterwards.
    var literals: [String: RouteNode] = [:]
    var parameter: (name: String, node: RouteNode)?
    var catchAll: (name: String, node: RouteNode)?
    /// Indices into the table's entries.
    var byMethod: [String: Int] = [:]
    var anyMethod: Int?

    func match(
        method: String, segments: ArraySlice<String>, hasTrailingSlash: Bool, captured: inout [(name: String, value: String)]
    ) -> (entry: Int, parameters: [(name: String, value: String)])? {
        guard let segment = segments.first else {
            // A trailing slash names a different resource: it does not match a pattern without one.
            if hasTrailingSlash { return nil }
            if let entry = entry(method) { return (entry, captured) }
            // `/files/{rest...}` also matches `/files`.
            if let (name, next) = catchAll, let entry = next.entry(method) { return (entry, captured + [(name, "")]) }
            return nil
        }
        let rest = segments.dropFirst()
        if let next = literals[segment],
            let found = next.match(method: method, segments: rest, hasTrailingSlash: hasTrailingSlash, captured: &captured)
        {
            return found
        }
        if let (name, next) = parameter {
            captured.append((name, segment))
            if let found = next.match(method: method, segments: rest, hasTrailingSlash: hasTrailingSlash, captured: &captured) {
                return found
            }
            captured.removeLast()
        }
        if let (name, next) = catchAll, let entry = next.entry(method) {
            let value = segments.joined(separator: "/") + (hasTrailingSlash ? "/" : "")
            return (entry, captured + [(name, value)])
        }
        return nil
    }

    func entry(_ method: String) -> Int? {
        if let entry = byMethod[method] { return entry }
        if method == "HEAD", let entry = byMethod["GET"] { return entry }
        return anyMethod
    }
}

/// Two routes that would answer the same requests.
public struct RouteConflictError: Error, CustomStringConvertible, Sendable {
    public let first: RoutePattern
    public let second: RoutePattern
    public var description: String {
        "route \"\(second)\" conflicts with \"\(first)\": same method and path shape (or different parameter names at the same place)"
    }
}
