import NIOCore
import NIOHTTP1
import Synchronization

/// One end of a byte tunnel (a WebSocket after its upgrade). The other end is
/// a `TunnelHandler` on a raw connection, or an HTTP/2 stream that carries the
/// bytes as DATA frames.
public protocol TunnelEnd: AnyObject {
    /// Writes bytes towards this end's peer.
    func tunnelWrite(_ buffer: ByteBuffer)
    /// Flushes what was written.
    func tunnelFlush()
    /// Stops or resumes reading from this end (back-pressure from the other end).
    func tunnelSetReading(_ enabled: Bool)
    /// The other end will send nothing more (its peer half-closed): finish this
    /// end's output after what is already written, and keep reading.
    func tunnelShutdownOutput()
    /// Closes this end; `goingAway` asks for a WebSocket close 1001 first where it can be sent.
    func tunnelClose(goingAway: Bool)
    /// Whether this end can take more bytes now.
    var tunnelWritable: Bool { get }
}

/// Raw bytes between two channels, with back-pressure both ways: a side is not
/// read while the other side's outbound buffer is full, so nothing is buffered
/// beyond the channels' write-buffer watermarks. A half-close (EOF on one side,
/// with the channel's `allowRemoteHalfClosure` on) shuts the other side's output
/// and the tunnel goes on in the other direction; a channel closes once both of
/// its directions are done, and either side closing closes the other. Lives on
/// the event loop both channels share.
public final class TunnelHandler: ChannelDuplexHandler, TunnelEnd {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// The other end; set before bytes flow.
    public var partner: (any TunnelEnd)?
    private var context: ChannelHandlerContext?
    private var readHeld = false
    private var readingEnabled = true
    private var closed = false
    private var inputClosed = false
    private var outputClosed = false
    private let frames: WebSocketFrameBoundary?
    private let onClose: (() -> Void)?
    private let shutdownGrace: TimeAmount

    /// `tracksServerFrames` makes this end (the client side of an HTTP/1.1 WebSocket)
    /// follow the frames it writes, so that a close 1001 can be slipped in between two
    /// frames. On graceful shutdown the tunnel keeps going for `shutdownGrace`, then
    /// closes with 1001.
    public init(tracksServerFrames: Bool, shutdownGrace: TimeAmount = .zero, onClose: (() -> Void)? = nil) {
        frames = tracksServerFrames ? WebSocketFrameBoundary() : nil
        self.shutdownGrace = shutdownGrace
        self.onClose = onClose
    }

    public func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    public func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.tunnelWrite(unwrapInboundIn(data))
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        partner?.tunnelFlush()
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        partner?.tunnelSetReading(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        finish()
        partner?.tunnelClose(goingAway: false)
        partner = nil
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            partner?.tunnelShutdownOutput()
            if outputClosed { context.close(promise: nil) }
            return
        }
        if event is ChannelShouldQuiesceEvent {
            // Graceful shutdown: a tunnel has no request boundary to wait for. It may run
            // on for the grace period; then the client hears the server is going away (1001).
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: shutdownGrace) { handler.value.tunnelClose(goingAway: true) }
            return
        }
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all {
            tunnelClose(goingAway: true)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func read(context: ChannelHandlerContext) {
        if readingEnabled {
            context.read()
        } else {
            readHeld = true
        }
    }

    // MARK: TunnelEnd

    public func tunnelWrite(_ buffer: ByteBuffer) {
        guard let context, !closed else { return }
        frames?.consume(buffer)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    public func tunnelFlush() { context?.flush() }

    public func tunnelSetReading(_ enabled: Bool) {
        readingEnabled = enabled
        if enabled, readHeld, let context {
            readHeld = false
            context.read()
        }
    }

    public func tunnelShutdownOutput() {
        guard let context, !closed, !outputClosed else { return }
        outputClosed = true
        let bothDone = inputClosed
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            guard !bothDone else {
                context.close(promise: nil)
                return
            }
            // TCP (and TLS, with close_notify) can shut one direction; where a channel cannot, it closes.
            let shutdown = context.eventLoop.makePromise(of: Void.self)
            shutdown.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }
            context.close(mode: .output, promise: shutdown)
        }
    }

    public func tunnelClose(goingAway: Bool) {
        guard let context, !closed else { return }
        if goingAway, let frames, frames.atBoundary {
            // An unmasked server close frame: FIN + opcode 8, length 2, code 1001.
            context.write(wrapOutboundOut(ByteBuffer(bytes: [0x88, 0x02, 0x03, 0xE9])), promise: nil)
        }
        finish()
        let partner = self.partner
        self.partner = nil
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        partner?.tunnelClose(goingAway: false)
    }

    public var tunnelWritable: Bool { context?.channel.isWritable ?? false }

    private func finish() {
        guard !closed else { return }
        closed = true
        onClose?()
    }
}

/// Follows WebSocket frame headers in a byte stream (RFC 6455 5.2) to know
/// whether the stream is between two frames, without looking at payloads.
final class WebSocketFrameBoundary {
    private var header: [UInt8] = []
    private var payloadLeft: UInt64 = 0

    var atBoundary: Bool { header.isEmpty && payloadLeft == 0 }

    func consume(_ buffer: ByteBuffer) {
        var view = buffer.readableBytesView[...]
        while !view.isEmpty {
            if payloadLeft > 0 {
                let skip = Int(min(payloadLeft, UInt64(view.count)))
                view = view.dropFirst(skip)
                payloadLeft -= UInt64(skip)
                continue
            }
            header.append(view.first!)
            view = view.dropFirst()
            guard header.count >= 2 else { continue }
            let masked = header[1] & 0x80 != 0
            let length7 = header[1] & 0x7F
            let lengthBytes = length7 == 126 ? 2 : length7 == 127 ? 8 : 0
            let needed = 2 + lengthBytes + (masked ? 4 : 0)
            guard header.count == needed else { continue }
            var length = UInt64(length7)
            if lengthBytes > 0 {
                length = header[2..<(2 + lengthBytes)].reduce(0) { $0 << 8 | UInt64($1) }
            }
            header.removeAll(keepingCapacity: true)
            payloadLeft = length
        }
    }
}

/// Counts open tunnels against `[server] max_websockets`.
public final class TunnelLimit: Sendable {
    private let open = Atomic<Int>(0)
    /// The most tunnels at once.
    public let maximum: Int

    public init(maximum: Int) { self.maximum = maximum }

    /// Takes a slot, or returns false when all are taken.
    public func acquire() -> Bool {
        let now = open.wrappingAdd(1, ordering: .relaxed).newValue
        if now > maximum {
            open.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Gives a slot back.
    public func release() { open.wrappingSubtract(1, ordering: .relaxed) }

    /// Tunnels open now.
    public var current: Int { open.load(ordering: .relaxed) }
}
