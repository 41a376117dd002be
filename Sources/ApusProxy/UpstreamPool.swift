import CoreMetrics
import Logging
import Synchronization
import NIOCore
import NIOHTTP1
import NIOPosix

/// Settings for the connections to one backend.
public struct UpstreamSettings: Sendable {
    /// Where the backend listens.
    public var address: SocketAddress
    /// Longest wait for a connection.
    public var connectTimeout: TimeAmount
    /// Longest wait for a response head after the request head was sent.
    public var responseTimeout: TimeAmount
    /// Longest a streaming body may go without a byte in either direction.
    public var idleTimeout: TimeAmount
    /// Upper bound on connections per event loop; requests past it wait in line.
    public var maxConnections: Int
    /// How long an unused pooled connection is kept.
    public var poolIdleTimeout: TimeAmount

    public init(
        address: SocketAddress, connectTimeout: TimeAmount, responseTimeout: TimeAmount, idleTimeout: TimeAmount,
        maxConnections: Int, poolIdleTimeout: TimeAmount
    ) {
        self.address = address
        self.connectTimeout = connectTimeout
        self.responseTimeout = responseTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.poolIdleTimeout = poolIdleTimeout
    }
}

/// Why a backend exchange failed; decides between 502 and 504.
public enum UpstreamError: Error, Sendable, CustomStringConvertible {
    case connectFailed(String)
    case connectTimeout
    case responseTimeout
    case idleTimeout
    /// The response stream was paused for `idle_timeout` because the client did not take it.
    case clientStoppedReading
    case closedEarly
    case invalidResponse(String)
    case poolShutDown

    public var description: String {
        switch self {
        case .connectFailed(let reason): return "backend unreachable: \(reason)"
        case .connectTimeout: return "timed out connecting to the backend"
        case .responseTimeout: return "backend did not answer in time"
        case .idleTimeout: return "backend stream stalled"
        case .clientStoppedReading: return "client stopped reading the response"
        case .closedEarly: return "backend closed the connection before answering"
        case .invalidResponse(let reason): return "backend sent an invalid response: \(reason)"
        case .poolShutDown: return "gateway is shutting down"
        }
    }

    /// 504 for the backend's timeouts, 408 for the client's, 502 for everything else.
    public var status: HTTPResponseStatus {
        switch self {
        case .connectTimeout, .responseTimeout, .idleTimeout: return .gatewayTimeout
        case .clientStoppedReading: return .requestTimeout
        default: return .badGateway
        }
    }
}

/// Backend pool metrics, shared by every loop's pool:
/// `apus_upstream_connections` (open now), `apus_upstream_waits_total` (requests that
/// queued for a connection at `max_connections`), `apus_upstream_connect_failures_total`,
/// `apus_upstream_timeouts_total{phase}` (connect, response, idle).
enum UpstreamMetrics {
    static let connections = Meter(label: "apus_upstream_connections")
    static let waits = Counter(label: "apus_upstream_waits_total")
    static let connectFailures = Counter(label: "apus_upstream_connect_failures_total")
    static let connectTimeouts = Counter(label: "apus_upstream_timeouts_total", dimensions: [("phase", "connect")])
    static let responseTimeouts = Counter(label: "apus_upstream_timeouts_total", dimensions: [("phase", "response")])
    static let idleTimeouts = Counter(label: "apus_upstream_timeouts_total", dimensions: [("phase", "idle")])
}

/// The keep-alive connections of one event loop to the backend.
///
/// A pool belongs to one event loop and is only touched on it, so the data path
/// takes no lock: the gateway's connection handlers and their backend
/// connections share the loop. Idle connections are reused most-recently-used
/// first (so a burst's extra connections age out), and kept until
/// `poolIdleTimeout`; requests past `maxConnections` wait in line.
public final class UpstreamPool {
    /// The loop this pool belongs to.
    public let eventLoop: any EventLoop
    public let settings: UpstreamSettings
    private let logger: Logger
    private var idle: [UpstreamConnection] = []
    private var open = 0
    private var waiters: [EventLoopPromise<UpstreamConnection>] = []
    private var sweeper: RepeatedTask?
    private var isShutDown = false
    /// Exchanges in flight. One sweep per loop checks their deadlines every
    /// `deadlineTick`, instead of two timers scheduled and cancelled per request.
    private var inFlight: [ObjectIdentifier: ProxyExchange] = [:]
    private var deadlineSweep: RepeatedTask?
    /// How often in-flight deadlines are checked: timeouts fire up to this much late.
    static let deadlineTick = TimeAmount.milliseconds(100)

