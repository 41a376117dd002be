import ApusConfig
import ApusPlugins
import ApusProxy
import ApusRouting
import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Settings and services shared by every connection; immutable.
final class GatewayShared: Sendable {
    let logger: Logger
    let accessLog: AccessLog
    let trustedProxies: [CIDR]
    let threadPool: NIOThreadPool
    let readiness: BackendReadiness
    let scheme: String
    /// `Strict-Transport-Security` for responses on TLS listeners.
    let hsts: String?
    /// Whether requests without a W3C `traceparent` get one.
    let startTraces: Bool
    /// WebSocket (and other allowed upgrade) tunnels: the limit and the settings.
    let tunnels: TunnelLimit
    let upgradeProtocols: Set<String>
    let tunnelIdleTimeout: TimeAmount
    /// How long a tunnel may keep going after shutdown starts before it is closed with 1001.
    let tunnelShutdownGrace: TimeAmount
    /// How long a client may go without sending a byte of a request body that only the
    /// gateway waits for (a native handler's, or an HTTP/2 body not yet sent on): `keepalive_timeout`.
    let bodyTimeout: TimeAmount

    init(
        logger: Logger, accessLog: AccessLog, trustedProxies: [CIDR], threadPool: NIOThreadPool, readiness: BackendReadiness,
        scheme: String, hsts: String?, startTraces: Bool, tunnels: TunnelLimit, upgradeProtocols: [String],
        tunnelIdleTimeout: TimeAmount, tunnelShutdownGrace: TimeAmount, bodyTimeout: TimeAmount
    ) {
        self.bodyTimeout = bodyTimeout
        self.tunnels = tunnels
        self.upgradeProtocols = Set(upgradeProtocols)
        self.tunnelIdleTimeout = tunnelIdleTimeout
        self.tunnelShutdownGrace = tunnelShutdownGrace
        self.hsts = hsts
        self.startTraces = startTraces
        self.logger = logger
        self.accessLog = accessLog
        self.trustedProxies = trustedProxies
        self.threadPool = threadPool
        self.readiness = readiness
        self.scheme = scheme
    }
}

