import ApusCompiler
import ApusConfig
import ApusPlugins
import ApusRouting
import ApusServer
import FoundationEssentials
import Logging

/// Turns a config into a ready route snapshot: checks every route pattern,
/// compiles (or takes from the cache) every handler the routes use, loads and
/// ABI-checks the libraries, and builds the route table.
struct GatewayBuilder {
    let config: GatewayConfig
    let logger: Logger
    /// Build every handler in `sources`, not only those a route uses (for `apus build`).
    var compileAll = false

    /// A handler as built and loaded, for listings.
    struct LoadedHandler {
        let compiled: CompiledHandler
        let library: HandlerLibrary
    }

    /// Everything `check` prints and `serve` runs.
    struct Result {
        let router: Router
        let handlers: [String: LoadedHandler]
        let certificates: [TLSCertificateStore]
    }

    func build() async throws -> Result {
        // Patterns first: a typo should not wait for a compile.
        var patterns: [RoutePattern] = []
        for (index, route) in config.routes.enumerated() {
            do {
                patterns.append(try RoutePattern(route.match))
            } catch {
                throw ConfigError(file: config.file, line: route.line, key: "route[\(index)].match", message: error.description)
            }
        }
        var certificates: [TLSCertificateStore] = []
        for (index, listener) in config.server.tls.enumerated() {
            do {
                certificates.append(try TLSCertificateStore(listener: listener))
            } catch {
                throw ConfigError(file: config.file, line: listener.line, key: "server.tls[\(index)]", message: "\(error)")
            }
        }
        let used = Set(config.routes.map(\.handler))
        for name in config.handlers.sources.keys.sorted() where !used.contains(name) && !compileAll {
            logger.notice("handler has no route; not compiled", metadata: ["handler.name": "\(name)"])
        }

        var handlers: [String: LoadedHandler] = [:]
        for handler in try await artifacts(for: compileAll ? Set(config.handlers.sources.keys) : used) {
            let library = try HandlerLibrary.load(path: handler.libraryPath, name: handler.name)
            handlers[handler.name] = LoadedHandler(compiled: handler, library: library)
            logger.debug(
                "handler loaded",
                metadata: [
                    "handler.name": "\(handler.name)", "handler.kind": "\(library.kind.rawValue)",
                    "handler.cached": "\(handler.fromCache)", "handler.hash": "\(handler.hash)",
                ])
        }

        let loadedAt = Date().timeIntervalSince1970
        let descriptions = config.routes.map { route in
            let handler = handlers[route.handler]!
            return RouteDescription(
                match: route.match, handler: route.handler, kind: handler.library.kind.rawValue, source: handler.compiled.source,
                buildHash: handler.compiled.hash, loadedAt: loadedAt)
        }
        var entries: [(pattern: RoutePattern, target: NativeRoute)] = []
        for (route, pattern) in zip(config.routes, patterns) {
            entries.append((pattern, NativeRoute(library: handlers[route.handler]!.library, maxBodyBytes: route.maxBodyBytes)))
        }
        let table: RouteTable<NativeRoute>
        do {
            table = try RouteTable(entries)
        } catch {
            // The later of the two routes is the one in the way.
            throw ConfigError(
                file: config.file, line: config.routes[error.secondIndex].line, key: "route[\(error.secondIndex)].match",
                message: error.description)
        }
        return Result(router: Router(table: table, descriptions: descriptions), handlers: handlers, certificates: certificates)
    }

    /// Compiles (or takes from the cache, or from the prebuilt folder) the named handlers.
    private func artifacts(for names: Set<String>) async throws -> [CompiledHandler] {
        guard !names.isEmpty else { return [] }
        if let prebuiltDirectory = config.handlers.prebuilt {
            let prebuilt = try PrebuiltHandlers(directory: prebuiltDirectory)
            return try names.sorted().map { name in
                guard let entry = prebuilt.handlers[name] else {
                    let known = prebuilt.handlers.keys.sorted().joined(separator: ", ")
                    throw CompileError.io("handler \"\(name)\" is not in the prebuilt folder \(prebuiltDirectory) (it has: \(known))")
                }
                return CompiledHandler(
                    name: name, source: entry.source, libraryPath: entry.library, hash: entry.hash, fromCache: true, duration: 0,
                    sdkDirectory: prebuiltDirectory)
            }
        }
        let sdk = try HandlerSDK.locate()
        let compiler = HandlerCompiler(
            configuration: .init(
                cacheDirectory: config.handlers.cacheDirectory, optimize: config.handlers.optimize, swiftc: config.handlers.swiftc),
            sdk: sdk, logger: logger)
        let sources = config.handlers.sources
        return try await withThrowingTaskGroup(of: CompiledHandler.self) { group in
            for name in names.sorted() {
                group.addTask { try await compiler.compile(name: name, source: sources[name]!) }
            }
            var all: [CompiledHandler] = []
            for try await handler in group { all.append(handler) }
            return all.sorted { $0.name < $1.name }
        }
    }
}
