import Testing

@testable import ApusRouting

@Suite("Route patterns")
struct RoutePatternTests {
    @Test func parsesMethodLiteralsParametersAndCatchAll() throws {
        let pattern = try RoutePattern("GET /files/{bucket}/{path...}")
        #expect(pattern.method == "GET")
        #expect(pattern.segments == [.literal("files"), .parameter("bucket"), .catchAll("path")])
        #expect(try RoutePattern("ANY /").method == nil)
        #expect(try RoutePattern("* /x").method == nil)
    }

    @Test(arguments: [
        "GET", "get /x", "GET x", "GET /a//b", "GET /a/", "GET /{a", "GET /{}", "GET /{a...}/b", "GET /a{b}",
        "GET /{a}/{a}", "GET /%2F", "GET /..", "GET /{a-b}",
    ])
    func rejectsMalformedPatterns(_ text: String) {
        #expect(throws: RoutePatternError.self) { try RoutePattern(text) }
    }
}

@Suite("Path normalisation")
struct NormalizedPathTests {
    func normalize(_ path: String) throws -> NormalizedPath { try NormalizedPath(Substring(path)) }

    @Test func decodesPercentEscapesAndResolvesDots() throws {
        #expect(try normalize("/%71uote/AC%20ME").segments == ["quote", "AC ME"])
        #expect(try normalize("/a/./b/../c").segments == ["a", "c"])
        #expect(try normalize("//a///b").segments == ["a", "b"])
        #expect(try normalize("/a/%2e%2e/b").segments == ["b"])
        #expect(try normalize("/").segments == [])
        #expect(try normalize("/a/b/").hasTrailingSlash)
    }

    @Test(arguments: [
        ("/a%2Fb", PathError.forbiddenByte), ("/a%2fb", .forbiddenByte), ("/a%00", .forbiddenByte),
        ("/a%zz", .badEscape), ("/a%4", .badEscape), ("/..", .aboveRoot), ("/a/../..", .aboveRoot), ("a/b", .notOriginForm),
        ("*", .notOriginForm), ("http://example.com/x", .notOriginForm),
    ])
    func refusesAmbiguousPaths(_ path: String, _ expected: PathError) {
        #expect(throws: expected) { try NormalizedPath(Substring(path)) }
    }
}

@Suite("Route table")
struct RouteTableTests {
    func table(_ patterns: [String]) throws -> RouteTable<String> {
        try RouteTable(patterns.map { (try RoutePattern($0), $0) })
    }

    func match(_ table: RouteTable<String>, _ method: String, _ path: String) throws -> RouteTable<String>.Match? {
        table.match(method: method, path: try NormalizedPath(Substring(path)))
    }

    @Test func literalBeatsParameterBeatsCatchAll() throws {
        let routes = try table(["GET /a/b", "GET /a/{x}", "GET /a/{rest...}"])
        #expect(try match(routes, "GET", "/a/b")?.target == "GET /a/b")
        #expect(try match(routes, "GET", "/a/c")?.target == "GET /a/{x}")
        #expect(try match(routes, "GET", "/a/c")?.parameters.first?.value == "c")
        #expect(try match(routes, "GET", "/a/c/d")?.target == "GET /a/{rest...}")
        #expect(try match(routes, "GET", "/a/c/d")?.parameters.first?.value == "c/d")
        #expect(try match(routes, "GET", "/a")?.target == "GET /a/{rest...}")
    }

    @Test func backtracksFromALiteralDeadEnd() throws {
        let routes = try table(["GET /a/b/c", "GET /a/{x}/d"])
        let found = try match(routes, "GET", "/a/b/d")
        #expect(found?.target == "GET /a/{x}/d")
        #expect(found?.parameters.map(\.value) == ["b"])
    }

    @Test func methodsAndHead() throws {
        let routes = try table(["GET /q/{s}", "POST /q/{s}", "ANY /any"])
        #expect(try match(routes, "HEAD", "/q/x")?.target == "GET /q/{s}")
        #expect(try match(routes, "POST", "/q/x")?.target == "POST /q/{s}")
        #expect(try match(routes, "DELETE", "/q/x") == nil)
        #expect(try match(routes, "PATCH", "/any")?.target == "ANY /any")
    }

    @Test func decodedPathsMatchAndTrailingSlashDoesNot() throws {
        let routes = try table(["GET /quote/{symbol}"])
        #expect(try match(routes, "GET", "/%71uote/AC%4DE")?.parameters.first?.value == "ACME")
        #expect(try match(routes, "GET", "/x/../quote/ACME") != nil)
        #expect(try match(routes, "GET", "/quote/ACME/") == nil)
        #expect(try match(routes, "GET", "/quote") == nil)
        #expect(try match(routes, "GET", "/quote/A/B") == nil)
    }

    @Test func conflictingRoutesAreRefused() throws {
        #expect(throws: RouteConflictError.self) { try table(["GET /a/{x}", "GET /a/{y}"]) }
        #expect(throws: RouteConflictError.self) { try table(["GET /a", "GET /a"]) }
        // The later route is named, so a message can point at its line.
        #expect { try table(["GET /b", "GET /a", "POST /a", "GET /a"]) } throws: { ($0 as? RouteConflictError)?.secondIndex == 3 }
        #expect(throws: RouteConflictError.self) { try table(["ANY /a", "ANY /a"]) }
        _ = try table(["GET /a", "POST /a", "ANY /a"])
    }
}

