import ApusSystem
import FoundationEssentials
import TOMLKit

extension GatewayConfig {
    /// Environment variables that override the file, for containers.
    public enum EnvironmentKey {
        /// Comma-separated `host:port` list replacing `server.listen`.
        public static let listen = "APUS_LISTEN"
        /// Replaces `backend.address`.
        public static let backendAddress = "APUS_BACKEND_ADDRESS"
        /// Replaces `admin.listen` (a pod's probes need it on the pod address).
        public static let adminListen = "APUS_ADMIN_LISTEN"
    }

    /// Reads, validates and resolves a config file. Every problem is a `ConfigError`
    /// naming the file, line and key.
    public static func load(
        file: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> GatewayConfig {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ConfigError(file: file, line: nil, key: "", message: "cannot read config file: \(describe(error))")
        }
        return try parse(text: text, file: file, environment: environment)
    }

    /// Validates a config text as if read from `file` (relative paths resolve against its folder).
    public static func parse(text: String, file: String, environment: [String: String] = [:]) throws(ConfigError) -> GatewayConfig {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(file: file, line: error.source.begin.line, key: "", message: "TOML syntax error: \(error.description)")
        } catch {
            throw ConfigError(file: file, line: nil, key: "", message: "TOML syntax error: \(error)")
        }
        var reader = ConfigReader(file: file, locator: SourceLocator(text: text))
        return try reader.read(root, environment: environment)
    }
}

/// Walks the TOML tree, checking each key's type and noting unknown keys.
private struct ConfigReader {
    let file: String
    let locator: SourceLocator
    var folder: URL { URL(fileURLWithPath: file).standardizedFileURL.deletingLastPathComponent() }

