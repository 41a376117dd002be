import ApusCompiler
import ApusConfig
import ApusPlugins
import ApusProxy
import ApusServer
import ApusSupervisor
import ApusSystem
import ArgumentParser
import FoundationEssentials
import Logging
import Metrics
import Prometheus
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Prints a user-facing error and exits non-zero. Every expected failure (config,
/// compile, load, bind) ends here with its own message, never a stack trace.
func fail(_ error: any Error) -> ExitCode {
    let message = String(describing: error)
    writeStandardError("apus: error: \(message)\n")
    return ExitCode(error is ConfigError ? 2 : 1)
}

func bootstrapLogging(_ level: String) -> Logger {
    let parsed = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = parsed
        return handler
    }
    return Logger(label: "apus")
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a config, compile its handlers (cached) and list the routes.",
        discussion: "Exits 0 when the gateway would start; otherwise prints the problem (file:line: key: message) and exits non-zero."
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let logger = bootstrapLogging(options.logLevel == "info" ? "warning" : options.logLevel)
        do {
            let config = try options.load()
            let result = try await GatewayBuilder(config: config, logger: logger).build()
            print("config \(config.file): OK")
            print("listen: \((config.server.listen.map { "http://\($0)" } + config.server.tls.map { "https://\($0.listen)" }).joined(separator: ", "))")
            print("backend: \(config.backend.address)\(config.backend.command.map { " (supervised: \($0.joined(separator: " ")))" } ?? "")")
            if config.routes.isEmpty {
                print("routes: none native; everything goes to the backend")
            } else {
                print("native routes:")
                for route in config.routes {
                    let handler = result.handlers[route.handler]!
                    let cached = handler.compiled.fromCache ? "cached" : "compiled in \(handler.compiled.duration.formatted(places: 1))s"
                    print("  \(route.match + String(repeating: " ", count: max(0, 32 - route.match.count))) -> \(route.handler) [\(handler.library.kind.rawValue), \(cached)]")
                }
                print("everything else -> backend")
            }
        } catch {
            throw fail(error)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Compile handlers (cached), start the backend if the config says how, and serve.",
        discussion: """
            Listens on [server] listen, serves native routes from compiled Swift handlers and \
            forwards everything else to [backend] address. SIGTERM or SIGINT stop accepting, \
            let in-flight requests finish (up to [server] shutdown_timeout), stop the backend \
            and exit 0. APUS_LISTEN and APUS_BACKEND_ADDRESS override the config.
            """
    )

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Watch handler sources and the config: recompile and hot-swap on save, restart the backend when its .py files change.")
    var dev = false

    @Flag(help: "With --dev: do not restart the supervised backend when Python files change.")
    var noBackendRestart = false

    func run() async throws {
        let logger = bootstrapLogging(options.logLevel)
        // Only the executable bootstraps metrics: swift-metrics into a Prometheus registry the admin listener serves.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let config: GatewayConfig
        let built: GatewayBuilder.Result
        do {
            config = try GatewayReloader.loadConfig(options, dev: dev)
            built = try await GatewayBuilder(config: config, logger: logger).build()
        } catch {
            throw fail(error)
        }

        let workers = config.server.workers == 0 ? System.coreCount : config.server.workers
        let group = MultiThreadedEventLoopGroup(numberOfThreads: workers)
        let threadPool = NIOThreadPool(numberOfThreads: config.server.blockingThreads)
        threadPool.start()

        let readiness = BackendReadiness(supervised: config.backend.command != nil)
        var services: [any Service] = []
        var supervisor: BackendSupervisor?
        if let command = config.backend.command {
            let probe: ReadinessProbe
            switch config.backend.address {
            case .unix(let path): probe = .unix(path: path)
            case .tcp(let host, let port): probe = .tcp(host: host, port: port)
            }
            // The `apus` Python package in the backend builds Swift modules with this same binary and cache.
            var environment = ["APUS_CACHE_DIR": config.handlers.cacheDirectory]
            if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
                environment["APUS_BIN"] = executable
            }
            environment = environment.filter { ProcessInfo.processInfo.environment[$0.key] == nil }
            environment.merge(config.backend.environment) { $1 }
            let backend = BackendSupervisor(
                configuration: .init(
                    command: command, directory: config.backend.workingDirectory, environment: environment,
                    probe: probe, readyTimeout: config.backend.readyTimeout, stopTimeout: config.backend.stopTimeout),
                logger: logger, readinessChanged: { readiness.set($0) })
            supervisor = backend
            services.append(backend)
        }
        let server: GatewayServer
        do {
            server = try GatewayServer(
                config: config, router: built.router, certificates: built.certificates, group: group, threadPool: threadPool, readiness: readiness, logger: logger)
        } catch {
            throw fail(error)
        }
        // Services stop in reverse order: the server drains before the backend is stopped.
        services.append(server)
        var adminState: AdminServer.AdminState?
        if let listen = config.admin.listen {
            do {
                let state = AdminServer.AdminState(
                    metricsText: {
                        var text: [UInt8] = []
                        registry.emit(into: &text)
                        server.emitRequestMetrics(into: &text)
                        return text
                    },
                    readiness: readiness, backend: try GatewayServer.socketAddress(config.backend.address), router: built.router)
                adminState = state
                services.append(
                    AdminServer(
                        listen: listen, group: group, state: state,
                        idleTimeout: .nanoseconds(Int64(config.server.keepAliveTimeout * 1_000_000_000)), logger: logger))
            } catch {
                throw fail(error)
            }
        }
        let serviceGroup = ServiceGroup(
            configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let reloader = GatewayReloader(
            options: options, dev: dev, config: config, built: built, server: server, admin: adminState, logger: logger)
        try? FileManager.default.createDirectory(atPath: config.handlers.cacheDirectory, withIntermediateDirectories: true)
        try? String(getpid()).write(toFile: GatewayReloader.pidFile(config), atomically: true, encoding: .utf8)
        let hangups = Task {
            for await _ in await UnixSignalsSequence(trapping: .sighup) {
                await reloader.reload(reason: "SIGHUP")
            }
        }
        let watching = dev ? try await startDevMode(config: config, reloader: reloader, supervisor: supervisor, logger: logger) : nil

        var failure: (any Error)?
        do {
            try await serviceGroup.run()
        } catch {
            failure = error
        }
        hangups.cancel()
        watching?.cancel()
        try? FileManager.default.removeItem(atPath: GatewayReloader.pidFile(config))
        try? await group.shutdownGracefully()
        try? await threadPool.shutdownGracefully()
        if let failure { throw fail(failure) }
        logger.info("stopped")
    }

    /// Watches handler folders and the config (and the backend's folder for .py files)
    /// and reloads or restarts on each debounced save.
    private func startDevMode(
        config: GatewayConfig, reloader: GatewayReloader, supervisor: BackendSupervisor?, logger: Logger
    ) async throws -> Task<Void, Never> {
        let watcher: FileWatcher
        do {
            watcher = try FileWatcher()
        } catch {
            throw fail(error)
        }
        let folders = await reloader.watchedFolders
        for folder in folders { watcher.watch(folder: folder) }
        let restartBackend = supervisor != nil && !noBackendRestart
        if restartBackend { watcher.watch(tree: config.backend.workingDirectory) }
        logger.info(
            "dev mode: watching handlers and config; compiling without optimisation",
            metadata: ["dev.folders": "\(folders.joined(separator: ", "))", "dev.backend_restart": "\(restartBackend)"])
        return Task {
            for await batch in watcher.changes() {
                var gatewayChanged = false
                for path in batch.paths where await reloader.isGatewayFile(path) { gatewayChanged = true }
                if gatewayChanged {
                    let names = batch.paths.map { URL(fileURLWithPath: $0).lastPathComponent }.sorted().joined(separator: ", ")
                    await reloader.reload(reason: "saved \(names)", since: batch.firstChange)
                }
                if restartBackend, batch.paths.contains(where: { $0.hasSuffix(".py") }) {
                    supervisor?.restart()
                }
            }
        }
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Reload a running `apus serve`: config, routes, handlers and certificates, with no failed requests.",
        discussion: """
            Checks the new config and compiles its handlers first; if anything is wrong it says why, exits non-zero             and the running gateway is not touched. Otherwise it signals the gateway (SIGHUP) and waits for it to             swap, printing the outcome.
            """
    )

    @OptionGroup var options: ConfigOptions

    @Option(help: "Seconds to wait for the gateway to report the reload.")
    var timeout: Double = 120

    func run() async throws {
        let logger = bootstrapLogging(options.logLevel == "info" ? "warning" : options.logLevel)
        let config: GatewayConfig
        do {
            config = try options.load()
            _ = try await GatewayBuilder(config: config, logger: logger).build()
        } catch {
            throw fail(error)
        }
        let pidFile = GatewayReloader.pidFile(config)
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmed),
            kill(pid, 0) == 0
        else {
            throw fail(ReloadError(description: "no running apus serve for \(config.file) (no live pid in \(pidFile))"))
        }
        let statusFile = GatewayReloader.statusFile(config)
        func status() -> GatewayReloader.Outcome? {
            FileManager.default.contents(atPath: statusFile).flatMap { try? JSONDecoder().decode(GatewayReloader.Outcome.self, from: $0) }
        }
        let sent = Date().timeIntervalSince1970
        kill(pid, SIGHUP)
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            if let outcome = status(), outcome.pid == pid, outcome.finishedAt >= sent {
                print(outcome.message)
                if !outcome.ok { throw ExitCode(1) }
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw fail(ReloadError(description: "apus (pid \(pid)) did not report the reload within \(Int(timeout))s"))
    }
}

/// `apus reload` could not reach or hear from the gateway.
struct ReloadError: Error, CustomStringConvertible {
    let description: String
}