/// The gateway's per-connection handler: takes each request from the HTTP codec
/// (HTTP/1.1 here; HTTP/2 streams produce the same parts), routes it, and either
/// calls the native handler or streams it to the backend. One request at a time:
/// over HTTP/1.1 the front handler gives it one framed request and holds the
/// next until this one is answered (and `HTTPServerPipelineHandler` does the same
/// on connections the front handler has handed to the codec).
final class GatewayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The request in progress. Invariant: `.idle` between requests; exactly one
    /// response is written per request head.
    private enum State {
        /// Between requests.
        case idle
        /// Buffering the body for a native handler; then waiting for its answer.
        case native(NativeCall)
        /// Streaming to and from the backend.
        case proxy(ProxyExchange)
        /// An HTTP/2 request without content-length: whether it has a body (and so
        /// needs chunked framing towards the backend) shows with its next part.
        case proxyPending(HTTPRequestHead)
        /// An error response went out early; the rest of the request is dropped and the connection closes.
        case rejecting
        /// An upgrade request is with the backend, waiting for its 101 (or another answer).
        case upgrading(UpgradeExchange)
        /// An HTTP/2 stream carrying a WebSocket (RFC 8441): request DATA goes into the tunnel, its bytes come back as DATA.
        case tunnel(TunnelHandler)
    }

    private struct NativeCall {
        let route: NativeRoute
        let parameters: [(name: String, value: String)]
        let path: String
        let query: String
        var body: ByteBuffer?
    }

    /// What the access log and the response need to know about the current request.
    private struct RequestInfo {
        let method: HTTPMethod
        let uri: String
        let version: HTTPVersion
        let requestID: String
        let started: NIODeadline
        var keepAlive: Bool
        var kind: String = "proxy"
        var status: Int = 0
        var bytesOut: Int = 0
        var requestEnded = false
        var upstreamSeconds: Double?
        var bytesIn = 0
        /// The native route's pattern, or "(backend)" for proxied requests: the metrics' route label.
        var route = "(backend)"
        /// The W3C trace id this request carries (kept, or started here).
        var traceID = ""

        /// A request nothing of which was understood (refused before routing): logged as `- -`.
        static func unparsed(version: HTTPVersion, requestID: String) -> RequestInfo {
            var info = RequestInfo(
                method: .RAW(value: "-"), uri: "-", version: version, requestID: requestID, started: .now(), keepAlive: false)
            info.kind = "gateway"
            info.route = "(none)"
            return info
        }
    }

    private let loop: LoopState
    private let shared: GatewayShared
    /// The HTTP/1.1 connection's framing front, told when each response it handed over is complete.
    private let front: HTTP1FrontHandler?
    /// The HTTP/1.1 connection's response encoder, written to directly while the front
    /// handler frames the connection (`writeResponse`).
    private let encoder: HTTP1ResponseEncoder?
    private var state = State.idle
    private var info: RequestInfo?
    private var context: ChannelHandlerContext?
    private let client: ClientFacts
    private let clientDescription: String
    /// Counts requests, so a late native answer for an abandoned request is recognised.
    private var generation = 0
    private var readingPaused = false
    private var readPending = false
    /// An HTTP/2 WebSocket stream whose backend half-closed has sent END_STREAM already.
    private var tunnelOutputEnded = false
    /// Runs while a request body only the gateway waits for is incomplete (`checkBodyProgress`).
    private var bodyCheck: Scheduled<Void>?
    private var lastBodyRead = NIODeadline.uptimeNanoseconds(0)
    /// Gives up on an async or blocking handler that does not answer (`NativeResponder.timeOut`).
    private var nativeTimer: Scheduled<Void>?

    /// `peer` is the connection's, worked out once per connection (an HTTP/2
    /// connection's streams all share it).
    init(loop: LoopState, shared: GatewayShared, peer: PeerFacts, front: HTTP1FrontHandler? = nil, encoder: HTTP1ResponseEncoder? = nil) {
        self.loop = loop
        self.shared = shared
        self.front = front
        self.encoder = encoder
        self.client = peer.client
        self.clientDescription = peer.description
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandonRequest()
        self.context = nil
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receive(unwrapInboundIn(data), context: context)
    }

    /// A request part from the HTTP/1.1 front handler, which calls this directly.
    /// `noNativeRoute`: it found no native route for the head, so it is proxied
    /// without routing again. `received`: the head's bytes, which a proxied request's
    /// head for the backend is written from (`UpstreamRequestHead.relaying`).
    /// `facts`: given with `noNativeRoute` (and `received`), what the front handler's
    /// parse found in the fields, which the head then does not carry.
    func receive(
        _ part: HTTPServerRequestPart, noNativeRoute: Bool = false, received: ReceivedRequestHead? = nil, facts: FramedHeadFacts? = nil
    ) {
        guard let context else { return }
        receive(part, context: context, noNativeRoute: noNativeRoute, received: received, facts: facts)
    }

    private func receive(
        _ part: HTTPServerRequestPart, context: ChannelHandlerContext, noNativeRoute: Bool = false, received: ReceivedRequestHead? = nil,
        facts: FramedHeadFacts? = nil
    ) {
        switch part {
        case .head(let head):
            // Kept only while the head is handled: a proxied request's head is written in `startProxy`, at once.
            receivedHead = received
            requestHead(head, context: context, noNativeRoute: noNativeRoute, facts: received == nil ? nil : facts)
            receivedHead = nil
        case .body(let buffer): requestBody(buffer, context: context)
        case .end(let trailers): requestEnd(trailers, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        switch state {
        case .proxy(let exchange): exchange.requestReadComplete()
        case .tunnel(let tunnel): tunnel.tunnelFlush()
        case .native, .proxyPending:
            // A body is still to come (a bodyless request has ended by now).
            if bodyCheck == nil, info?.requestEnded == false {
                lastBodyRead = .now()
                scheduleBodyCheck(context, at: lastBodyRead + shared.bodyTimeout)
            }
        case .idle, .rejecting, .upgrading: break
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .proxy(let exchange) = state { exchange.downstreamWritabilityChanged(context.channel.isWritable) }
        if case .tunnel(let tunnel) = state { tunnel.tunnelSetReading(context.channel.isWritable) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandonRequest()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, case .idle = state {
            // A keep-alive connection that stayed quiet past keepalive_timeout.
            context.close(promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent, case .tunnel(let tunnel) = state {
            // An HTTP/2 WebSocket stream: let it run until close to the shutdown deadline, then end it.
            let bound = NIOLoopBound(tunnel, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: shared.tunnelShutdownGrace) { bound.value.tunnelClose(goingAway: false) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            answerMalformedRequest(parserError, context: context)
            return
        }
        if let streamError = error as? HTTP2StreamError {
            recordMalformedStream(streamError, context: context)
            return
        }
        shared.logger.debug("connection error", metadata: ["error": "\(error)", "client": "\(clientDescription)"])
        context.close(promise: nil)
    }

    /// NIO's HTTP/1.1 decoder met bytes that are not a valid request (the front
    /// handler gives it every head it does not frame itself). The client gets the
    /// gateway's JSON error with a request id, and the access log and metrics a
    /// line, like every other answer; then the connection closes. The decoder
    /// closes it right after this returns, so the answer is written and flushed now.
    private func answerMalformedRequest(_ error: HTTPParserError, context: ChannelHandlerContext) {
        switch state {
        case .rejecting, .tunnel:
            // Answered already, or no longer HTTP.
            context.close(promise: nil)
            return
        case .idle, .native, .proxy, .proxyPending, .upgrading: break
        }
        guard context.channel.isActive, info?.status ?? 0 == 0 else {
            // Gone, or the response has begun (a request body went bad mid-stream): closing is the only signal left.
            abandonRequest()
            context.close(promise: nil)
            return
        }
        // The error is the answer: the backend exchange in progress, if any, stops here.
        switch state {
        case .proxy(let exchange): exchange.cancel()
        case .upgrading(let exchange):
            exchange.cancel()
            shared.tunnels.release()
        default: break
        }
        generation += 1
        let (status, message) = Self.answer(to: error)
        guard info == nil else {
            // The head was fine and routed; its body was not.
            reject(status, message, context: context)
            return
        }
        // Nothing of the request was understood.
        info = .unparsed(version: .http1_1, requestID: loop.makeRequestID())
        RequestMetrics.inFlight.increment()
        refuseUnrouted(status, message, context: context)
    }

    /// `HTTP2StreamCodec` found an HTTP/2 request malformed and reset its stream
    /// (PROTOCOL_ERROR, RFC 9113 8.1.1). The reset is the client's only answer; the
    /// access log and metrics get a 400 refused before routing, with a request id,
    /// as nginx logs such a request, and the gateway log the reason.
    private func recordMalformedStream(_ error: HTTP2StreamError, context: ChannelHandlerContext) {
        guard case .idle = state, info == nil else {
            // Trailers: the request was under way, and ends as any reset request does.
            context.close(promise: nil)
            return
        }
        var refused = RequestInfo.unparsed(version: HTTPVersion(major: 2, minor: 0), requestID: loop.makeRequestID())
        refused.status = 400
        record(refused)
        shared.logger.info(
            "stream reset", metadata: ["reason": "\(error)", "client": "\(clientDescription)", "request.id": "\(refused.requestID)"])
        state = .rejecting
        context.close(promise: nil)
    }

    /// The status and message for a request NIO's decoder refused.
    static func answer(to error: HTTPParserError) -> (HTTPResponseStatus, String) {
        switch error {
        case .headerOverflow: return (.requestHeaderFieldsTooLarge, "request head is larger than the limit (max_header_size)")
        case .invalidEOFState, .closedConnection: return (.badRequest, "the connection ended in the middle of a request")
        case .invalidMethod: return (.badRequest, "malformed request: invalid method")
        case .invalidVersion: return (.badRequest, "malformed request: invalid HTTP version")
        case .invalidURL, .invalidPath, .invalidQueryString, .invalidFragment, .invalidHost, .invalidPort:
            return (.badRequest, "malformed request: invalid request target")
        case .invalidHeaderToken: return (.badRequest, "malformed request: invalid header field")
        case .invalidContentLength, .unexpectedContentLength: return (.badRequest, "malformed request: invalid Content-Length")
        case .invalidChunkSize: return (.badRequest, "malformed request: invalid chunk size in the chunked body")
        default: return (.badRequest, "malformed request")
        }
    }

    // MARK: outbound read gating (back-pressure towards the client)

    func read(context: ChannelHandlerContext) {
        if readingPaused {
            readPending = true
        } else {
            context.read()
        }
    }

    private func setReading(_ enabled: Bool) {
        readingPaused = !enabled
        if enabled, readPending, let context {
            readPending = false
            context.read()
        }
    }

    // MARK: requests

    private func requestHead(_ received: HTTPRequestHead, context: ChannelHandlerContext, noNativeRoute: Bool, facts: FramedHeadFacts? = nil) {
        var head = received
        generation += 1
        let supplied: String?
        if let facts {
            supplied = facts.requestID
        } else {
            supplied = head.headers.first(name: "x-request-id")
        }
        let requestID: String
        if let supplied, isValidRequestID(supplied) {
            requestID = supplied
        } else {
            requestID = loop.makeRequestID()
        }
        if info != nil { RequestMetrics.inFlight.decrement() }  // an unfinished request replaced (cannot happen with the pipeline handler)
        info = RequestInfo(
            method: head.method, uri: head.uri, version: head.version, requestID: requestID, started: .now(),
            keepAlive: facts?.keepAlive ?? (head.isKeepAlive || head.version.major >= 2))
        RequestMetrics.inFlight.increment()

        if noNativeRoute {
            startProxy(head, context: context, facts: facts)
            return
        }
        // HTTP/1 heads from NIO's decoder (the front handler frames none with a
        // Transfer-Encoding, or with two Hosts or none in HTTP/1.1), checked as nginx does.
        if head.version.major == 1 {
            if let coding = Self.unsupportedTransferCoding(head.headers) {
                // Only chunked is understood (RFC 9112 6.1: 501). NIO's decoder removes the
                // chunked framing only; passed on as chunked, the body would reach the
                // backend still in the other coding, with nothing saying so.
                refuseUnrouted(.notImplemented, "transfer coding \"\(coding)\" is not supported (only chunked is)", context: context)
                return
            }
            if case .CONNECT = head.method {
                // As nginx: a CONNECT tunnel to any host would make the gateway an open forward proxy.
                refuseUnrouted(.badRequest, "CONNECT is not supported: this is a reverse proxy", context: context)
                return
            }
            // RFC 9112 3.2: two Hosts could send the gateway and the backend to different
            // sites. (HTTP/1.0 may name none: the backend then gets the gateway's address.)
            let hosts = head.headers["host"].count
            if hosts > 1 || hosts == 0 && head.version.minor >= 1 {
                refuseUnrouted(
                    .badRequest, hosts > 1 ? "more than one Host header" : "an HTTP/1.1 request needs a Host header", context: context)
                return
            }
        }
        // Absolute form (`GET http://host/path`) becomes origin form with that Host, once, for
        // routing, native handlers and the backend alike; the access log keeps what was sent.
        // (The front handler frames only origin-form targets without a fragment; a head
        // changed here is no longer its bytes.)
        if head.useOriginForm() { receivedHead = nil }
        let uri = head.uri.utf8
        let queryStart = uri.firstIndex(of: UInt8(ascii: "?"))
        let rawPath = Substring(head.uri.utf8[..<(queryStart ?? uri.endIndex)])
        let router = loop.router
        // A path in normal form is routed as it is (and is a valid one); others are normalised first.
        let found: RouteTable<NativeRoute>.Match?
        let pathText: String
        switch Self.quickRoute(method: head.method.rawValue, rawPath: rawPath, table: router.table) {
        case .noRoute:
            found = nil
            pathText = ""
        case .route(let match):
            found = match
            pathText = String(rawPath)
        case .ask:
            let path: NormalizedPath
            do {
                path = try NormalizedPath(rawPath)
            } catch {
                if head.method == .OPTIONS && rawPath == "*" {
                    // `OPTIONS *` is about the server as a whole: the backend's to answer.
                    startProxy(head, context: context)
                    return
                }
                refuseUnrouted(.badRequest, "bad request target: \(error)", context: context)
                return
            }
            found = router.table.isEmpty ? nil : router.table.match(method: head.method.rawValue, path: path)
            pathText = found == nil ? "" : path.text
        }

        if let match = found {
            info?.kind = "native"
            info?.route = match.pattern.description
            let limit = match.target.maxBodyBytes
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
                reject(.payloadTooLarge, "request body is larger than this route's limit of \(limit) bytes", context: context)
                return
            }
            let query = queryStart.map { String(Substring(head.uri.utf8[uri.index(after: $0)...])) } ?? ""
            state = .native(
                NativeCall(route: match.target, parameters: match.parameters, path: pathText, query: query, body: nil))
            sendContinueIfExpected(head, context: context)
            nativeHeaders = head.headers
            return
        }
        startProxy(head, context: context)
    }

    /// `RouteTable.quickMatch` over the head's text.
    private static func quickRoute(method: String, rawPath: Substring, table: RouteTable<NativeRoute>) -> RouteTable<NativeRoute>.QuickMatch {
        let answer = rawPath.utf8.withContiguousStorageIfAvailable { path in
            method.utf8.withContiguousStorageIfAvailable { table.quickMatch(method: UnsafeRawBufferPointer($0), path: UnsafeRawBufferPointer(path)) }
        }
        return (answer ?? nil) ?? .ask
    }

    private var nativeHeaders = HTTPHeaders()
    /// The bytes of the head being handled, when the front handler framed it.
    private var receivedHead: ReceivedRequestHead?

    private func startProxy(_ head: HTTPRequestHead, context: ChannelHandlerContext, bodyKnown: Bool = false, facts: FramedHeadFacts? = nil) {
        guard shared.readiness.isReady else {
            reject(.serviceUnavailable, "backend is starting", context: context, retryAfter: true)
            return
        }
        // (The front handler gives no upgrade with facts: it leaves those to NIO's codec.)
        if facts == nil, let token = upgradeToken(head) {
            guard head.version.major >= 2 || !Self.hasBody(head) else {
                // The handshake's bytes after the head belong to the tunnel, so a body
                // would be lost on the way and the backend would wait for it.
                reject(.badRequest, "an upgrade request cannot carry a body", context: context)
                return
            }
            startUpgrade(head, token: token, context: context)
            return
        }
        if !bodyKnown, head.version.major >= 2, !head.headers.contains(name: "content-length") {
            state = .proxyPending(head)
            return
        }
        let exchange = ProxyExchange(
            pool: loop.pool, head: upstreamHead(for: head, context: context), requestHasBody: facts?.hasBody ?? Self.hasBody(head),
            downstream: self)
        state = .proxy(exchange)
        exchange.start()
        sendContinueIfExpected(head, context: context)
    }

    /// The head the backend gets: hop-by-hop fields out, forwarding fields and the
    /// request id in (`makeUpstreamHead`), and the trace context: a valid `traceparent`
    /// goes on; without one the gateway starts a trace (`start_traces`), so the
    /// backend's spans and the access line share a trace id. A head the front handler
    /// framed is written from its bytes, with the same rules (`UpstreamRequestHead.relaying`).
    private func upstreamHead(for head: HTTPRequestHead, context: ChannelHandlerContext) -> UpstreamRequestHead {
        let requestID = info!.requestID
        if let received = receivedHead {
            let loop = self.loop
            let relayed = UpstreamRequestHead.relaying(
                received, method: head.method, requestID: requestID, client: client, startTraces: shared.startTraces,
                makeTraceparent: { loop.makeTraceparent() }, allocator: context.channel.allocator)
            info?.traceID = relayed.traceID
            return relayed.head
        }
        var upstreamHead = makeUpstreamHead(head, requestID: requestID, client: client)
        if let traceparent = upstreamHead.headers.first(name: "traceparent"), let traceID = traceIDIfValid(traceparent) {
            info?.traceID = traceID
        } else if shared.startTraces {
            upstreamHead.headers.remove(name: "traceparent")
            upstreamHead.headers.remove(name: "tracestate")
            let traceparent = loop.makeTraceparent()
            upstreamHead.headers.add(name: "traceparent", value: traceparent)
            info?.traceID = String(traceparent.dropFirst(3).prefix(32))
        }
        return UpstreamRequestHead(encoding: upstreamHead, allocator: context.channel.allocator)
    }

    /// Whether a request head announces a body.
    static func hasBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding")
            || (head.headers.first(name: "content-length").flatMap(Int.init) ?? 0) > 0
    }

    /// The first transfer coding of a request other than `chunked`, if any
    /// (`canonicalForm` splits the list and trims each item).
    static func unsupportedTransferCoding(_ headers: HTTPHeaders) -> String? {
        headers[canonicalForm: "transfer-encoding"].lazy.map { $0.lowercased() }.first { $0 != "chunked" }
    }

    /// The gateway answers `Expect: 100-continue` itself, as nginx does: it is
    /// about to read the body either way.
    private func sendContinueIfExpected(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard head.version == .http1_1, head.headers.contains(name: "expect"),
            head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" })
        else { return }
        writeResponse(.head(HTTPResponseHead(version: head.version, status: .continue)), context: context)
        flushResponse(context: context)
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        info?.bytesIn += buffer.readableBytes
        if bodyCheck != nil { lastBodyRead = .now() }
        switch state {
        case .proxy(let exchange):
            exchange.requestBody(buffer)
        case .proxyPending(var head):
            cancelBodyCheck()  // on its way to the backend now: the backend's idle_timeout applies
            head.headers.add(name: "transfer-encoding", value: "chunked")
            state = .idle
            startProxy(head, context: context, bodyKnown: true)
            if case .proxy(let exchange) = state { exchange.requestBody(buffer) }
        case .native(var call):
            var buffer = buffer
            let total = (call.body?.readableBytes ?? 0) + buffer.readableBytes
            guard total <= call.route.maxBodyBytes else {
                state = .idle
                reject(.payloadTooLarge, "request body is larger than this route's limit of \(call.route.maxBodyBytes) bytes", context: context)
                return
            }
            if call.body == nil {
                call.body = buffer
            } else {
                call.body!.writeBuffer(&buffer)
            }
            state = .native(call)
        case .tunnel(let tunnel):
            tunnel.tunnelWrite(buffer)
        case .idle, .rejecting, .upgrading:
            break
        }
    }

    private func requestEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        info?.requestEnded = true
        cancelBodyCheck()
        switch state {
        case .proxy(let exchange):
            exchange.requestEnd(trailers)
        case .proxyPending(let head):
            state = .idle
            startProxy(head, context: context, bodyKnown: true)
            if case .proxy(let exchange) = state { exchange.requestEnd(trailers) }
        case .native(let call):
            invokeNative(call, context: context)
        case .rejecting:
            // The error response is out; the connection closes once it is written.
            break
        case .tunnel(let tunnel):
            // The client ended its side of an HTTP/2 WebSocket stream: a half-close towards the backend.
            tunnel.tunnelShutdownOutput()
        case .idle, .upgrading:
            break
        }
    }

    // MARK: native handlers

    private func invokeNative(_ call: NativeCall, context: ChannelHandlerContext) {
        guard let info else { return }
        let request = NativeRequest(
            method: info.method.rawValue, path: call.path, query: call.query, requestID: info.requestID,
            remoteAddress: clientDescription,
            headers: nativeHeaders.map { ($0.name.asciiLowercased, $0.value) },
            parameters: call.parameters)
        let generation = self.generation
        let eventLoop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        let responder = NativeResponder(handlerName: call.route.library.name, logger: shared.logger) { response in
            if eventLoop.inEventLoop {
                handler.value.nativeCompleted(response, generation: generation)
            } else {
                eventLoop.execute { handler.value.nativeCompleted(response, generation: generation) }
            }
        }
        let library = call.route.library
        let body = call.body ?? ByteBuffer()
        switch library.kind {
        case .inline, .async:
            body.withUnsafeReadableBytes { library.invoke(request, body: $0, responder: responder) }
        case .blocking:
            shared.threadPool.submit { workState in
                guard workState == .active else {
                    responder.fail(status: 503, message: "gateway is shutting down")
                    return
                }
                body.withUnsafeReadableBytes { library.invoke(request, body: $0, responder: responder) }
            }
        }
        if case .native = state, generation == self.generation {
            // An async or blocking handler answers later: not later than backend.response_timeout.
            nativeTimer = loop.scheduleAnswerTimeout(for: responder)
        }
    }

    private func nativeCompleted(_ response: NativeResponse, generation: Int) {
        guard generation == self.generation, case .native = state, let context, var info else { return }
        nativeTimer?.cancel()
        nativeTimer = nil
        // Collected as pairs and made `HTTPHeaders` once: `HTTPHeaders.add` checks each
        // name again, and these were checked here (`HeaderRules`) or are the gateway's own.
        var fields: [(String, String)] = []
        fields.reserveCapacity(response.headers.count + 5)
        var status = response.status
        var body = response.body
        for (name, value) in response.headers {
            guard HeaderRules.isValidName(name.utf8), HeaderRules.isValidValue(value.utf8) else {
                shared.logger.error(
                    "native handler returned an invalid header; answering 500",
                    metadata: ["handler.name": "\(library(of: state)?.name ?? "?")", "header": "\(name)"])
                status = 500
                body = Array(#"{"error":"handler returned an invalid header"}"#.utf8)
                fields = [("content-type", "application/json")]
                break
            }
            if !HeaderRules.isGatewayOwned(name.utf8) { fields.append((name, value)) }
        }
        if !(200...599).contains(status) {
            shared.logger.error("native handler returned status \(status); answering 500")
            status = 500
        }
        // 204 and 304 carry no body (and over HTTP/2 a DATA frame on them is a protocol error).
        let mayHaveBody = HTTPResponseStatus(statusCode: status).mayHaveResponseBody
        if mayHaveBody { fields.append(("content-length", String(body.count))) }
        fields.append(("date", loop.dateHeader()))
        fields.append(("x-request-id", info.requestID))
        if let field = connectionField(version: info.version, keepAlive: info.keepAlive) { fields.append(field) }
        if let hsts = shared.hsts { fields.append(("strict-transport-security", hsts)) }
        info.status = status
        let head = HTTPResponseHead(
            version: info.version, status: HTTPResponseStatus(statusCode: status), headers: HTTPHeaders(fields))
        writeResponse(.head(head), context: context)
        if !info.method.isHEAD && mayHaveBody && !body.isEmpty {
            writeResponse(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body))), context: context)
            info.bytesOut = body.count
        }
        self.info = info
        finishResponse(context: context, close: !info.keepAlive)
    }

    private func library(of state: State) -> HandlerLibrary? {
        if case .native(let call) = state { return call.route.library }
        return nil
    }

    // MARK: responses

    /// `reject` for a request refused before routing: neither native nor proxied,
    /// so the access log and metrics show kind `gateway` and route `(none)`.
    private func refuseUnrouted(_ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext) {
        info?.kind = "gateway"
        info?.route = "(none)"
        reject(status, message, context: context)
    }

    /// Writes a small JSON error response and makes the connection close after
    /// it, unless the request is already complete (then keep-alive holds).
    private func reject(_ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext, retryAfter: Bool = false) {
        guard var info else { return }
        cancelBodyCheck()
        let close = !info.requestEnded || !info.keepAlive
        state = .rejecting
        writeError(status, message, context: context, close: close, retryAfter: retryAfter, info: &info)
        self.info = info
        finishResponse(context: context, close: close)
    }

    private func writeError(
        _ status: HTTPResponseStatus, _ message: String, context: ChannelHandlerContext, close: Bool, retryAfter: Bool = false,
        info: inout RequestInfo
    ) {
        var writer = JSONErrorBody()
        let body = writer.make(message: message, requestID: info.requestID)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.readableBytes))
        headers.add(name: "date", value: loop.dateHeader())
        headers.add(name: "x-request-id", value: info.requestID)
        if retryAfter { headers.add(name: "retry-after", value: "1") }
        if let (name, value) = connectionField(version: info.version, keepAlive: !close) { headers.add(name: name, value: value) }
        if let hsts = shared.hsts { headers.add(name: "strict-transport-security", value: hsts) }
        info.status = Int(status.code)
        writeResponse(.head(HTTPResponseHead(version: info.version, status: status, headers: headers)), context: context)
        if info.method != .HEAD {
            writeResponse(.body(.byteBuffer(body)), context: context)
            info.bytesOut = body.readableBytes
        }
    }

    /// Ends the current response, logs it, and closes the connection if asked.
    ///
    /// State is reset before `.end` is written: writing it lets
    /// `HTTPServerPipelineHandler` deliver the next pipelined request at once,
    /// re-entrantly, and that request must find the handler idle.
    private func finishResponse(context: ChannelHandlerContext, close: Bool, trailers: HTTPHeaders? = nil) {
        if let info {
            RequestMetrics.inFlight.decrement()
            record(info)
        }
        // A closing connection drops whatever else the client sends.
        state = close ? .rejecting : .idle
        info = nil
        setReading(true)
        if close {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let written = context.eventLoop.makePromise(of: Void.self)
            writeResponse(.end(trailers), context: context, promise: written)
            flushResponse(context: context)
            written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
        } else {
            writeResponse(.end(trailers), context: context)
            flushResponse(context: context)
            front?.gatewayResponseFinished()
        }
    }

    /// The response encoder, when the gateway may write to it directly: on an HTTP/1.1
    /// connection the front handler frames (on one handed to NIO's codec, its
    /// pipelining handler sits between them and must see every part).
    private var directEncoder: HTTP1ResponseEncoder? {
        guard let encoder, let front, !front.isHandedOver else { return nil }
        return encoder
    }

    /// Writes a part of the response: to the encoder directly when it can (each part
    /// through the pipeline is wrapped in `NIOAny` and cast back), else down the pipeline.
    private func writeResponse(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        if let encoder = directEncoder {
            encoder.writeDirectly(part, promise: promise)
        } else {
            context.write(wrapOutboundOut(part), promise: promise)
        }
    }

    private func flushResponse(context: ChannelHandlerContext) {
        if let encoder = directEncoder {
            encoder.flushDirectly()
        } else {
            context.flush()
        }
    }

    /// The request's access-log line and metrics.
    private func record(_ info: RequestInfo) {
        shared.recordRequest(
            loop: loop, client: clientDescription, method: info.method.rawValue, target: info.uri, version: info.version,
            status: info.status, kind: info.kind, route: info.route, requestID: info.requestID, traceID: info.traceID,
            started: info.started, upstreamSeconds: info.upstreamSeconds, bytesIn: info.bytesIn, bytesOut: info.bytesOut)
    }

    // MARK: body timeout

    private func scheduleBodyCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        bodyCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.checkBodyProgress(context)
        }
    }

    private func cancelBodyCheck() {
        bodyCheck?.cancel()
        bodyCheck = nil
    }

    /// A client that stops sending a body that only the gateway waits for (a native
    /// handler's, or an HTTP/2 body before it goes to the backend; a body on its way
    /// to the backend has the backend's `idle_timeout`) would hold its buffer and
    /// connection for ever. After `keepalive_timeout` without a byte the request is
    /// given up as nginx's `client_body_timeout` does: closed without an answer,
    /// logged as 408. One timer per body, moved on lazily rather than on every read.
    private func checkBodyProgress(_ context: ChannelHandlerContext) {
        bodyCheck = nil
        switch state {
        case .native, .proxyPending: break
        default: return
        }
        guard var info, !info.requestEnded else { return }
        let now = NIODeadline.now()
        if now - lastBodyRead < shared.bodyTimeout {
            scheduleBodyCheck(context, at: lastBodyRead + shared.bodyTimeout)
            return
        }
        info.status = 408
        record(info)
        RequestMetrics.inFlight.decrement()
        self.info = nil
        state = .rejecting
        generation += 1
        context.close(promise: nil)
    }

    private func abandonRequest() {
        cancelBodyCheck()
        nativeTimer?.cancel()
        nativeTimer = nil
        if info != nil {
            RequestMetrics.inFlight.decrement()
            info = nil
        }
        if case .proxy(let exchange) = state { exchange.cancel() }
        if case .upgrading(let exchange) = state {
            exchange.cancel()
            shared.tunnels.release()
        }
        if case .tunnel(let tunnel) = state { tunnel.tunnelClose(goingAway: false) }
        state = .idle
        generation += 1
    }
}

