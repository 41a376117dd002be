#if canImport(Glibc)
    import Glibc
#endif

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

    /// What `quickMatch` found.
    public enum QuickMatch {
        /// The route, found with one lookup: an all-literal route for a path in normal form.
        case route(Match)
        /// No route can match: the path is in normal form and origin form (so a valid
        /// one), and no route's first segment fits it, or there are no routes at all.
        case noRoute
        /// Ask `match` (with a `NormalizedPath`): the path needs normalising, or a route with parameters may match.
        case ask
    }

    /// Routes a request from its raw bytes when that takes no more than a hash
    /// lookup: a path already in normal form (no escapes, dot segments, repeated
    /// slashes) that names an all-literal route, or whose first segment no route
    /// has (the usual answer for a path the backend serves). Nothing is allocated
    /// or decoded; the answer is always the one `match` would give, or `.ask`.
    @inlinable
    public func quickMatch(method: UnsafeRawBufferPointer, path: UnsafeRawBufferPointer) -> QuickMatch {
        guard NormalizedPath.isCanonical(path) else { return .ask }
        if targets.isEmpty { return path.first == UInt8(ascii: "/") ? .noRoute : .ask }
        if let entry = index.literalEntry(method: method, normalPath: path) {
            return .route(Match(target: targets[entry], pattern: index.patterns[entry], parameters: []))
        }
        return index.mayMatch(normalPath: path) ? .ask : .noRoute
    }

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
    /// Every all-literal pattern's path text (`/health`), and by the same index the
    /// methods routed there: a request path already in normal form finds such a
    /// route with one lookup over its bytes.
    let literalPaths: ByteStringSet
    let literalMethods: [LiteralMethods]
    /// The literal first segments of all routes (`health` for `/health`), for `mayMatch`.
    let firstSegments: ByteStringSet
    /// Whether any first segment may match: a `{name}` or `{name...}` route sits
    /// there, or a literal one that is not ASCII.
    let anyFirstSegmentMayMatch: Bool
    @usableFromInline let patterns: [RoutePattern]

    init(_ patterns: [RoutePattern]) throws(RouteConflictError) {
        self.patterns = patterns
        var literalNodes: [(path: [UInt8], node: RouteNode)] = []
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
            let path = Array(("/" + literals.joined(separator: "/")).utf8)
            if literals.count == pattern.segments.count, path.allSatisfy({ $0 < 0x80 }), !literalNodes.contains(where: { $0.node === node }) {
                literalNodes.append((path, node))
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
        literalPaths = ByteStringSet(literalNodes.map(\.path))
        literalMethods = literalNodes.map { LiteralMethods($0.node) }
        let firstKeys = root.literals.keys.map { Array($0.utf8) }
        let asciiFirstKeys = firstKeys.filter { $0.allSatisfy { $0 < 0x80 } }
        firstSegments = ByteStringSet(asciiFirstKeys)
        anyFirstSegmentMayMatch = root.parameter != nil || root.catchAll != nil || asciiFirstKeys.count < firstKeys.count
    }

    private static func owner(of node: RouteNode, _ patterns: [RoutePattern]) -> RoutePattern {
        patterns[node.byMethod.first?.entry ?? node.anyMethod ?? 0]
    }

    @usableFromInline
    func literalEntry(method: UnsafeRawBufferPointer, normalPath: UnsafeRawBufferPointer) -> Int? {
        guard let path = literalPaths.index(of: normalPath), let method = MethodKey(method) else { return nil }
        return literalMethods[path].entry(method)
    }

    @usableFromInline
    func mayMatch(normalPath: UnsafeRawBufferPointer) -> Bool {
        guard !anyFirstSegmentMayMatch, normalPath.first == UInt8(ascii: "/") else { return true }
        let rest = UnsafeRawBufferPointer(rebasing: normalPath[1...])
        let segment = UnsafeRawBufferPointer(rebasing: rest[..<(rest.firstIndex(of: UInt8(ascii: "/")) ?? rest.endIndex)])
        guard !segment.isEmpty else { return true }  // `/` itself
        // A segment that is not ASCII is no key here, and may still name a route.
        return firstSegments.index(of: segment) != nil || segment.contains { $0 >= 0x80 }
    }

    @usableFromInline
    func match(method: String, path: NormalizedPath) -> (entry: Int, parameters: [(name: String, value: String)])? {
        var captured: [(name: String, value: String)] = []
        return root.match(method: method, segments: path.segments[...], hasTrailingSlash: path.hasTrailingSlash, captured: &captured)
    }
}