    public init(eventLoop: any EventLoop, settings: UpstreamSettings, logger: Logger) {
        self.eventLoop = eventLoop
        self.settings = settings
        self.logger = logger
        let interval = TimeAmount.nanoseconds(max(settings.poolIdleTimeout.nanoseconds / 2, 100_000_000))
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        sweeper = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            loopBound.value.closeExpiredIdleConnections()
        }
    }

    /// Connections open now, idle or busy.
    public var openConnections: Int { open }

    /// Hands out an idle connection, or opens one, or queues when at the limit.
    /// `fresh` skips the idle ones while below the limit: a retry after a pooled
    /// connection turned out closed must not meet another (a backend closes idle
    /// connections in batches, after its own keep-alive timeout).
    public func acquire(fresh: Bool = false) -> EventLoopFuture<UpstreamConnection> {
        eventLoop.preconditionInEventLoop()
        if isShutDown { return eventLoop.makeFailedFuture(UpstreamError.poolShutDown) }
        if fresh && open < settings.maxConnections { return connect() }
        if let connection = takeIdle() { return eventLoop.makeSucceededFuture(connection) }
        if open < settings.maxConnections {
            return connect()
        }
        let promise = eventLoop.makePromise(of: UpstreamConnection.self)
        UpstreamMetrics.waits.increment()
        waiters.append(promise)
        return promise.futureResult
    }

    /// The most recently used idle connection that is still open, if there is one:
    /// what `acquire` gives first, without a future.
    public func takeIdle() -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        guard !isShutDown else { return nil }
        while let connection = idle.popLast() {
            if connection.channel.isActive {
                connection.isReused = true
                return connection
            }
        }
        return nil
    }

    private func connect() -> EventLoopFuture<UpstreamConnection> {
        open += 1
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(settings.connectTimeout)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Apus's request encoder (NIO's bytes, one pass) and response decoder, in the one
                    // handler. No outbound header validation: request heads reach the pool already
                    // checked (by the front handler's parser or llhttp over HTTP/1, by HTTP2StreamCodec
                    // over HTTP/2; each refuses CR, LF and NUL in values), plus forwarding headers built here.
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                }
            }
            .connect(to: settings.address)
            .flatMapErrorThrowing { error in
                pool.value.open -= 1
                pool.value.serveNextWaiter()
                if case ChannelError.connectTimeout = error {
                    UpstreamMetrics.connectTimeouts.increment()
                    throw UpstreamError.connectTimeout
                }
                UpstreamMetrics.connectFailures.increment()
                throw UpstreamError.connectFailed("\(error)")
            }
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
                let connection = UpstreamConnection(channel: channel, handler: handler)
                UpstreamMetrics.connections.increment()
                pool.value.logger.debug("backend connection opened", metadata: ["upstream.open": "\(pool.value.open)"])
                channel.closeFuture.assumeIsolated().whenComplete { _ in pool.value.connectionClosed(connection) }
                return connection
            }
    }

    /// Takes a connection back. A connection that is not `reusable` (the
    /// exchange did not finish cleanly, or either side asked to close) is closed.
    public func release(_ connection: UpstreamConnection, reusable: Bool) {
        eventLoop.preconditionInEventLoop()
        connection.handler.delegate = nil
        guard reusable, !isShutDown, connection.channel.isActive else {
            connection.channel.close(promise: nil)
            return
        }
        // A read held back for a slow client resumes: a pooled connection must notice the
        // backend closing it, and the next exchange must get its response.
        connection.handler.resumeReading()
        if let waiter = waiters.first {
            waiters.removeFirst()
            connection.isReused = true
            waiter.succeed(connection)
            return
        }
        connection.idleSince = .now()
        idle.append(connection)
    }

    private func connectionClosed(_ connection: UpstreamConnection) {
        open -= 1
        UpstreamMetrics.connections.decrement()
        if let index = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: index) }
        serveNextWaiter()
    }

    private func serveNextWaiter() {
        guard !waiters.isEmpty, open < settings.maxConnections else { return }
        let waiter = waiters.removeFirst()
        connect().cascade(to: waiter)
    }

    private func closeExpiredIdleConnections() {
        let cutoff = NIODeadline.now() - settings.poolIdleTimeout
        for connection in idle where connection.idleSince < cutoff {
            connection.channel.close(promise: nil)
        }
    }

    /// Starts checking an exchange's deadlines (idempotent).
    func track(_ exchange: ProxyExchange) {
        inFlight[ObjectIdentifier(exchange)] = exchange
        guard deadlineSweep == nil else { return }
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        deadlineSweep = eventLoop.scheduleRepeatedTask(initialDelay: Self.deadlineTick, delay: Self.deadlineTick) { _ in
            pool.value.sweepDeadlines()
        }
    }

    /// Stops checking an exchange (it finished).
    func untrack(_ exchange: ProxyExchange) {
        inFlight.removeValue(forKey: ObjectIdentifier(exchange))
    }

    private func sweepDeadlines() {
        guard !inFlight.isEmpty else {
            // Nothing in flight: no wakeups until the next request.
            deadlineSweep?.cancel()
            deadlineSweep = nil
            return
        }
        let now = NIODeadline.now()
        for exchange in Array(inFlight.values) { exchange.checkDeadlines(now) }
    }

    /// Closes idle connections and refuses new work; busy ones finish their exchange.
    public func shutdown() {
        eventLoop.preconditionInEventLoop()
        isShutDown = true
        sweeper?.cancel()
        for connection in idle { connection.channel.close(promise: nil) }
        for waiter in waiters { waiter.fail(UpstreamError.poolShutDown) }
        waiters.removeAll()
    }
}