// MARK: - ProxyDownstream

extension GatewayHandler: ProxyDownstream {
    func proxyWriteHead(_ head: UpstreamResponseHead) {
        guard let context, var info else { return }
        if case .proxy(let exchange) = state, let at = exchange.responseHeadAt {
            info.upstreamSeconds = Double((at - info.started).nanoseconds) / 1e9
        }
        info.status = Int(head.status.code)
        self.info = info
        // HTTP/1.1 through the front handler: the client's head is written from the
        // backend's bytes, without a `String` per field (`UpstreamResponseHead.clientHead`).
        if let encoder = directEncoder,
            encoder.writeRelayedHead(head, version: info.version, requestID: info.requestID, keepAlive: info.keepAlive, hsts: shared.hsts)
        {
            return
        }
        var response = makeDownstreamHead(head.head, version: info.version, requestID: info.requestID, keepAlive: info.keepAlive)
        if let hsts = shared.hsts { response.headers.replaceOrAdd(name: "strict-transport-security", value: hsts) }
        writeResponse(.head(response), context: context)
    }

    func proxyWriteBody(_ buffer: ByteBuffer) {
        guard let context else { return }
        info?.bytesOut += buffer.readableBytes
        writeResponse(.body(.byteBuffer(buffer)), context: context)
    }

