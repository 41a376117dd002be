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

        @usableFromInline
        init(target: Target, pattern: RoutePattern, parameters: [(name: String, value: String)]) {
            self.target = target
            self.pattern = pattern
            self.parameters = parameters
        }
    }

    // Lookups run in `RouteIndex`, which is not generic and answers with an index
    // into `targets`; the generic part is the inlinable last step, specialised in
    // the caller. A lookup does no type-metadata work per request.
    @usableFromInline let index: RouteIndex
    @usableFromInline let targets: [Target]
    /// The routes in the order they were given.
    public var patterns: [RoutePattern] { index.patterns }

    /// Builds the table; two routes with the same method and the same shape are an error.
    public init(_ routes: [(pattern: RoutePattern, target: Target)]) throws(RouteConflictError) {
        index = try RouteIndex(routes.map(\.pattern))
        targets = routes.map(\.target)
    }

    /// Whether no route is configured (every request goes to the backend).
    public var isEmpty: Bool { targets.isEmpty }

    /// Finds an all-literal route for a path that is already in normal form (no
    /// escapes, dot segments, repeated or trailing slashes): one hash lookup, no
    /// allocation. `nil` means "ask `match`", not "no route": the answer is always
    /// the one `match` would give, because literal segments win there too.
    @inlinable
    public func matchLiteral(method: String, normalPath: String) -> Match? {
        guard let entry = index.literalEntry(method: method, normalPath: normalPath) else { return nil }
        return Match(target: targets[entry], pattern: index.patterns[entry], parameters: [])
    }

    /// Whether any route could match a path already in normal form, judged by its
    /// first segment alone. `false` means none can (the usual answer for a path
    /// the backend serves, found with one small lookup and no `NormalizedPath`);
    /// `true` means "ask `matchLiteral` and `match`".
    @inlinable
    public func mayMatch(normalPath: String) -> Bool { index.mayMatch(normalPath: normalPath) }

    /// Finds the route for a method and a normalised path.
    @inlinable
    public func match(method: String, path: NormalizedPath) -> Match? {
        guard let found = index.match(method: method, path: path) else { return nil }
        return Match(target: targets[found.entry], pattern: index.patterns[found.entry], parameters: found.parameters)
    }
}

/// The route tree and the lookups over it, by route index.
@usableFromInline
final class RouteIndex: Sendable {
    let root = RouteNode()
    /// The tree node of every all-literal pattern, by its path text (`/health`):
    /// a request path already in normal form finds such a route with one lookup.
    let literalPaths: [ASCIIKey: RouteNode]
    /// The literal first segments of all routes (`health` for `/health`), for `mayMatch`.
    let firstSegments: Set<ASCIIKey>
    /// Whether any first segment may match: a `{name}` or `{name...}` route sits
    /// there, or a literal one that is not ASCII.
    let anyFirstSegmentMayMatch: Bool
    @usableFromInline let patterns: [RoutePattern]

