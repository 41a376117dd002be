import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS

/// What every connection pipeline needs; immutable, shared by all loops.
struct PipelineSettings: Sendable {
    let decoderLimits: NIOHTTPDecoderLimitConfiguration
    /// Largest request head the front handler frames itself; bigger ones go to the codec, which refuses them.
    let maxHeadBytes: Int
    let keepAliveTimeout: TimeAmount
    let maxConcurrentStreams: Int
    let maxHeaderListSize: Int
    let shutdownTimeout: TimeAmount
}

/// Builds the per-connection pipelines. HTTP/1.1 and HTTP/2 end in the same
/// `GatewayHandler`: an HTTP/2 stream is turned into HTTP/1-style request and
/// response parts by `HTTP2StreamCodec`, so routing, native
/// handlers and proxying are written once.
enum HTTPPipelines {
    /// HTTP/1.1: the front handler, which frames requests, answers native routes
    /// itself and gives every other request to the gateway as HTTP parts; Apus's
    /// response encoder for what the gateway answers. NIO's request decoder joins
    /// only when the front handler meets a request it does not frame
    /// (`addHTTP1Decoding`).
    static func configureHTTP1(
        _ channel: any Channel, loop: NIOLoopBound<LoopState>, shared: GatewayShared, settings: PipelineSettings
    ) throws {
        let sync = channel.pipeline.syncOperations
        let peer = PeerFacts(remote: channel.remoteAddress, local: channel.localAddress, shared: shared)
        let encoder = HTTP1ResponseEncoder()
        let front = HTTP1FrontHandler(
            loop: loop.value, shared: shared, client: peer.description, keepAliveTimeout: settings.keepAliveTimeout,
            maxHeadBytes: settings.maxHeadBytes, decoderLimits: settings.decoderLimits, responses: encoder)
        let gateway = GatewayHandler(loop: loop.value, shared: shared, peer: peer, front: front, encoder: encoder)
        front.gateway = gateway
        try sync.addHandlers([front, encoder, gateway, ConnectionMetricsHandler(http2: false)])
        ConnectionStartDeadline.remove(from: sync)
    }