    func proxyWriteEnd(_ trailers: HTTPHeaders?, requestComplete: Bool) {
        guard let context, let info else { return }
        finishResponse(context: context, close: !requestComplete || !info.keepAlive, trailers: trailers)
    }

    func proxyFlush() {
        guard let context else { return }
        flushResponse(context: context)
    }

    func proxyFailed(_ error: UpstreamError, headWritten: Bool) {
        guard let context, var info else { return }
        // A client that stops reading is the client's business (nginx logs its timeouts at info).
        var level = Logger.Level.warning
        if case .clientStoppedReading = error { level = .info }
        shared.logger.log(
            level: level, "backend exchange failed",
            metadata: [
                "http.method": "\(info.method.rawValue)", "http.path": "\(info.uri)", "request.id": "\(info.requestID)",
                "error": "\(error)",
            ])
        guard !headWritten else {
            // Part of the response is out; closing is the only honest signal left.
            context.close(promise: nil)
            return
        }
        let close = !info.requestEnded || !info.keepAlive
        state = .rejecting
        writeError(error.status, error.description, context: context, close: close, info: &info)
        self.info = info
        finishResponse(context: context, close: close)
    }

    func proxySetRequestReading(_ enabled: Bool) {
        setReading(enabled)
    }

    var proxyDownstreamWritable: Bool { context?.channel.isWritable ?? false }
}