@Suite("Quick route lookup")
struct QuickRouteLookupTests {
    enum Answer: Equatable {
        case route(String)
        case noRoute
        case ask
    }

    func quick(_ table: RouteTable<String>, _ method: String, _ path: String) -> Answer {
        Array(method.utf8).withUnsafeBytes { method in
            Array(path.utf8).withUnsafeBytes { path in
                switch table.quickMatch(method: method, path: path) {
                case .route(let match):
                    #expect(match.parameters.isEmpty)
                    return .route(match.target)
                case .noRoute: return .noRoute
                case .ask: return .ask
                }
            }
        }
    }

    /// The one-lookup path must give exactly what the tree gives, or defer to it.
    @Test func agreesWithTheTreeOrDefers() throws {
        let table = try RouteTable<String>([
            (try RoutePattern("GET /health"), "health"),
            (try RoutePattern("POST /items"), "create"),
            (try RoutePattern("GET /{name}"), "by-name"),
            (try RoutePattern("ANY /a/b"), "any-ab"),
            (try RoutePattern("GET /"), "root"),
            (try RoutePattern("GET /files/{rest...}"), "files"),
            (try RoutePattern("PROPPATCH /a/b"), "long-method"),
        ])
        let methods = ["GET", "HEAD", "POST", "DELETE", "PROPPATCH", "G"]
        let paths = [
            "/health", "/items", "/a/b", "/", "/files", "/nothing/here", "/a", "/health/", "/a/./b", "/%68ealth", "//health",
            "/a/b/..", "/caf\u{e9}", "*",
        ]
        for method in methods {
            for path in paths {
                let tree = (try? NormalizedPath(Substring(path))).flatMap { table.match(method: method, path: $0) }
                switch quick(table, method, path) {
                case .route(let target): #expect(target == tree?.target, "\(method) \(path)")
                case .noRoute: #expect(tree == nil, "\(method) \(path)")
                case .ask: break
                }
            }
        }
        #expect(quick(table, "GET", "/health") == .route("health"))
        #expect(quick(table, "HEAD", "/health") == .route("health"))
        #expect(quick(table, "DELETE", "/a/b") == .route("any-ab"))
        #expect(quick(table, "PROPPATCH", "/a/b") == .ask)  // a long method goes to the tree...
        #expect(table.match(method: "PROPPATCH", path: try NormalizedPath("/a/b"))?.target == "long-method")  // ...which finds it
        #expect(quick(table, "GET", "/items") == .ask)  // the tree finds GET /{name}
        #expect(table.match(method: "GET", path: try NormalizedPath("/items"))?.target == "by-name")
        #expect(quick(table, "GET", "/%68ealth") == .ask)  // not in normal form
    }

    /// The first-segment filter may only say "no route" when the tree finds none.
    @Test func firstSegmentFilterNeverHidesARoute() throws {
        let table = try RouteTable<String>([
            (try RoutePattern("GET /health"), "health"),
            (try RoutePattern("GET /quote/{symbol}"), "quote"),
            (try RoutePattern("ANY /files/{rest...}"), "files"),
            (try RoutePattern("GET /"), "root"),
        ])
        let paths = ["/", "/health", "/health/x", "/quote", "/quote/ACME", "/files", "/files/a/b", "/hello/bench", "/q", "/healthz"]
        for path in paths {
            let tree = table.match(method: "GET", path: try NormalizedPath(Substring(path)))
            if quick(table, "GET", path) == .noRoute { #expect(tree == nil, "\(path)") }
        }
        #expect(quick(table, "GET", "/hello/bench") == .noRoute)
        #expect(quick(table, "GET", "/quote/ACME") == .ask)
        #expect(quick(table, "GET", "*") == .ask)  // not a path: the gateway decides
        let open = try RouteTable<String>([(try RoutePattern("GET /{name}"), "by-name")])
        #expect(quick(open, "GET", "/anything") == .ask)
        // A literal that is not ASCII is compared as text (é has two spellings), so the filter stands aside.
        let accented = try RouteTable<String>([(try RoutePattern("GET /caf\u{e9}/{x}"), "accented")])
        #expect(quick(accented, "GET", "/caf\u{65}\u{301}/1") == .ask)
        #expect(accented.match(method: "GET", path: try NormalizedPath("/caf\u{65}\u{301}/1"))?.target == "accented")
    }

    /// With no routes, every path in normal form is the backend's; the rest still go to the tree.
    @Test func noRoutesAtAll() throws {
        let empty = try RouteTable<String>([])
        #expect(quick(empty, "GET", "/hello/bench") == .noRoute)
        #expect(quick(empty, "GET", "/") == .noRoute)
        #expect(quick(empty, "GET", "/a/../b") == .ask)
        #expect(quick(empty, "OPTIONS", "*") == .ask)
    }

    @Test func canonicalPaths() {
        func canonical(_ path: String) -> Bool { Array(path.utf8).withUnsafeBytes { NormalizedPath.isCanonical($0) } }
        for path in ["/", "/a/b", "/a/b/", "/.well-known/x", "/a/...", "/a.b"] { #expect(canonical(path), "\(path)") }
        for path in ["//a", "/a//b", "/a/./b", "/a/..", "/.", "/%41", "/a\u{0}"] { #expect(!canonical(path), "\(path)") }
    }
}