    /// Adds NIO's request decoder (llhttp) and pipelining assistance to an HTTP/1.1
    /// pipeline that has Apus's response encoder: the front handler does this when
    /// it hands a connection over, with the decoder right behind itself. The
    /// pipelining handler goes behind the response encoder (it works on response
    /// parts, so it must see them before they are encoded). The decoder's errors
    /// reach the gateway, which answers them (`GatewayHandler.answerMalformedRequest`).
    /// No outbound header validation: every header this pipeline
    /// writes was already checked where it came from (the backend response decoder,
    /// `HeaderRules` for native answers, the gateway's own values).
    static func addHTTP1Decoding(
        _ sync: ChannelPipeline.SynchronousOperations, decoderPosition: ChannelPipeline.SynchronousOperations.Position,
        decoderLimits: NIOHTTPDecoderLimitConfiguration
    ) throws {
        let decoder = ByteToMessageHandler(
            HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: decoderLimits))
        try sync.addHandler(decoder, position: decoderPosition)
        let encoder = try sync.handler(type: HTTP1ResponseEncoder.self)
        try sync.addHandler(HTTP1RequestMethodRecorder(responses: encoder), position: .after(decoder))
        try sync.addHandler(HTTPServerPipelineHandler(), position: .after(encoder))
    }

    /// HTTP/2: flow control and stream limits from NIOHTTP2 (including its
    /// reset-flood and stream-error rate limits against rapid reset,
    /// CVE-2023-44487), GOAWAY on graceful shutdown and idle connections closed
    /// by the connection management handler.
    static func configureHTTP2(
        _ channel: any Channel, loop: NIOLoopBound<LoopState>, shared: GatewayShared, settings: PipelineSettings
    ) throws {
        var management = NIOHTTP2ServerConnectionManagementHandler.Configuration.defaults
        management.maxIdleTime = settings.keepAliveTimeout
        management.maxGraceTime = settings.shutdownTimeout
        management.keepalive = nil
        let manager = NIOHTTP2ServerConnectionManagementHandler(eventLoop: channel.eventLoop, configuration: management)

        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: settings.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: settings.maxHeaderListSize),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
            // RFC 8441: WebSockets over HTTP/2 streams.
            HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]
        connection.targetWindowSize = 4 << 20
        // HTTP2StreamCodec checks request header blocks in the pass that converts them.
        connection.headerBlockValidation = .disabled
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 1 << 20
        let sync = channel.pipeline.syncOperations
        let peer = PeerFacts(remote: channel.remoteAddress, local: channel.localAddress, shared: shared)
        _ = try sync.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connection, streamConfiguration: stream,
            streamDelegate: manager.http2StreamDelegate
        ) { streamChannel in
            // The event loop's cached succeeded future: a stream costs no future or Result of its own.
            do {
                let sync = streamChannel.pipeline.syncOperations
                try sync.addHandler(HTTP2StreamCodec(sendTimeout: settings.keepAliveTimeout, logger: shared.logger))
                try sync.addHandler(GatewayHandler(loop: loop.value, shared: shared, peer: peer))
                return streamChannel.eventLoop.makeSucceededVoidFuture()
            } catch {
                return streamChannel.eventLoop.makeFailedFuture(error)
            }
        }
        try sync.addHandler(manager)
        try sync.addHandler(ConnectionMetricsHandler(http2: true))
        ConnectionStartDeadline.remove(from: sync)
        // The manager starts its idle and grace timers on channelActive, which passed before
        // ALPN or the preface decided on HTTP/2; replay it to the manager alone (nothing follows it).
        if channel.isActive {
            manager.channelActive(context: try sync.context(handler: manager))
        }
    }

    /// A plain listener: HTTP/1.1, or HTTP/2 with prior knowledge when the
    /// connection opens with the HTTP/2 preface (h2c), on the same port.
    static func configurePlain(
        _ channel: any Channel, loop: NIOLoopBound<LoopState>, shared: GatewayShared, settings: PipelineSettings, h2c: Bool
    ) throws {
        guard h2c else { return try configureHTTP1(channel, loop: loop, shared: shared, settings: settings) }
        try channel.pipeline.syncOperations.addHandler(ConnectionStartDeadline(timeout: settings.keepAliveTimeout))
        try channel.pipeline.syncOperations.addHandler(
            HTTP2PrefaceDetector(
                http1: { try configureHTTP1($0, loop: loop, shared: shared, settings: settings) },
                http2: { try configureHTTP2($0, loop: loop, shared: shared, settings: settings) }))
    }

    /// NIO's HTTP/1.1 server pipeline, for the small listeners (the HTTPS redirect
    /// and admin listeners), with a connection closed once nothing has been read
    /// from it for `idleTimeout`; their connections were otherwise kept for ever.
    static func configureSmallHTTPServer(_ channel: any Channel, idleTimeout: TimeAmount) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(IdleStateHandler(readTimeout: idleTimeout))
        try sync.addHandler(CloseOnReadIdle())
        try sync.configureHTTPServerPipeline(withErrorHandling: true)
    }

    /// A TLS listener: the handshake, then HTTP/2 or HTTP/1.1 as ALPN decided.
    static func configureTLS(
        _ channel: any Channel, context: NIOSSLContext, loop: NIOLoopBound<LoopState>, shared: GatewayShared,
        settings: PipelineSettings
    ) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(ConnectionStartDeadline(timeout: settings.keepAliveTimeout))
        try sync.addHandler(PlainHTTPOnTLSPortHandler())
        try sync.addHandler(NIOSSLServerHandler(context: context))
        try sync.addHandler(
            ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    switch result {
                    case .negotiated("h2"):
                        try configureHTTP2(channel, loop: loop, shared: shared, settings: settings)
                    default:
                        try configureHTTP1(channel, loop: loop, shared: shared, settings: settings)
                    }
                }
            })
    }
}

