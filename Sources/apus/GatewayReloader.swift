import ApusCompiler
import ApusConfig
import ApusServer
import ApusSystem
import FoundationEssentials
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Re-reads the config, rebuilds what changed (the compile cache skips the rest),
/// reloads certificates and swaps the route snapshot into every event loop at
/// once. Whatever fails leaves the running routes, handlers and certificates as
/// they were. Used by `serve --dev` on save and by SIGHUP / `apus reload`.
actor GatewayReloader {
    /// What a reload did.
    struct Outcome: Codable, Sendable {
        var pid: Int32
        /// Seconds since 1970 when the reload finished.
        var finishedAt: Double
        var ok: Bool
        var message: String
    }

    private let options: ConfigOptions
    private let dev: Bool
    private let server: GatewayServer
    private let admin: AdminServer.AdminState?
    private let logger: Logger
    private var config: GatewayConfig
    /// Build hash of each handler serving now, to tell which ones a reload replaced.
    private var serving: [String: String]

    init(
        options: ConfigOptions, dev: Bool, config: GatewayConfig, built: GatewayBuilder.Result, server: GatewayServer,
        admin: AdminServer.AdminState?, logger: Logger
    ) {
        self.serving = built.handlers.mapValues(\.compiled.hash)
        self.admin = admin
        self.options = options
        self.dev = dev
        self.config = config
        self.server = server
        self.logger = logger
    }

    /// Loads the config the way `serve` does (dev mode builds without optimisation).
    static func loadConfig(_ options: ConfigOptions, dev: Bool) throws -> GatewayConfig {
        var config = try options.load()
        if dev { config.handlers.optimize = false }
        return config
    }

    /// The folders dev mode watches for handler sources and the config.
    var watchedFolders: [String] {
        var folders = config.handlers.sourceDirectories
        folders += config.handlers.sources.values.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
        folders.append(URL(fileURLWithPath: config.file).standardizedFileURL.deletingLastPathComponent().path)
        return Array(Set(folders)).sorted()
    }

    /// Whether a changed path is the config or a handler source.
    func isGatewayFile(_ path: String) -> Bool {
        let configPath = URL(fileURLWithPath: config.file).standardizedFileURL.path
        if path == configPath { return true }
        guard path.hasSuffix(".swift") else { return false }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return config.handlers.sourceDirectories.contains(folder) || config.handlers.sources.values.contains(path)
    }

    /// Rebuilds and swaps; `since` is when the change that caused it happened.
    @discardableResult
    func reload(reason: String, since: ContinuousClock.Instant = .now) async -> Outcome {
        let newConfig: GatewayConfig
        do {
            newConfig = try Self.loadConfig(options, dev: dev)
        } catch {
            return record(ok: false, "config not reloaded, the running one stays: \(error)")
        }
        let result: GatewayBuilder.Result
        do {
            result = try await GatewayBuilder(config: newConfig, logger: logger).build()
        } catch {
            return record(ok: false, "reload failed, the running handlers stay:\n\(error)")
        }
        let certificateFailures = server.reloadCertificates(reason: reason)
        await server.swapRouter(result.router)
        admin?.routerSwapped(result.router)
        let restartNeeded = restartOnlyChanges(from: config, to: newConfig)
        config = newConfig
        let replaced = result.handlers.values.map(\.compiled).filter { serving[$0.name] != $0.hash }.sorted { $0.name < $1.name }
        serving = result.handlers.mapValues(\.compiled.hash)
        var message = "routes reloaded (\(reason)): \(newConfig.routes.count) native route(s)"
        if !replaced.isEmpty {
            message += "; new builds: " + replaced.map { handler in
                handler.fromCache ? "\(handler.name) (cached)" : "\(handler.name) (compiled in \(handler.duration.formatted(places: 2))s)"
            }.joined(separator: ", ")
        }
        message += "; new code serving \(seconds(since: since).formatted(places: 2))s after the change"
        if !restartNeeded.isEmpty {
            message += "; restart apus to apply changes to \(restartNeeded.joined(separator: ", "))"
        }
        if !certificateFailures.isEmpty {
            return record(ok: false, message + "; certificates not reloaded: " + certificateFailures.joined(separator: "; "))
        }
        return record(ok: true, message)
    }

    private func record(ok: Bool, _ message: String) -> Outcome {
        if ok {
            logger.info("\(message)")
        } else {
            logger.error("\(message)")
        }
        let outcome = Outcome(pid: getpid(), finishedAt: Date().timeIntervalSince1970, ok: ok, message: message)
        // `apus reload` waits for this file to learn how its SIGHUP went.
        if let data = try? JSONEncoder().encode(outcome) {
            try? data.write(to: URL(fileURLWithPath: Self.statusFile(config)), options: .atomic)
        }
        return outcome
    }

    /// Sections that only take effect on restart.
    private func restartOnlyChanges(from old: GatewayConfig, to new: GatewayConfig) -> [String] {
        var sections: [String] = []
        if old.server.listen != new.server.listen || old.server.tls.map(\.listen) != new.server.tls.map(\.listen) {
            sections.append("[server] listeners")
        }
        if old.backend.address != new.backend.address || old.backend.command != new.backend.command {
            sections.append("[backend]")
        }
        return sections
    }

    /// Where a running `apus serve` keeps its pid, for `apus reload`: one file per
    /// config file, in its cache folder (which several configs may share).
    static func pidFile(_ config: GatewayConfig) -> String { "\(config.handlers.cacheDirectory)/apus-\(configTag(config)).pid" }
    /// Where it reports the outcome of each reload.
    static func statusFile(_ config: GatewayConfig) -> String { "\(config.handlers.cacheDirectory)/apus-\(configTag(config)).reload.json" }

    /// A short stable tag for the config file's absolute path (FNV-1a).
    private static func configTag(_ config: GatewayConfig) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in URL(fileURLWithPath: config.file).standardizedFileURL.path.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return String(hash, radix: 16)
    }
}
