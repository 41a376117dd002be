import ApusConfig
import ApusProxy
import ApusSystem
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The public listeners: binds them, serves until graceful shutdown, then stops
/// accepting, lets in-flight requests finish up to `shutdown_timeout`, and closes
/// idle keep-alive connections (NIOExtras' `ServerQuiescingHelper`).
public final class GatewayServer: Service, Sendable {
    private let config: GatewayConfig
    private let group: MultiThreadedEventLoopGroup
    private let shared: GatewayShared
    private let tlsShared: GatewayShared
    private let certificates: [TLSCertificateStore]
    private let loops: [ObjectIdentifier: NIOLoopBound<LoopState>]
    /// Each loop's request metrics, read by scrapes and the idle check.
    private let stats: [LoopRequestStats]
    private let logger: Logger
    private let bound: NIOLockedValueBox<[SocketAddress]> = NIOLockedValueBox([])

    /// Prepares the server; nothing is bound until `run()`.
    public init(
        config: GatewayConfig, router: Router, certificates: [TLSCertificateStore], group: MultiThreadedEventLoopGroup,
        threadPool: NIOThreadPool, readiness: BackendReadiness, logger: Logger
    ) throws {
        self.config = config
        self.group = group
        self.logger = logger
        self.certificates = certificates
        let tunnels = TunnelLimit(maximum: config.server.maxWebSockets)
        let grace = TimeAmount.seconds(max(config.server.shutdownTimeout * 0.8, config.server.shutdownTimeout - 2))
        self.shared = GatewayShared(
            logger: logger, accessLog: AccessLog(format: config.server.accessLog), trustedProxies: config.server.trustedProxies,
            threadPool: threadPool, readiness: readiness, scheme: "http", hsts: nil, startTraces: config.server.startTraces, tunnels: tunnels,
            upgradeProtocols: config.server.upgradeProtocols, tunnelIdleTimeout: .seconds(config.server.webSocketIdleTimeout),
            tunnelShutdownGrace: grace, bodyTimeout: .seconds(config.server.keepAliveTimeout))
        self.tlsShared = GatewayShared(
            logger: logger, accessLog: AccessLog(format: config.server.accessLog), trustedProxies: config.server.trustedProxies,
            threadPool: threadPool, readiness: readiness, scheme: "https", hsts: config.server.hsts, startTraces: config.server.startTraces, tunnels: tunnels,
            upgradeProtocols: config.server.upgradeProtocols, tunnelIdleTimeout: .seconds(config.server.webSocketIdleTimeout),
            tunnelShutdownGrace: grace, bodyTimeout: .seconds(config.server.keepAliveTimeout))
        let settings = UpstreamSettings(
            address: try Self.socketAddress(config.backend.address),
            connectTimeout: .seconds(config.backend.connectTimeout),
            responseTimeout: .seconds(config.backend.responseTimeout),
            idleTimeout: .seconds(config.backend.idleTimeout),
            maxConnections: config.backend.maxConnectionsPerWorker,
            poolIdleTimeout: .seconds(config.backend.poolIdleTimeout))
        var loops: [ObjectIdentifier: NIOLoopBound<LoopState>] = [:]
        var allStats: [LoopRequestStats] = []
        for eventLoop in group.makeIterator() {
            let stats = LoopRequestStats()
            // Each loop's state is created on that loop: its pool's timers belong there.
            let state = try eventLoop.submit {
                NIOLoopBound(
                    LoopState(
                        eventLoop: eventLoop, pool: UpstreamPool(eventLoop: eventLoop, settings: settings, logger: logger), router: router,
                        stats: stats),
                    eventLoop: eventLoop)
            }.wait()
            loops[ObjectIdentifier(eventLoop)] = state
            allStats.append(stats)
        }
        self.loops = loops
        self.stats = allStats
    }

    /// Appends the request metrics (`RequestMetrics`), summed over the event loops, as Prometheus text.
    public func emitRequestMetrics(into buffer: inout [UInt8]) {
        RequestMetricsText.render(stats, into: &buffer)
    }

    /// The socket address of a backend address.
    public static func socketAddress(_ address: BackendAddress) throws -> SocketAddress {
        switch address {
        case .unix(let path): return try SocketAddress(unixDomainSocketPath: path)
        case .tcp(let host, let port): return try SocketAddress.makeAddressResolvingHost(host, port: port)
        }
    }

    /// The addresses actually bound (port 0 resolved), once `run()` has bound them.
    public var boundAddresses: [SocketAddress] { bound.withLockedValue { $0 } }

    /// Hands every event loop a new route snapshot and returns once all have it;
    /// requests already routed finish with the handler they started on.
    public func swapRouter(_ router: Router) async {
        for eventLoop in group.makeIterator() {
            guard let state = loops[ObjectIdentifier(eventLoop)] else { continue }
            try? await eventLoop.submit { state.value.router = router }.get()
        }
    }

    /// The certificate stores of the TLS listeners.
    public var certificateStores: [TLSCertificateStore] { certificates }