/// Closes a connection whose HTTP pipeline is not set up within `timeout` of its
/// opening: a TCP connection that never sends a byte, a TLS handshake that never
/// completes, an HTTP/2 preface cut short. Until the set-up, no handler that
/// times connections out is in the pipeline (the HTTP/1.1 front handler's
/// keep-alive timer and HTTP/2's idle timer come with them), and such
/// connections held their descriptors for ever. A fixed deadline, not one moved
/// by each read: a handshake sent a byte at a time does not keep a connection
/// either (nginx times the handshake with `client_header_timeout` the same way).
/// `configureHTTP1` and `configureHTTP2` remove it.
final class ConnectionStartDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    /// Removes the deadline from a pipeline whose HTTP handlers are now in place (if it has one).
    static func remove(from sync: ChannelPipeline.SynchronousOperations) {
        guard let handler = try? sync.handler(type: ConnectionStartDeadline.self) else { return }
        sync.removeHandler(handler, promise: nil)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { schedule(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if deadline == nil { schedule(context) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    private func schedule(_ context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            bound.value.close(promise: nil)
        }
    }
}

/// Closes a connection when `IdleStateHandler` reports no read for its read
/// timeout: the keep-alive timeout of the small listeners (`configureSmallHTTPServer`).
final class CloseOnReadIdle: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Reads the first bytes of a plain connection and sets the pipeline up for
/// HTTP/2 if they are the HTTP/2 client preface, else for HTTP/1.1; then hands
/// the bytes on and leaves the pipeline.
final class HTTP2PrefaceDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private let http1: (any Channel) throws -> Void
    private let http2: (any Channel) throws -> Void
    private var buffered: ByteBuffer?
    private var decided = false

    init(http1: @escaping (any Channel) throws -> Void, http2: @escaping (any Channel) throws -> Void) {
        self.http1 = http1
        self.http2 = http2
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        guard !decided else { return }
        let bytes = buffered!.readableBytesView
        let count = min(bytes.count, Self.preface.count)
        let isPrefix = bytes.prefix(count).elementsEqual(Self.preface.prefix(count))
        if isPrefix && count < Self.preface.count { return }  // wait for more
        decided = true
        do {
            try (isPrefix ? http2 : http1)(context.channel)
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        // Hand the bytes on from a fresh stack: the new handlers were added inside this
        // read, and NIOHTTP2Handler does not expect its first read re-entrantly.
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (detector, context) = bound.value
            if let data = detector.buffered {
                detector.buffered = nil
                context.fireChannelRead(detector.wrapInboundOut(data))
                context.fireChannelReadComplete()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// The first handler of a TLS connection. A client that speaks plain HTTP to the
/// TLS port (`http://host:8443/`) gets a 400 saying so, as from nginx, instead of a
/// connection closed by a failed handshake. A TLS client's first byte is 0x16 (a
/// handshake record), an HTTP request's an upper-case letter; on anything but the
/// latter this handler hands the bytes on and leaves the pipeline.
final class PlainHTTPOnTLSPortHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let answer: String = {
        let body = "{\"error\":\"plain HTTP was sent to an HTTPS port: use https://\"}"
        return "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
            + "connection: close\r\n\r\n" + body
    }()

    private var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }  // the rest of the plain request: closing
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), first >= 0x41, first <= 0x5A else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        answered = true
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: Self.answer))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }
}

/// Answers every request on a redirect listener with `308` to the same path over HTTPS.
final class HTTPSRedirectHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let httpsPort: Int
    private var head: HTTPRequestHead?

    init(httpsPort: Int) { self.httpsPort = httpsPort }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            var host = head.headers.first(name: "host") ?? "localhost"
            // Drop the plain port; add the TLS one unless it is the default.
            if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") { host = String(host[..<colon]) }
            let authority = httpsPort == 443 ? host : "\(host):\(httpsPort)"
            let valid = head.uri.hasPrefix("/") && !head.uri.contains(where: { $0 == "\r" || $0 == "\n" })
            writeSimpleResponse(
                context, to: head, status: valid ? .permanentRedirect : .badRequest,
                headers: valid ? [("location", "https://\(authority)\(head.uri)")] : [], body: [])
        }
    }
}
