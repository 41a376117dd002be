import ApusProxy
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The operator listener, separate from the public ones (loopback or a Unix
/// socket, never a public listener):
///
/// - `GET /metrics`: Prometheus text from the metrics registry;
/// - `GET /healthz`: 200 while the process serves;
/// - `GET /readyz`: 200 when the backend accepts a connection and every route's
///   handler is loaded, else 503 with the reason;
/// - `GET /routes`: the native route table with each handler's source, build hash and load time.
public final class AdminServer: Service, Sendable {
    private let listen: String
    private let group: any EventLoopGroup
    private let state: AdminState
    private let idleTimeout: TimeAmount
    private let logger: Logger

    /// What the admin endpoints read; the gateway updates the router on every swap.
    public final class AdminState: Sendable {
        let metricsText: @Sendable () -> [UInt8]
        let readiness: BackendReadiness
        let backend: SocketAddress
        let router: NIOLockedValueBox<Router>

        public init(metricsText: @escaping @Sendable () -> [UInt8], readiness: BackendReadiness, backend: SocketAddress, router: Router) {
            self.metricsText = metricsText
            self.readiness = readiness
            self.backend = backend
            self.router = NIOLockedValueBox(router)
        }

        /// Records the route snapshot now serving.
        public func routerSwapped(_ router: Router) { self.router.withLockedValue { $0 = router } }
    }

    /// `idleTimeout`: how long a connection may stay quiet (the server's `keepalive_timeout`).
    public init(listen: String, group: any EventLoopGroup, state: AdminState, idleTimeout: TimeAmount, logger: Logger) {
        self.listen = listen
        self.idleTimeout = idleTimeout
        self.group = group
        self.state = state
        self.logger = logger
    }

    public func run() async throws {
        let state = self.state
        let idleTimeout = self.idleTimeout
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try HTTPPipelines.configureSmallHTTPServer(channel, idleTimeout: idleTimeout)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(state: state))
                }
            }
        let channel: any Channel
        do {
            if listen.hasPrefix("unix:") {
                let path = String(listen.dropFirst(5))
                try? FileManager.default.removeItem(atPath: path)
                channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            } else {
                let spec = listen
                let colon = spec.lastIndex(of: ":")!
                let host = String(spec[..<colon].filter { $0 != "[" && $0 != "]" })
                channel = try await bootstrap.bind(host: host, port: Int(spec[spec.index(after: colon)...])!).get()
            }
        } catch {
            throw ServerError.bindFailed("admin listener \(listen): \(error)")
        }
        logger.info("admin listening", metadata: ["admin.address": "\(listen)"])
        try? await gracefulShutdown()
        try? await channel.close()
    }
}

/// Answers the admin endpoints; one request at a time per connection.
private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: AdminServer.AdminState
    private var head: HTTPRequestHead?

    init(state: AdminServer.AdminState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
            switch (head.method, path) {
            case (.GET, "/metrics"), (.HEAD, "/metrics"):
                respond(context, head, .ok, "text/plain; version=0.0.4; charset=utf-8", state.metricsText())
            case (.GET, "/healthz"), (.HEAD, "/healthz"):
                respond(context, head, .ok, "application/json", Array(#"{"status":"alive"}"#.utf8))
            case (.GET, "/readyz"), (.HEAD, "/readyz"):
                readiness(context, head)
            case (.GET, "/routes"), (.HEAD, "/routes"):
                respond(context, head, .ok, "application/json", routesJSON())
            case (_, "/metrics"), (_, "/healthz"), (_, "/readyz"), (_, "/routes"):
                writeSimpleResponse(
                    context, to: head, status: .methodNotAllowed, headers: [("content-type", "application/json"), ("allow", "GET, HEAD")],
                    body: Array(#"{"error":"only GET and HEAD"}"#.utf8))
            default:
                respond(context, head, .notFound, "application/json", Array(#"{"error":"not found; try /metrics, /healthz, /readyz, /routes"}"#.utf8))
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A malformed request was answered with 400 (and `Connection: close`) by NIO's protocol-error handler.
        context.close(promise: nil)
    }

    /// Ready when the backend accepts a connection now and every route has its handler.
    private func readiness(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let router = state.router.withLockedValue { $0 }
        let unloaded = router.descriptions.filter { $0.buildHash.isEmpty }.map(\.handler)
        guard unloaded.isEmpty else {
            respond(context, head, .serviceUnavailable, "application/json", Self.json(["status": "not ready", "reason": "handlers not loaded: \(unloaded.joined(separator: ", "))"]))
            return
        }
        guard state.readiness.isReady else {
            respond(context, head, .serviceUnavailable, "application/json", Self.json(["status": "not ready", "reason": "backend is starting"]))
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop).connectTimeout(TimeAmount.milliseconds(1000)).connect(to: state.backend).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let channel):
                channel.close(promise: nil)
                handler.respond(context, head, .ok, "application/json", Self.json(["status": "ready"]))
            case .failure(let error):
                handler.respond(
                    context, head, .serviceUnavailable, "application/json",
                    Self.json(["status": "not ready", "reason": "backend does not accept connections: \(error)"]))
            }
        }
    }

    /// One route as `/admin/routes` lists it.
    private struct RouteListing: Encodable {
        let match, handler, kind, source, buildHash, loadedAt: String
    }

    private func routesJSON() -> [UInt8] {
        let routes = state.router.withLockedValue { $0 }.descriptions.map { route in
            RouteListing(
                match: route.match, handler: route.handler, kind: route.kind, source: route.source, buildHash: route.buildHash,
                loadedAt: Date(timeIntervalSince1970: route.loadedAt).ISO8601Format())
        }
        return Self.json(["routes": routes])
    }

    private static func json(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    private func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8]) {
        writeSimpleResponse(context, to: request, status: status, headers: [("content-type", type)], body: body)
    }
}