/// What the gateway knows about a connection's peer: the forwarding facts and
/// the "ip:port" logs show (empty when unknown).
struct PeerFacts: Sendable {
    let client: ClientFacts
    let description: String

    init(remote: SocketAddress?, local: SocketAddress?, shared: GatewayShared) {
        var peer = ""
        var trusted = false
        var description = ""
        if let remote, let ip = remote.ipAddress {
            peer = ip
            description = remote.port.map { "\(ip):\($0)" } ?? ip
            if let bytes = CIDR.parseAddress(ip) {
                trusted = shared.trustedProxies.contains { $0.contains(bytes) }
            }
        }
        self.description = description
        client = ClientFacts(peerAddress: peer, peerIsTrusted: trusted, scheme: shared.scheme, localAddress: local)
    }
}

/// The small JSON body of gateway-made error responses: `{"error":"…","request_id":"…"}`.
private struct JSONErrorBody {
    mutating func make(message: String, requestID: String) -> ByteBuffer {
        var text = "{\"error\":\""
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case _ where scalar.value < 0x20: text += " "
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\",\"request_id\":\"\(requestID)\"}"
        return ByteBuffer(string: text)
    }
}

// MARK: - WebSocket and other upgrades

extension GatewayHandler: UpgradeDownstream, TunnelEnd {
    /// The upgrade token of a request the backend should get as an upgrade: an
    /// HTTP/1.1 `Upgrade` with an allowed token (and `Connection: upgrade`), or an
    /// HTTP/2 extended CONNECT (RFC 8441). Other upgrades (h2c above all) are
    /// stripped with the hop-by-hop headers and proxied as plain requests.
    fileprivate func upgradeToken(_ head: HTTPRequestHead) -> String? {
        if head.version.major >= 2 {
            guard case .CONNECT = head.method, let token = head.headers.first(name: HTTP2StreamCodec.protocolHeader)?.lowercased(),
                shared.upgradeProtocols.contains(token)
            else { return nil }
            return token
        }
        // Cheapest test first: most requests carry no `Upgrade` at all. (Methods are
        // matched by case: `==` on HTTPMethod compares raw value strings.)
        guard head.headers.contains(name: "upgrade"), case .GET = head.method,
            head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }),
            let token = head.headers[canonicalForm: "upgrade"].first.map({ $0.lowercased() }),
            shared.upgradeProtocols.contains(token)
        else { return nil }
        return token
    }

    fileprivate func startUpgrade(_ head: HTTPRequestHead, token: String, context: ChannelHandlerContext) {
        guard shared.tunnels.acquire() else {
            reject(.serviceUnavailable, "too many WebSocket connections (max_websockets = \(shared.tunnels.maximum))", context: context, retryAfter: true)
            return
        }
        var upstream = makeUpstreamHead(head, requestID: info!.requestID, client: client)
        if head.version.major >= 2 {
            // RFC 8441 towards an HTTP/1.1 backend: CONNECT + :protocol becomes GET + Upgrade.
            upstream.method = .GET
            upstream.headers.remove(name: HTTP2StreamCodec.protocolHeader)
            upstream.headers.remove(name: "content-length")
            if !upstream.headers.contains(name: "sec-websocket-key") {
                var key = [UInt8](repeating: 0, count: 16)
                for index in key.indices { key[index] = UInt8.random(in: 0...255) }
                upstream.headers.add(name: "sec-websocket-key", value: base64(key))
            }
            if !upstream.headers.contains(name: "sec-websocket-version") {
                upstream.headers.add(name: "sec-websocket-version", value: "13")
            }
        }
        upstream.headers.add(name: "upgrade", value: token)
        upstream.headers.add(name: "connection", value: "Upgrade")
        let exchange = UpgradeExchange(eventLoop: context.eventLoop, settings: loop.pool.settings, head: upstream, downstream: self)
        state = .upgrading(exchange)
        exchange.start()
    }

    func upgradeAccepted(_ head: HTTPResponseHead, tunnel: TunnelHandler) {
        guard let context, var info else {
            tunnel.tunnelClose(goingAway: false)
            return
        }
        let tunnels = shared.tunnels
        if info.version.major >= 2 {
            // The stream stays; it carries the tunnel's bytes as DATA frames from now on.
            var headers = HTTPHeaders()
            for name in ["sec-websocket-protocol", "sec-websocket-extensions"] {
                for value in head.headers[canonicalForm: name] { headers.add(name: name, value: String(value)) }
            }
            headers.add(name: "x-request-id", value: info.requestID)
            info.status = 200
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: info.version, status: .ok, headers: headers))), promise: nil)
            state = .tunnel(tunnel)
            tunnel.partner = self
            logUpgrade(info)
            self.info = nil
            return
        }
        // HTTP/1.1: answer 101 with the backend's headers, then hand the connection to a tunnel end.
        var headers = head.headers
        headers.replaceOrAdd(name: "x-request-id", value: info.requestID)
        info.status = 101
        self.info = info
        writeResponse(.head(HTTPResponseHead(version: info.version, status: .switchingProtocols, headers: headers)), context: context)
        finishResponse(context: context, close: false)
        let idleTimeout = shared.tunnelIdleTimeout
        let grace = shared.tunnelShutdownGrace
        let bound = NIOLoopBound((self, context, tunnel), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context, tunnel) = bound.value
            let clientEnd = TunnelHandler(tracksServerFrames: true, shutdownGrace: grace, onClose: { tunnels.release() })
            let pipeline = context.pipeline.syncOperations
            do {
                try Self.removeHTTPHandlers(pipeline)
                // From now on a client's EOF half-closes the tunnel instead of ending it.
                try context.channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                try pipeline.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                try pipeline.addHandler(clientEnd)
                clientEnd.partner = tunnel
                tunnel.partner = clientEnd
                pipeline.removeHandler(handler, promise: nil)
            } catch {
                tunnels.release()
                tunnel.tunnelClose(goingAway: false)
                context.close(promise: nil)
            }
        }
    }

    /// Takes the HTTP/1.1 codec and its helpers out of a connection that now carries raw bytes.
    private static func removeHTTPHandlers(_ pipeline: ChannelPipeline.SynchronousOperations) throws {
        if let handler = try? pipeline.handler(type: HTTP1FrontHandler.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: HTTPServerPipelineHandler.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: HTTP1ResponseEncoder.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: HTTP1RequestMethodRecorder.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) {
            pipeline.removeHandler(handler, promise: nil)
        }
    }

    private func logUpgrade(_ info: RequestInfo) {
        RequestMetrics.inFlight.decrement()
        shared.recordRequest(
            loop: loop, client: clientDescription, method: info.method.rawValue, target: info.uri, version: info.version,
            status: info.status, kind: "websocket", route: info.route, requestID: info.requestID, traceID: info.traceID,
            started: info.started, upstreamSeconds: nil, bytesIn: 0, bytesOut: 0)
    }

    // MARK: TunnelEnd, for an HTTP/2 stream

    func tunnelWrite(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func tunnelFlush() { context?.flush() }

    func tunnelSetReading(_ enabled: Bool) { setReading(enabled) }

    func tunnelShutdownOutput() {
        // The backend half-closed: END_STREAM on our side; the client's DATA keeps flowing until its own.
        guard case .tunnel = state, !tunnelOutputEnded, let context else { return }
        tunnelOutputEnded = true
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func tunnelClose(goingAway: Bool) {
        guard case .tunnel(let tunnel) = state, let context else { return }
        state = .rejecting
        shared.tunnels.release()
        if !tunnelOutputEnded { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
        tunnel.tunnelClose(goingAway: false)
    }

    var tunnelWritable: Bool { context?.channel.isWritable ?? false }
}

/// Standard base64 of a few bytes (the WebSocket key), without Foundation on the data path.
private func base64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    var index = 0
    while index < bytes.count {
        let chunk = bytes[index..<min(index + 3, bytes.count)]
        var value = 0
        for byte in chunk { value = value << 8 | Int(byte) }
        value <<= (3 - chunk.count) * 8
        for position in 0..<4 {
            out.append(position <= chunk.count ? alphabet[(value >> (18 - 6 * position)) & 0x3F] : UInt8(ascii: "="))
        }
        index += 3
    }
    return String(decoding: out, as: UTF8.self)
}

extension String {
    /// ASCII-lowercased, without a new string when it already is (header names from HTTP/2
    /// always are, and most clients send lowercase or canonical ones).
    fileprivate var asciiLowercased: String {
        utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) ? lowercased() : self
    }
}
