import ApusCompiler
import ApusConfig
import ApusPlugins
import ApusProxy
import ApusServer
import ApusSupervisor
import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Prints a user-facing error and exits non-zero. Every expected failure (config,
/// compile, load, bind) ends here with its own message, never a stack trace.
func fail(_ error: any Error) -> ExitCode {
    let message = String(describing: error)
    FileHandle.standardError.write(Data("apus: error: \(message)\n".utf8))
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
                    let cached = handler.compiled.fromCache ? "cached" : "compiled in \(String(format: "%.1f", handler.compiled.duration))s"
                    print("  \(route.match.padding(toLength: 32, withPad: " ", startingAt: 0)) -> \(route.handler) [\(handler.library.kind.rawValue), \(cached)]")
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
        abstract: "Compile handlers (cached), start the backend if the config says how, and serve.",
        discussion: """
            Listens on [server] listen, serves native routes from compiled Swift handlers and \
            forwards everything else to [backend] address. SIGTERM or SIGINT stop accepting, \
            let in-flight requests finish (up to [server] shutdown_timeout), stop the backend \
            and exit 0. APUS_LISTEN and APUS_BACKEND_ADDRESS override the config.
            """
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let logger = bootstrapLogging(options.logLevel)
        let config: GatewayConfig
        let built: GatewayBuilder.Result
        do {
            config = try options.load()
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
        if let command = config.backend.command {
            let probe: ReadinessProbe
            switch config.backend.address {
            case .unix(let path): probe = .unix(path: path)
            case .tcp(let host, let port): probe = .tcp(host: host, port: port)
            }
            services.append(
                BackendSupervisor(
                    configuration: .init(
                        command: command, directory: config.backend.workingDirectory, environment: config.backend.environment,
                        probe: probe, readyTimeout: config.backend.readyTimeout, stopTimeout: config.backend.stopTimeout),
                    logger: logger, readinessChanged: { readiness.set($0) }))
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
        let serviceGroup = ServiceGroup(
            configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        var failure: (any Error)?
        do {
            try await serviceGroup.run()
        } catch {
            failure = error
        }
        try? await group.shutdownGracefully()
        try? await threadPool.shutdownGracefully()
        if let failure { throw fail(failure) }
        logger.info("stopped")
    }
}