    init(_ patterns: [RoutePattern]) throws(RouteConflictError) {
        self.patterns = patterns
        var literalPaths: [ASCIIKey: RouteNode] = [:]
        for (index, pattern) in patterns.enumerated() {
            var node = root
            for segment in pattern.segments {
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
                        throw RouteConflictError(first: Self.owner(of: node.parameter!.node, patterns), second: pattern, secondIndex: index)
                    }
                    node = node.parameter!.node
                case .catchAll(let name):
                    if node.catchAll == nil { node.catchAll = (name, RouteNode()) }
                    guard node.catchAll!.name == name else {
                        throw RouteConflictError(first: Self.owner(of: node.catchAll!.node, patterns), second: pattern, secondIndex: index)
                    }
                    node = node.catchAll!.node
                }
            }
            let literals = pattern.segments.compactMap { segment -> String? in
                if case .literal(let text) = segment { return text }
                return nil
            }
            if literals.count == pattern.segments.count, let key = ASCIIKey(("/" + literals.joined(separator: "/"))[...]) {
                literalPaths[key] = node
            }
            if let method = pattern.method {
                if let existing = node.entry(exactly: method) {
                    throw RouteConflictError(first: patterns[existing], second: pattern, secondIndex: index)
                }
                node.byMethod.append((method, index))
            } else {
                if let existing = node.anyMethod { throw RouteConflictError(first: patterns[existing], second: pattern, secondIndex: index) }
                node.anyMethod = index
            }
        }
        self.literalPaths = literalPaths
        let firstKeys = root.literals.keys.map { ASCIIKey($0[...]) }
        firstSegments = Set(firstKeys.compactMap { $0 })
        anyFirstSegmentMayMatch = root.parameter != nil || root.catchAll != nil || firstKeys.contains { $0 == nil }
    }

    private static func owner(of node: RouteNode, _ patterns: [RoutePattern]) -> RoutePattern {
        patterns[node.byMethod.first?.entry ?? node.anyMethod ?? 0]
    }

    @usableFromInline
    func literalEntry(method: String, normalPath: String) -> Int? {
        guard let key = ASCIIKey(normalPath[...]), let node = literalPaths[key] else { return nil }
        return node.entry(method)
    }

    @usableFromInline
    func mayMatch(normalPath: String) -> Bool {
        let utf8 = normalPath.utf8
        guard !anyFirstSegmentMayMatch, utf8.first == UInt8(ascii: "/") else { return true }
        let segmentStart = utf8.index(after: utf8.startIndex)
        let segmentEnd = utf8[segmentStart...].firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
        guard segmentStart < segmentEnd else { return true }  // `/` itself
        guard let key = ASCIIKey(Substring(utf8[segmentStart..<segmentEnd])) else { return true }
        return firstSegments.contains(key)
    }

    @usableFromInline
    func match(method: String, path: NormalizedPath) -> (entry: Int, parameters: [(name: String, value: String)])? {
        var captured: [(name: String, value: String)] = []
        return root.match(method: method, segments: path.segments[...], hasTrailingSlash: path.hasTrailingSlash, captured: &captured)
    }
}

/// An ASCII path or segment as a dictionary key, hashed with FNV-1a over its
/// bytes and compared byte for byte: Swift's `String` hashing (SipHash over the
/// Unicode-normalised text) cost more than the rest of routing a request. Only
/// ASCII text has a key, so byte equality is the same as `String` equality.
struct ASCIIKey: Hashable {
    let text: Substring
    let hash: UInt64

    init?(_ text: Substring) {
        // Over contiguous bytes (a native string's): iterating `Substring.UTF8View`
        // index by index cost several times as much.
        let hash = text.utf8.withContiguousStorageIfAvailable(Self.hash) ?? Self.hash(text.utf8)
        guard let hash else { return nil }
        self.text = text
        self.hash = hash
    }

    /// FNV-1a over the bytes; `nil` when one is not ASCII.
    private static func hash(_ bytes: some Sequence<UInt8>) -> UInt64? {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            guard byte < 0x80 else { return nil }
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    static func == (lhs: ASCIIKey, rhs: ASCIIKey) -> Bool {
        guard lhs.hash == rhs.hash else { return false }
        let equal = lhs.text.utf8.withContiguousStorageIfAvailable { left in
            rhs.text.utf8.withContiguousStorageIfAvailable { right in left.elementsEqual(right) }
        }
        return (equal ?? nil) ?? lhs.text.utf8.elementsEqual(rhs.text.utf8)
    }

    func hash(into hasher: inout Hasher) { hasher.combine(hash) }
}

/// One segment position in the route tree.
final class RouteNode: @unchecked Sendable {
    // Mutated only while the table is being built; read-only afterwards.
    var literals: [String: RouteNode] = [:]
    var parameter: (name: String, node: RouteNode)?
    var catchAll: (name: String, node: RouteNode)?
    /// Indices into the table's entries, by method: a node has a few at most, and
    /// comparing a method with each is cheaper than hashing it (`String` hashing is SipHash).
    var byMethod: [(method: String, entry: Int)] = []
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
        if let entry = entry(exactly: method) { return entry }
        if method == "HEAD", let entry = entry(exactly: "GET") { return entry }
        return anyMethod
    }

    /// The route for exactly this method, without `HEAD`'s fallback to `GET` or any-method routes.
    func entry(exactly method: String) -> Int? {
        for route in byMethod where route.method == method { return route.entry }
        return nil
    }
}

/// Two routes that would answer the same requests.
public struct RouteConflictError: Error, CustomStringConvertible, Sendable {
    public let first: RoutePattern
    public let second: RoutePattern
    /// Where `second` is in the routes given (the first is earlier).
    public let secondIndex: Int
    public var description: String {
        "route \"\(second)\" conflicts with \"\(first)\": same method and path shape (or different parameter names at the same place)"
    }
}