// Confined to its pool's event loop: the futures that carry it are completed and read on that loop only.
/// One HTTP/1.1 connection to the backend.
public final class UpstreamConnection: @unchecked Sendable {
    let channel: any Channel
    let handler: UpstreamHandler
    /// Whether this connection served an earlier request (a stale one may be closed by the backend under us).
    public internal(set) var isReused = false
    var idleSince: NIODeadline = .now()

    init(channel: any Channel, handler: UpstreamHandler) {
        self.channel = channel
        self.handler = handler
    }
}

/// What an exchange on a backend connection reports to.
protocol UpstreamDelegate: AnyObject {
    func upstreamRead(_ part: UpstreamResponsePart)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(_ writable: Bool)
    func upstreamClosed()
    func upstreamError(_ error: any Error)
    /// Whether the backend may be read from now (the client can take more).
    var upstreamMayRead: Bool { get }
}

/// The only handler on a backend connection: encodes the current exchange's
/// request parts (`UpstreamRequestEncoder`), decodes the backend's response
/// (`UpstreamResponseDecoder`) and hands its parts to the exchange, and holds
/// reads while the client cannot keep up. Encoder and decoder are called
/// directly, not placed in the pipeline as handlers of their own: there each part
/// crossed a `NIOAny` (a dynamic cast of about 480 instructions a part, five
/// parts a request) and every read, write and flush passed two more handlers.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// The exchange using the connection. Strong: the pool clears it when the
    /// connection comes back (`UpstreamPool.release`) or the exchange lets go of it
    /// before a retry. A `weak` one gave every exchange a side table (an allocation,
    /// and the slow path for each retain and release of it).
    var delegate: (any UpstreamDelegate)?
    private var readHeld = false
    private(set) var context: ChannelHandlerContext?
    private var encoder = UpstreamRequestEncoder()
    private let decoder = UpstreamResponseDecoder()

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let failure = decoder.decode(unwrapInboundIn(data)) { part in delegate?.upstreamRead(part) }
        if let failure { errorCaught(context: context, error: failure) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        delegate?.upstreamWritabilityChanged(context.channel.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The end of the connection is the end of a body read until the close.
        if decoder.connectionEnded() { delegate?.upstreamRead(.end(nil)) }
        delegate?.upstreamClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        delegate?.upstreamError(error)
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.upstreamMayRead {
            readHeld = true
            return
        }
        context.read()
    }

    /// Writes a request head; `flush()` pushes what was written.
    func send(_ head: UpstreamRequestHead) {
        guard let context else { return }
        decoder.requestSent(head.method)
        encoder.write(head, context: context)
    }

    /// Encodes and writes a request part; `flush()` pushes what was written.
    func send(_ part: HTTPClientRequestPart) {
        guard let context else { return }
        if case .head(let head) = part { decoder.requestSent(head.method) }
        encoder.write(part, context: context, promise: nil)
    }

    /// Pushes what was sent.
    func flush() {
        context?.flush()
    }

    /// Reads again after the client caught up.
    func resumeReading() {
        guard readHeld, let context else { return }
        readHeld = false
        context.read()
    }
}

/// Whether a supervised backend has come up. Read on every proxied request
/// (one atomic load), written by the supervisor.
public final class BackendReadiness: Sendable {
    private let ready: Atomic<Bool>
    /// Whether the gateway waits for a supervisor to say the backend is up.
    public let isSupervised: Bool

    public init(supervised: Bool) {
        isSupervised = supervised
        ready = Atomic(!supervised)
    }

    /// Whether the backend is accepting connections (always true when not supervised).
    public var isReady: Bool { ready.load(ordering: .relaxed) }

    /// Set by the supervisor.
    public func set(_ value: Bool) { ready.store(value, ordering: .relaxed) }
}