    public func run() async throws {
        let quiesce = ServerQuiescingHelper(group: group)
        let loops = self.loops
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = config.server.maxHeaderBytes
        limits.maxHeaderFieldSize = config.server.maxHeaderBytes
        let settings = PipelineSettings(
            decoderLimits: limits, maxHeadBytes: config.server.maxHeaderBytes, keepAliveTimeout: .seconds(config.server.keepAliveTimeout),
            maxConcurrentStreams: config.server.maxConcurrentStreams, maxHeaderListSize: config.server.maxHeaderBytes,
            shutdownTimeout: .seconds(config.server.shutdownTimeout))

        func bootstrap(_ configure: @escaping @Sendable (any Channel, NIOLoopBound<LoopState>) throws -> Void) -> ServerBootstrap {
            ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                    }
                }
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard let state = loops[ObjectIdentifier(channel.eventLoop)] else { throw ChannelError.ioOnClosedChannel }
                        try configure(channel, state)
                    }
                }
        }

        let shared = self.shared
        let tlsShared = self.tlsShared
        let h2c = config.server.h2c
        var listeners: [(SocketAddressSpec, String, ServerBootstrap)] = config.server.listen.map { spec in
            (spec, "http", bootstrap { try HTTPPipelines.configurePlain($0, loop: $1, shared: shared, settings: settings, h2c: h2c) })
        }
        for store in certificates {
            listeners.append(
                (store.listener.listen, "https",
                    bootstrap {
                        // Each new connection takes the certificates current at accept time.
                        try HTTPPipelines.configureTLS($0, context: store.context, loop: $1, shared: tlsShared, settings: settings)
                    }))
        }
        if let httpsPort = certificates.first?.listener.listen.port {
            for spec in config.server.redirectHTTPS {
                listeners.append(
                    (spec, "http (redirect to https)",
                        bootstrap { channel, _ in
                            try HTTPPipelines.configureSmallHTTPServer(channel, idleTimeout: settings.keepAliveTimeout)
                            try channel.pipeline.syncOperations.addHandler(HTTPSRedirectHandler(httpsPort: httpsPort))
                        }))
            }
        }

        var channels: [any Channel] = []
        do {
            for (spec, scheme, bootstrap) in listeners {
                let channel = try await bootstrap.bind(host: spec.host, port: spec.port).get()
                channels.append(channel)
                if let address = channel.localAddress {
                    bound.withLockedValue { $0.append(address) }
                    logger.info("listening", metadata: ["server.address": "\(scheme)://\(spec.host):\(address.port ?? spec.port)"])
                }
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw ServerError.bindFailed("\(error)")
        }

        // Certificates reload when their files change (and on SIGHUP, through the CLI's reload);
        // a bad new set keeps the old one serving.
        let reloader = Task { [certificates, logger] in
            guard !certificates.isEmpty else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if certificates.contains(where: { $0.filesChanged() }) {
                    Self.reloadCertificates(certificates, logger: logger, reason: "certificate files changed")
                }
            }
        }
        defer { reloader.cancel() }

        let memoryReturner = Task { [stats, logger] in await Self.returnMemoryWhenIdle(stats, logger: logger) }
        defer { memoryReturner.cancel() }

        // Serve until a shutdown signal (or cancellation) arrives.
        try? await gracefulShutdown()

        logger.info("shutting down: no new connections; waiting for in-flight requests", metadata: ["shutdown.timeout": "\(config.server.shutdownTimeout)"])
        let drained = group.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: drained)
        let deadline = TimeAmount.seconds(config.server.shutdownTimeout)
        let timer = group.next().scheduleTask(in: deadline) {
            drained.fail(ServerError.drainTimedOut)
        }
        do {
            try await drained.futureResult.get()
            timer.cancel()
            logger.info("all connections drained")
        } catch {
            logger.warning("shutdown timeout reached; closing remaining connections")
        }
        for eventLoop in group.makeIterator() {
            guard let state = loops[ObjectIdentifier(eventLoop)] else { continue }
            try? await eventLoop.submit { state.value.pool.shutdown() }.get()
        }
    }

    /// After a burst of load glibc keeps the freed memory in its arenas for reuse (a few
    /// MiB); once no request has finished for two seconds, hand it back, so an idle
    /// sidecar stays small. Once per quiet spell: nothing more is freed while nothing runs.
    private static func returnMemoryWhenIdle(_ stats: [LoopRequestStats], logger: Logger) async {
        var previous = -1
        var returnedAt = -1
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(2))
            let finished = stats.reduce(0) { $0 + $1.requestsFinished }
            defer { previous = finished }
            guard finished == previous, finished != returnedAt else { continue }
            returnedAt = finished
            // The RSS is read only for the debug line that reports it.
            let before = logger.logLevel <= .debug ? ProcessMemory.residentBytes() : nil
            guard ProcessMemory.releaseFreedMemory() else { return }
            if let before, let after = ProcessMemory.residentBytes() {
                logger.debug(
                    "idle: returned freed memory to the system",
                    metadata: ["memory.rss_before_kib": "\(before / 1024)", "memory.rss_after_kib": "\(after / 1024)"])
            }
        }
    }

    /// Reloads every listener's certificates; returns the errors (the old certificates keep serving where one failed).
    @discardableResult
    public func reloadCertificates(reason: String) -> [String] {
        Self.reloadCertificates(certificates, logger: logger, reason: reason)
    }

    @discardableResult
    private static func reloadCertificates(_ stores: [TLSCertificateStore], logger: Logger, reason: String) -> [String] {
        var failures: [String] = []
        for store in stores {
            do {
                try store.reload()
                logger.info("certificates reloaded", metadata: ["tls.listener": "\(store.listener.listen)", "reason": "\(reason)"])
            } catch {
                logger.error(
                    "certificate reload failed; the previous certificates keep serving",
                    metadata: ["tls.listener": "\(store.listener.listen)", "error": "\(error)"])
                failures.append("\(error)")
            }
        }
        return failures
    }
}

/// Failures of the listeners themselves.
public enum ServerError: Error, CustomStringConvertible {
    case bindFailed(String)
    case drainTimedOut

    public var description: String {
        switch self {
        case .bindFailed(let detail): return "cannot listen: \(detail)"
        case .drainTimedOut: return "in-flight requests did not finish before the shutdown timeout"
        }
    }
}

extension TimeAmount {
    static func seconds(_ value: Double) -> TimeAmount { .nanoseconds(Int64(value * 1_000_000_000)) }
}