    func error(_ table: String, _ key: String?, _ message: String) -> ConfigError {
        let dotted = [table, key].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ".")
        return ConfigError(file: file, line: locator.line(table: table, key: key), key: dotted, message: message)
    }

    /// Resolves a path against the config file's folder.
    func resolve(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return folder.appendingPathComponent(path).standardizedFileURL.path
    }

    mutating func read(_ root: TOMLTable, environment: [String: String]) throws(ConfigError) -> GatewayConfig {
        try checkKeys(root, table: "", allowed: ["server", "backend", "handlers", "route", "admin"])
        var config = GatewayConfig(file: file, server: .init(), backend: .init(), handlers: .init(), routes: [])
        config.backend.workingDirectory = folder.path
        config.handlers.cacheDirectory = resolve(".apus-cache")

        if let server = try table(root, "", "server") {
            let t = "server"
            try checkKeys(
                server, table: t,
                allowed: ["listen", "workers", "shutdown_timeout", "keepalive_timeout", "trusted_proxies", "access_log",
                    "max_header_size", "max_body_size", "blocking_threads", "h2c", "max_concurrent_streams", "tls",
                    "redirect_https", "hsts", "start_traces", "upgrade_protocols", "max_websockets", "websocket_idle_timeout"])
            if let listen = server["listen"] {
                let texts: [String]
                if let single = listen.string {
                    texts = [single]
                } else {
                    texts = try strings(listen, t, "listen")
                }
                config.server.listen = try texts.map { (text) throws(ConfigError) in
                    guard let spec = SocketAddressSpec(parsing: text) else {
                        throw error(t, "listen", "\"\(text)\" is not host:port (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")")
                    }
                    return spec
                }
                guard !config.server.listen.isEmpty else { throw error(t, "listen", "needs at least one address") }
            }
            if let workers = try int(server, t, "workers", range: 0...1024) { config.server.workers = workers }
            if let value = try seconds(server, t, "shutdown_timeout") { config.server.shutdownTimeout = value }
            if let value = try seconds(server, t, "keepalive_timeout") { config.server.keepAliveTimeout = value }
            if let proxies = server["trusted_proxies"] {
                config.server.trustedProxies = try strings(proxies, t, "trusted_proxies").map { (text) throws(ConfigError) in
                    guard let cidr = CIDR(parsing: text) else {
                        throw error(t, "trusted_proxies", "\"\(text)\" is not an address or CIDR (e.g. \"10.0.0.0/8\")")
                    }
                    return cidr
                }
            }
            if let format = try string(server, t, "access_log") {
                guard let value = AccessLogFormat(rawValue: format) else {
                    throw error(t, "access_log", "must be \"plain\", \"json\" or \"off\", not \"\(format)\"")
                }
                config.server.accessLog = value
            }
            if let value = try size(server, t, "max_header_size") { config.server.maxHeaderBytes = value }
            if let value = try size(server, t, "max_body_size") { config.server.maxBodyBytes = value }
            if let value = try int(server, t, "blocking_threads", range: 1...512) { config.server.blockingThreads = value }
            if let value = try bool(server, t, "h2c") { config.server.h2c = value }
            if let value = try int(server, t, "max_concurrent_streams", range: 1...10_000) { config.server.maxConcurrentStreams = value }
            if let value = try string(server, t, "hsts") { config.server.hsts = value }
            if let value = try bool(server, t, "start_traces") { config.server.startTraces = value }
            if let value = server["upgrade_protocols"] {
                config.server.upgradeProtocols = try strings(value, t, "upgrade_protocols").map { $0.lowercased() }
                if config.server.upgradeProtocols.contains("h2c") {
                    throw error(t, "upgrade_protocols", "h2c cannot be tunnelled to the backend (request smuggling); clients use h2c with Apus itself")
                }
            }
            if let value = try int(server, t, "max_websockets", range: 0...1_000_000) { config.server.maxWebSockets = value }
            if let value = try seconds(server, t, "websocket_idle_timeout") { config.server.webSocketIdleTimeout = value }
            if let redirect = server["redirect_https"] {
                config.server.redirectHTTPS = try strings(redirect, t, "redirect_https").map { (text) throws(ConfigError) in
                    guard let spec = SocketAddressSpec(parsing: text) else { throw error(t, "redirect_https", "\"\(text)\" is not host:port") }
                    return spec
                }
            }
            if let tls = server["tls"] {
                guard let array = tls.array else { throw error(t, "tls", "must be an array of tables: [[server.tls]]") }
                for index in 0..<array.count {
                    guard let table = array[index].table else { throw error(t, "tls", "each TLS listener must be a table") }
                    config.server.tls.append(try tlsListener(table, table: "server.tls[\(index)]"))
                }
            }
        }

        if let backend = try table(root, "", "backend") {
            let t = "backend"
            try checkKeys(
                backend, table: t,
                allowed: ["address", "command", "directory", "environment", "connect_timeout", "response_timeout",
                    "idle_timeout", "max_connections", "pool_idle_timeout", "ready_timeout", "stop_timeout"])
            if let address = try string(backend, t, "address") {
                guard let parsed = BackendAddress(parsing: address) else {
                    throw error(t, "address", "\"\(address)\" is neither unix:/path nor host:port")
                }
                config.backend.address = parsed
            }
            if let command = backend["command"] {
                let argv = try strings(command, t, "command")
                guard !argv.isEmpty, !argv[0].isEmpty else { throw error(t, "command", "must name a program: [\"uvicorn\", \"app:app\", …]") }
                config.backend.command = argv
            }
            if let directory = try string(backend, t, "directory") {
                let resolved = resolve(directory)
                var isDirectory = false
                guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory), isDirectory else {
                    throw error(t, "directory", "folder \(resolved) does not exist")
                }
                config.backend.workingDirectory = resolved
            }
            if let environmentTable = try table(backend, t, "environment") {
                for key in environmentTable.keys {
                    guard let value = environmentTable[key]?.string else {
                        throw error("\(t).environment", key, "must be a string")
                    }
                    config.backend.environment[key] = value
                }
            }
            if let value = try seconds(backend, t, "connect_timeout") { config.backend.connectTimeout = value }
            if let value = try seconds(backend, t, "response_timeout") { config.backend.responseTimeout = value }
            if let value = try seconds(backend, t, "idle_timeout") { config.backend.idleTimeout = value }
            if let value = try int(backend, t, "max_connections", range: 1...100_000) { config.backend.maxConnectionsPerWorker = value }
            if let value = try seconds(backend, t, "pool_idle_timeout") { config.backend.poolIdleTimeout = value }
            if let value = try seconds(backend, t, "ready_timeout") { config.backend.readyTimeout = value }
            if let value = try seconds(backend, t, "stop_timeout") { config.backend.stopTimeout = value }
        }

        if let handlers = try table(root, "", "handlers") {
            let t = "handlers"
            try checkKeys(handlers, table: t, allowed: ["sources", "cache", "optimize", "swiftc", "prebuilt"])
            if let sources = handlers["sources"] {
                let paths: [String]
                if let single = sources.string {
                    paths = [single]
                } else {
                    paths = try strings(sources, t, "sources")
                }
                for path in paths.map(resolve) {
                    var isDirectory = false
                    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                        throw error(t, "sources", "\(path) does not exist")
                    }
                    let files: [String]
                    if isDirectory {
                        config.handlers.sourceDirectories.append(path)
                        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                        // Single-file handlers, and package handlers: folders with their own Package.swift.
                        files = names.filter { name in
                            name.hasSuffix(".swift") || FileManager.default.fileExists(atPath: "\(path)/\(name)/Package.swift")
                        }.sorted().map { "\(path)/\($0)" }
                    } else {
                        guard path.hasSuffix(".swift") else { throw error(t, "sources", "\(path) is not a .swift file") }
                        files = [path]
                    }
                    if isDirectory, FileManager.default.fileExists(atPath: "\(path)/Package.swift") {
                        // `sources` naming one package handler's folder directly.
                        config.handlers.sourceDirectories.removeLast()
                        let name = URL(fileURLWithPath: path).lastPathComponent
                        config.handlers.sources[name] = path
                        continue
                    }
                    for file in files {
                        let name = file.hasSuffix(".swift")
                            ? String(URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent)
                            : URL(fileURLWithPath: file).lastPathComponent
                        guard isValidHandlerName(name) else {
                            throw error(t, "sources", "handler file \(file): name must be lower-case letters, digits, _ or -, starting with a letter")
                        }
                        if let other = config.handlers.sources[name] {
                            throw error(t, "sources", "two handlers named \"\(name)\": \(other) and \(file)")
                        }
                        config.handlers.sources[name] = file
                    }
                }
            }
            if let cache = try string(handlers, t, "cache") { config.handlers.cacheDirectory = resolve(cache) }
            if let prebuilt = try string(handlers, t, "prebuilt") { config.handlers.prebuilt = resolve(prebuilt) }
            if let optimize = try bool(handlers, t, "optimize") { config.handlers.optimize = optimize }
            if let swiftc = try string(handlers, t, "swiftc") { config.handlers.swiftc = swiftc.contains("/") ? resolve(swiftc) : swiftc }
        }

        if let admin = try table(root, "", "admin") {
            try checkKeys(admin, table: "admin", allowed: ["listen"])
            if let listen = try string(admin, "admin", "listen") {
                if listen.hasPrefix("unix:") {
                    guard listen.count > 5 else { throw error("admin", "listen", "unix: needs a path") }
                    config.admin.listen = "unix:" + resolve(String(listen.dropFirst(5)))
                } else {
                    guard SocketAddressSpec(parsing: listen) != nil else {
                        throw error("admin", "listen", "\"\(listen)\" is neither host:port nor unix:/path")
                    }
                    config.admin.listen = listen
                }
            }
        }

        if let routes = root["route"] {
            guard let array = routes.array else {
                throw error("", "route", "must be an array of tables: [[route]]")
            }
            for index in 0..<array.count {
                let t = "route[\(index)]"
                guard let route = array[index].table else { throw error("", "route", "each route must be a table") }
                try checkKeys(route, table: t, allowed: ["match", "handler", "max_body_size"])
                guard let match = try string(route, t, "match") else { throw error(t, nil, "missing key \"match\" (e.g. match = \"GET /quote/{symbol}\")") }
                guard let handler = try string(route, t, "handler") else { throw error(t, nil, "missing key \"handler\"") }
                guard config.handlers.sources[handler] != nil || config.handlers.prebuilt != nil else {
                    let known = config.handlers.sources.keys.sorted().joined(separator: ", ")
                    throw error(t, "handler", "no handler named \"\(handler)\" (known: \(known.isEmpty ? "none; set [handlers] sources" : known))")
                }
                let limit = try size(route, t, "max_body_size") ?? config.server.maxBodyBytes
                config.routes.append(.init(match: match, handler: handler, maxBodyBytes: limit, line: locator.line(table: t, key: "match")))
            }
        }

        try applyEnvironment(environment, to: &config)
        return config
    }

    func tlsListener(_ table: TOMLTable, table t: String) throws(ConfigError) -> GatewayConfig.TLSListener {
        try checkKeys(table, table: t, allowed: ["listen", "certificate", "private_key", "sni", "client_ca", "client_auth"])
        guard let listenText = try string(table, t, "listen") else { throw error(t, nil, "missing key \"listen\" (e.g. \"0.0.0.0:8443\")") }
        guard let listen = SocketAddressSpec(parsing: listenText) else { throw error(t, "listen", "\"\(listenText)\" is not host:port") }
        let certificate = try existingFile(table, t, "certificate", required: true)!
        let key = try existingFile(table, t, "private_key", required: true)!
        var listener = GatewayConfig.TLSListener(
            listen: listen, certificate: certificate, privateKey: key, line: locator.line(table: t, key: "listen"))
        listener.clientCA = try existingFile(table, t, "client_ca", required: false)
        if let auth = try string(table, t, "client_auth") {
            switch auth {
            case "require": listener.requireClientCertificate = true
            case "optional": listener.requireClientCertificate = false
            default: throw error(t, "client_auth", "must be \"require\" or \"optional\", not \"\(auth)\"")
            }
        }
        if let sni = table["sni"] {
            guard let array = sni.array else { throw error(t, "sni", "must be an array of tables: [[server.tls.sni]]") }
            for index in 0..<array.count {
                let st = "\(t).sni[\(index)]"
                guard let entry = array[index].table else { throw error(t, "sni", "each SNI entry must be a table") }
                try checkKeys(entry, table: st, allowed: ["server_names", "certificate", "private_key"])
                guard let namesValue = entry["server_names"] else { throw error(st, nil, "missing key \"server_names\"") }
                let names = try strings(namesValue, st, "server_names")
                guard !names.isEmpty else { throw error(st, "server_names", "needs at least one name") }
                listener.sni.append(
                    .init(
                        serverNames: names.map { $0.lowercased() },
                        certificate: try existingFile(entry, st, "certificate", required: true)!,
                        privateKey: try existingFile(entry, st, "private_key", required: true)!))
            }
        }
        return listener
    }

    /// A path key whose file must exist.
    func existingFile(_ table: TOMLTable, _ t: String, _ key: String, required: Bool) throws(ConfigError) -> String? {
        guard let value = try string(table, t, key) else {
            if required { throw error(t, nil, "missing key \"\(key)\"") }
            return nil
        }
        let path = resolve(value)
        guard FileManager.default.isReadableFile(atPath: path) else { throw error(t, key, "file \(path) does not exist or is not readable") }
        return path
    }

    func applyEnvironment(_ environment: [String: String], to config: inout GatewayConfig) throws(ConfigError) {
        if let listen = environment[GatewayConfig.EnvironmentKey.listen], !listen.isEmpty {
            config.server.listen = try listen.split(separator: ",").map { (part) throws(ConfigError) in
                let text = part.trimmed
                guard let spec = SocketAddressSpec(parsing: text) else {
                    throw ConfigError(file: "environment", line: nil, key: GatewayConfig.EnvironmentKey.listen, message: "\"\(text)\" is not host:port")
                }
                return spec
            }
        }
        if let admin = environment[GatewayConfig.EnvironmentKey.adminListen], !admin.isEmpty {
            guard admin.hasPrefix("unix:") || SocketAddressSpec(parsing: admin) != nil else {
                throw ConfigError(file: "environment", line: nil, key: GatewayConfig.EnvironmentKey.adminListen, message: "\"\(admin)\" is neither host:port nor unix:/path")
            }
            config.admin.listen = admin
        }
        if let address = environment[GatewayConfig.EnvironmentKey.backendAddress], !address.isEmpty {
            guard let parsed = BackendAddress(parsing: address) else {
                throw ConfigError(file: "environment", line: nil, key: GatewayConfig.EnvironmentKey.backendAddress, message: "\"\(address)\" is neither unix:/path nor host:port")
            }
            config.backend.address = parsed
        }
    }

    // MARK: typed access

    func checkKeys(_ table: TOMLTable, table name: String, allowed: Set<String>) throws(ConfigError) {
        for key in table.keys where !allowed.contains(key) {
            let place = name.isEmpty ? "at the top level" : "in [\(name.replacing(/\[\d+\]/, with: ""))]"
            throw error(name, key, "unknown key \(place); known keys: \(allowed.sorted().joined(separator: ", "))")
        }
    }

    func table(_ parent: TOMLTable, _ t: String, _ key: String) throws(ConfigError) -> TOMLTable? {
        guard let value = parent[key] else { return nil }
        guard let table = value.table else { throw error(t, key, "must be a table, not \(value.type)") }
        return table
    }

    func string(_ table: TOMLTable, _ t: String, _ key: String) throws(ConfigError) -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else { throw error(t, key, "must be a string, not \(value.type)") }
        return string
    }

    func strings(_ value: any TOMLValueConvertible, _ t: String, _ key: String) throws(ConfigError) -> [String] {
        guard let array = value.array else { throw error(t, key, "must be an array of strings, not \(value.type)") }
        var result: [String] = []
        for index in 0..<array.count {
            guard let string = array[index].string else { throw error(t, key, "element \(index + 1) must be a string") }
            result.append(string)
        }
        return result
    }

    func bool(_ table: TOMLTable, _ t: String, _ key: String) throws(ConfigError) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else { throw error(t, key, "must be true or false, not \(value.type)") }
        return bool
    }

    func int(_ table: TOMLTable, _ t: String, _ key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let value = table[key] else { return nil }
        guard value.type == .int, let int = value.int else { throw error(t, key, "must be an integer, not \(value.type)") }
        guard range.contains(int) else { throw error(t, key, "must be between \(range.lowerBound) and \(range.upperBound)") }
        return int
    }

    /// Seconds, as an integer or a float, greater than zero.
    func seconds(_ table: TOMLTable, _ t: String, _ key: String) throws(ConfigError) -> Double? {
        guard let value = table[key] else { return nil }
        let seconds: Double
        if value.type == .int, let int = value.int {
            seconds = Double(int)
        } else if value.type == .double, let double = value.double {
            seconds = double
        } else {
            throw error(t, key, "must be a number of seconds, not \(value.type)")
        }
        guard seconds > 0, seconds <= 86_400 * 7 else { throw error(t, key, "must be more than 0 and at most 604800 seconds (7 days)") }
        return seconds
    }

    /// A size in bytes: an integer, or a string with a unit ("512KiB", "1MiB", "1GiB").
    func size(_ table: TOMLTable, _ t: String, _ key: String) throws(ConfigError) -> Int? {
        guard let value = table[key] else { return nil }
        if value.type == .int, let int = value.int, int > 0 { return int }
        if let text = value.string {
            let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)]
            for (suffix, factor) in units where text.hasSuffix(suffix) {
                if let number = Int(text.dropLast(suffix.count).trimmed), number > 0 {
                    return number * factor
                }
            }
        }
        throw error(t, key, "must be a positive number of bytes or a string like \"512KiB\", \"1MiB\"")
    }
}

/// Handler names are file names and C-ish identifiers: `quote`, `order-book`.
public func isValidHandlerName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, ("a"..."z").contains(first) else { return false }
    return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
}