/// A fixed set of ASCII byte strings, looked up by raw bytes: FNV-1a over the
/// bytes, open addressing, and one `memcmp`. The slots hold only integers, so a
/// lookup retains nothing; Swift's `String` hashing (SipHash over the
/// Unicode-normalised text) and the `String`s made for it cost more than the
/// rest of routing a request.
@usableFromInline
struct ByteStringSet: Sendable {
    private struct Slot {
        var hash: UInt64 = 0
        var start = 0
        var count = 0
        /// The key's position in the list the set was built from; -1 for an empty slot.
        var index = -1
    }

    private let slots: [Slot]
    private let storage: [UInt8]

    /// `keys` must be distinct; `index(of:)` answers with a key's position here.
    init(_ keys: [[UInt8]]) {
        var capacity = 4
        while capacity < keys.count * 2 { capacity *= 2 }
        var slots = [Slot](repeating: Slot(), count: capacity)
        var storage: [UInt8] = []
        for (index, key) in keys.enumerated() {
            let hash = key.withUnsafeBytes(Self.hash)
            var slot = Int(truncatingIfNeeded: hash) & (capacity - 1)
            while slots[slot].index >= 0 { slot = (slot + 1) & (capacity - 1) }
            slots[slot] = Slot(hash: hash, start: storage.count, count: key.count, index: index)
            storage += key
        }
        self.slots = slots
        self.storage = storage
    }

    /// Where `key` was in the list the set was built from, or `nil`.
    func index(of key: UnsafeRawBufferPointer) -> Int? {
        let hash = Self.hash(key)
        let mask = slots.count - 1
        var position = Int(truncatingIfNeeded: hash) & mask
        while true {
            let slot = slots[position]
            if slot.index < 0 { return nil }
            if slot.hash == hash, slot.count == key.count, equalsStored(key, at: slot.start) { return slot.index }
            position = (position + 1) & mask
        }
    }

    private func equalsStored(_ key: UnsafeRawBufferPointer, at start: Int) -> Bool {
        storage.withUnsafeBytes { stored in
            key.isEmpty || memcmp(stored.baseAddress! + start, key.baseAddress!, key.count) == 0
        }
    }

    private static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }
}

/// A method name of up to eight bytes packed into an integer, so comparing two is one instruction.
struct MethodKey: Equatable {
    let packed: UInt64

    /// `nil` when the name is empty or longer than eight bytes (the tree compares such names as text).
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty, bytes.count <= 8 else { return nil }
        var packed: UInt64 = 0
        for (offset, byte) in bytes.enumerated() { packed |= UInt64(byte) << UInt64(offset * 8) }
        self.packed = packed
    }

    init?(_ text: String) {
        guard let key = Array(text.utf8).withUnsafeBytes({ MethodKey($0) }) else { return nil }
        self = key
    }

    static let get = MethodKey("GET")!
    static let head = MethodKey("HEAD")!
}

/// The methods routed to one all-literal path, as `RouteNode.entry` chooses among them.
struct LiteralMethods {
    private let exact: [(method: MethodKey, entry: Int)]
    /// Routes for methods longer than eight bytes are left out: only requests with such
    /// methods, which `MethodKey` does not pack, could match them, and those go to the tree.
    private let anyMethod: Int?

    init(_ node: RouteNode) {
        exact = node.byMethod.compactMap { route in MethodKey(route.method).map { ($0, route.entry) } }
        anyMethod = node.anyMethod
    }

    /// The same choice as `RouteNode.entry`: the method's own route, `GET`'s for `HEAD`, or the any-method route.
    func entry(_ method: MethodKey) -> Int? {
        if let entry = entry(exactly: method) { return entry }
        if method == .head, let entry = entry(exactly: .get) { return entry }
        return anyMethod
    }

    private func entry(exactly method: MethodKey) -> Int? {
        for route in exact where route.method == method { return route.entry }
        return nil
    }
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
