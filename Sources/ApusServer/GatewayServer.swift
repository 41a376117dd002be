import ApusConfig
import ApusProxy
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
    private let loops: [ObjectIdentifier: NIOLoopBound<LoopState>]
    private let logger: Logger
    private let bound: NIOLockedValueBox<[SocketAddress]> = NIOLockedValueBox([])

    /// Prepares the server; nothing is bound until `run()`.
    public init(
        config: GatewayConfig, router: Router, group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool,
        readiness: BackendReadiness, logger: Logger
    ) throws {
        self.config = config
        self.group = group
        self.logger = logger
        self.shared = GatewayShared(
            logger: logger, accessLog: AccessLog(format: config.server.accessLog), trustedProxies: config.server.trustedProxies,
            threadPool: threadPool, readiness: readiness, scheme: "http")
        let settings = UpstreamSettings(
            address: try Self.socketAddress(config.backend.address),
            connectTimeout: .seconds(config.backend.connectTimeout),
            responseTimeout: .seconds(config.backend.responseTimeout),
            idleTimeout: .seconds(config.backend.idleTimeout),
            maxConnections: config.backend.maxConnectionsPerWorker,
            poolIdleTimeout: .seconds(config.backend.poolIdleTimeout))
        var loops: [ObjectIdentifier: NIOLoopBound<LoopState>] = [:]
        for eventLoop in group.makeIterator() {
            // Each loop's state is created on that loop: its pool's timers belong there.
            let state = try eventLoop.submit {
                NIOLoopBound(
                    LoopState(eventLoop: eventLoop, pool: UpstreamPool(eventLoop: eventLoop, settings: settings, logger: logger), router: router),
                    eventLoop: eventLoop)
            }.wait()
            loops[ObjectIdentifier(eventLoop)] = state
        }
        self.loops = loops
    }

    static func socketAddress(_ address: BackendAddress) throws -> SocketAddress {
        switch address {
        case .unix(let path): return try SocketAddress(unixDomainSocketPath: path)
        case .tcp(let host, let port): return try SocketAddress.makeAddressResolvingHost(host, port: port)
        }
    }

    /// The addresses actually bound (port 0 resolved), once `run()` has bound them.
    public var boundAddresses: [SocketAddress] { bound.withLockedValue { $0 } }

    /// Hands every event loop a new route snapshot; requests already routed keep the old one.
    public func swapRouter(_ router: Router) {
        for eventLoop in group.makeIterator() {
            guard let state = loops[ObjectIdentifier(eventLoop)] else { continue }
            eventLoop.execute { state.value.router = router }
        }
    }

    public func run() async throws {
        let quiesce = ServerQuiescingHelper(group: group)
        let loops = self.loops
        let shared = self.shared
        let keepAlive = TimeAmount.seconds(config.server.keepAliveTimeout)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = config.server.maxHeaderBytes
        limits.maxHeaderFieldSize = config.server.maxHeaderBytes
        let decoderLimits = limits

        let bootstrap = ServerBootstrap(group: group)
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
                    guard let state = loops[ObjectIdentifier(channel.eventLoop)] else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(
                        withPipeliningAssistance: true, withServerUpgrade: nil, withErrorHandling: true,
                        withOutboundHeaderValidation: true, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try sync.addHandler(IdleStateHandler(readTimeout: keepAlive))
                    try sync.addHandler(GatewayHandler(loop: state.value, shared: shared))
                }
            }

        var channels: [any Channel] = []
        do {
            for spec in config.server.listen {
                let channel = try await bootstrap.bind(host: spec.host, port: spec.port).get()
                channels.append(channel)
                if let address = channel.localAddress {
                    bound.withLockedValue { $0.append(address) }
                    logger.info("listening", metadata: ["server.address": "http://\(spec.host):\(address.port ?? spec.port)"])
                }
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw ServerError.bindFailed("\(error)")
        }

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
