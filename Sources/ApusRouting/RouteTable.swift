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

    private final class Node: @unchecked Sendable {
        // Mutated only while the table is being built; read-only afterwards.
        var literals: [String: Node] = [:]
        var parameter: (name: String, node: Node)?
        var catchAll: (name: String, node: Node)?
        var byMethod: [String: Entry] = [:]
        var anyMethod: Entry?
    }

    private let root = Node()
    /// The routes in the order they were given.
    public let patterns: [RoutePattern]

    /// Builds the table; two routes with the same method and the same shape are an error.
    public init(_ routes: [(pattern: RoutePattern, target: Target)]) throws(RouteConflictError) {
        patterns = routes.map(\.pattern)
        for route in routes {
            var node = root
            for segment in route.pattern.segments {
                switch segment {
                case .literal(let text):
                    if let next = node.literals[text] {
                        node = next
                    } else {
                        let next = Node()
                        node.literals[text] = next
                        node = next
                    }
                case .parameter(let name):
                    if node.parameter == nil { node.parameter = (name, Node()) }
                    guard node.parameter!.name == name else {
                        throw RouteConflictError(first: Self.owner(of: node.parameter!.node, routes), second: route.pattern)
                    }
                    node = node.parameter!.node
                case .catchAll(let name):
                    if node.catchAll == nil { node.catchAll = (name, Node()) }
                    guard node.catchAll!.name == name else {
                        throw RouteConflictError(first: Self.owner(of: node.catchAll!.node, routes), second: route.pattern)
                    }
                    node = node.catchAll!.node
                }
            }
            let entry = Entry(pattern: route.pattern, target: route.target)
            if let method = route.pattern.method {
                if let existing = node.byMethod[method] {
                    throw RouteConflictError(first: existing.pattern, second: route.pattern)
                }
                node.byMethod[method] = entry
            } else {
                if let existing = node.anyMethod { throw RouteConflictError(first: existing.pattern, second: route.pattern) }
                node.anyMethod = entry
            }
        }
    }

    private static func owner(of node: Node, _ routes: [(pattern: RoutePattern, target: Target)]) -> RoutePattern {
        node.byMethod.values.first?.pattern ?? node.anyMethod?.pattern ?? routes[0].pattern
    }

    /// Whether no route is configured (every request goes to the backend).
    public var isEmpty: Bool { patterns.isEmpty }

    /// Finds the route for a method and a normalised path.
    public func match(method: String, path: NormalizedPath) -> Match? {
        var captured: [(name: String, value: String)] = []
        return Self.match(root, method: method, segments: path.segments[...], hasTrailingSlash: path.hasTrailingSlash, captured: &captured)
    }

    private static func match(
        _ node: Node, method: String, segments: ArraySlice<String>, hasTrailingSlash: Bool,
        captured: inout [(name: String, value: String)]
    ) -> Match? {
        guard let segment = segments.first else {
            // A trailing slash names a different resource: it does not match a pattern without one.
            if hasTrailingSlash { return nil }
            if let entry = entry(node, method) {
                return Match(target: entry.target, pattern: entry.pattern, parameters: captured)
            }
            // `/files/{rest...}` also matches `/files`.
            if let (name, next) = node.catchAll, let entry = entry(next, method) {
                return Match(target: entry.target, pattern: entry.pattern, parameters: captured + [(name, "")])
            }
            return nil
        }
        let rest = segments.dropFirst()
        if let next = node.literals[segment],
            let found = match(next, method: method, segments: rest, hasTrailingSlash: hasTrailingSlash, captured: &captured)
        {
            return found
        }
        if let (name, next) = node.parameter {
            captured.append((name, segment))
            if let found = match(next, method: method, segments: rest, hasTrailingSlash: hasTrailingSlash, captured: &captured) {
                return found
            }
            captured.removeLast()
        }
        if let (name, next) = node.catchAll, let entry = entry(next, method) {
            let value = segments.joined(separator: "/") + (hasTrailingSlash ? "/" : "")
            return Match(target: entry.target, pattern: entry.pattern, parameters: captured + [(name, value)])
        }
        return nil
    }

    private static func entry(_ node: Node, _ method: String) -> Entry? {
        if let entry = node.byMethod[method] { return entry }
        if method == "HEAD", let entry = node.byMethod["GET"] { return entry }
        return node.anyMethod
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
