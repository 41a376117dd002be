import NIOCore
import NIOHTTP1
import NIOPosix

/// Where an upgrade request's answer goes.
public protocol UpgradeDownstream: ProxyDownstream {
    /// The backend switched protocols (`101`). `upstream` is the backend channel,
    /// now carrying raw bytes; the downstream answers the client and pairs itself
    /// (or a `TunnelHandler` in its place) with `tunnel`.
    func upgradeAccepted(_ head: HTTPResponseHead, tunnel: TunnelHandler)
}

/// An `Upgrade: websocket` request sent to the backend on a connection of its
/// own (a tunnel never goes back to a pool). On `101 Switching Protocols` the
/// backend connection's HTTP codec is replaced by a `TunnelHandler`, and bytes
/// the backend sent right after its 101 are handed on, not lost. Any other
/// answer is passed to the client as a normal response.
public final class UpgradeExchange {
    private let eventLoop: any EventLoop
    private let settings: UpstreamSettings
    private let head: HTTPRequestHead
    private weak var downstream: (any UpgradeDownstream)?
    private var channel: (any Channel)?
    private var upgraded = false
    private var responseStarted = false
    private var finished = false
    private var responseTimer: Scheduled<Void>?

    /// `head` already carries the upgrade headers the backend should see.
    public init(eventLoop: any EventLoop, settings: UpstreamSettings, head: HTTPRequestHead, downstream: any UpgradeDownstream) {
        self.eventLoop = eventLoop
        self.settings = settings
        self.head = head
        self.downstream = downstream
    }

    /// Connects and sends the request.
    public func start() {
        let exchange = NIOLoopBound(self, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(settings.connectTimeout)
            // A backend's EOF is a half-close of the tunnel, not the end of it.
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EndOfInputGate())
                    // Bytes after the 101 must reach the tunnel, not be dropped with the decoder.
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes)
                    try channel.pipeline.syncOperations.addHandler(UpgradeResponseHandler(exchange: exchange.value))
                }
            }
            .connect(to: settings.address)
            .whenComplete { result in
                let exchange = exchange.value
                switch result {
                case .success(let channel):
                    exchange.channel = channel
                    channel.write(HTTPClientRequestPart.head(exchange.head), promise: nil)
                    channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                    let bound = NIOLoopBound(exchange, eventLoop: exchange.eventLoop)
                    exchange.responseTimer = exchange.eventLoop.scheduleTask(in: exchange.settings.responseTimeout) {
                        if !bound.value.responseStarted { bound.value.fail(.responseTimeout) }
                    }
                case .failure(let error):
                    if case ChannelError.connectTimeout = error {
                        exchange.fail(.connectTimeout)
                    } else {
                        exchange.fail(.connectFailed("\(error)"))
                    }
                }
            }
    }

    /// The client went away before the upgrade finished.
    public func cancel() {
        finished = true
        responseTimer?.cancel()
        channel?.close(promise: nil)
    }

    fileprivate func received(_ part: HTTPClientResponsePart, context: ChannelHandlerContext) {
        guard !finished else { return }
        switch part {
        case .head(let response):
            if response.status.code < 200 && response.status != .switchingProtocols { return }
            responseStarted = true
            responseTimer?.cancel()
            if response.status == .switchingProtocols {
                upgraded = true
                switchToTunnel(response, context: context)
            } else {
                downstream?.proxyWriteHead(UpstreamResponseHead(response))
            }
        case .body(let buffer):
            downstream?.proxyWriteBody(buffer)
        case .end(let trailers):
            guard !upgraded else { return }
            finished = true
            channel?.close(promise: nil)
            downstream?.proxyWriteEnd(trailers, requestComplete: true)
        }
    }

    /// Replaces the backend connection's HTTP codec with a tunnel end. The decoder,
    /// removed last, forwards whatever bytes it still holds into the tunnel.
    private func switchToTunnel(_ response: HTTPResponseHead, context: ChannelHandlerContext) {
        finished = true
        let pipeline = context.pipeline.syncOperations
        let tunnel = TunnelHandler(tracksServerFrames: false)
        do {
            // An EOF right behind the 101 waits until the decoder has handed over the bytes before it.
            try pipeline.handler(type: EndOfInputGate.self).hold()
            try pipeline.addHandler(tunnel)
            downstream?.upgradeAccepted(response, tunnel: tunnel)
            let bound = NIOLoopBound(context.pipeline, eventLoop: context.eventLoop)
            // Out of the decoder's own callback, then in order: our handler, the encoder, the decoder.
            context.eventLoop.execute {
                let pipeline = bound.value.syncOperations
                if let handler = try? pipeline.handler(type: UpgradeResponseHandler.self) { pipeline.removeHandler(handler, promise: nil) }
                if let encoder = try? pipeline.handler(type: HTTPRequestEncoder.self) { pipeline.removeHandler(encoder, promise: nil) }
                if let validator = try? pipeline.handler(type: NIOHTTPRequestHeadersValidator.self) {
                    pipeline.removeHandler(validator, promise: nil)
                }
                // The decoder leaves asynchronously, forwarding its bytes as it goes; only then may a held EOF follow.
                let decoderRemoved = bound.value.eventLoop.makePromise(of: Void.self)
                if let decoder = try? pipeline.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self) {
                    pipeline.removeHandler(decoder, promise: decoderRemoved)
                } else {
                    decoderRemoved.succeed()
                }
                decoderRemoved.futureResult.assumeIsolated().whenComplete { _ in
                    let pipeline = bound.value.syncOperations
                    if let gate = try? pipeline.handler(type: EndOfInputGate.self) {
                        gate.release()
                        pipeline.removeHandler(gate, promise: nil)
                    }
                }
            }
        } catch {
            context.close(promise: nil)
        }
    }

    fileprivate func closed() {
        guard !finished else { return }
        fail(.closedEarly)
    }

    private func fail(_ error: UpstreamError) {
        guard !finished else { return }
        finished = true
        responseTimer?.cancel()
        channel?.close(promise: nil)
        downstream?.proxyFailed(error, headWritten: responseStarted)
    }
}

/// Passes the backend's answer to an upgrade request to its exchange.
private final class UpgradeResponseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let exchange: UpgradeExchange

    init(exchange: UpgradeExchange) { self.exchange = exchange }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        exchange.received(unwrapInboundIn(data), context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange.downstreamFlush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        exchange.closed()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The backend stopped sending before switching protocols: the answer (if any) is complete.
        if let event = event as? ChannelEvent, event == .inputClosed {
            exchange.closed()
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Sits in front of the HTTP decoder. Once the backend has switched protocols, an
/// end of input (EOF) is held back until the decoder is gone: the decoder drops the
/// bytes it still holds when it sees EOF, and those bytes belong to the tunnel.
private final class EndOfInputGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var context: ChannelHandlerContext?
    private var holding = false
    private var held = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func hold() { holding = true }

    /// Passes on a held end of input, now that the tunnel is in place.
    func release() {
        holding = false
        if held, let context {
            held = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if holding, let event = event as? ChannelEvent, event == .inputClosed {
            held = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

extension UpgradeExchange {
    fileprivate func downstreamFlush() { downstream?.proxyFlush() }
}
