import ApusPlugins
import ApusProxy
import ApusRouting
import CApusABI
import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#endif

/// The front of every HTTP/1.1 connection, right after the socket (or TLS):
/// it frames requests itself, answers those for native routes directly from
/// the received bytes, and gives every other request to the `GatewayHandler`
/// as HTTP request parts.
///
/// Why: through NIO's general codec each request is parsed by llhttp into
/// `HTTPHeaders`, passed through a pipelining handler, and (for a native route)
/// copied again for the C ABI. Here the request head is parsed in place
/// (`HTTP1RequestHead`); a native handler gets pointers into the received bytes,
/// and its answer is written straight into one response buffer
/// (`NativeHTTP1Response`); a request for the gateway (the backend's above all)
/// becomes its `HTTPRequestHead`, body and end here, once.
///
/// Correctness rests on one rule: this handler only frames what it is sure of.
/// A request it frames but does not serve (a proxied route, an `Expect`, a body
/// over the route's limit, a blocking handler) goes to the gateway with exactly
/// its own body bytes, and anything after it is held until the gateway has
/// answered it (the pipelining NIO's `HTTPServerPipelineHandler` would do). A
/// head it cannot frame with certainty (see `HTTP1RequestHead`: chunked bodies,
/// upgrades, anything non-canonical) hands the connection for good to NIO's
/// codec, which joins the pipeline then (`HTTPPipelines.addHTTP1Decoding`).
///
/// It also owns the connection's keep-alive timeout, since native requests never
/// reach the handlers behind it.
final class HTTP1FrontHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = ByteBuffer

    private enum Mode {
        /// Framing requests here; native ones are answered here.
        case fast
        /// One request is with the gateway; `bodyRemaining` bytes of its body are
        /// still to come from the client (its end follows the last). Later bytes wait in `pending`.
        case gateway(bodyRemaining: Int)
        /// NIO's codec frames this connection from now on; bytes pass straight through.
        case passthrough
    }

    private let loop: LoopState
    private let shared: GatewayShared
    private let keepAliveTimeout: TimeAmount
    private let maxHeadBytes: Int
    private let decoderLimits: NIOHTTPDecoderLimitConfiguration
    private let maxHeaderFields = 100
    /// Bytes held back: past the current request while the gateway works, or not yet a whole request.
    private static let holdLimit = 64 * 1024

    private var mode = Mode.fast
    private var pending = ByteBuffer()
    private var fields: [HTTP1RequestHead.Field] = []
    private var cHeaders: [apus_type_header] = []
    /// Header names lowered for the ABI, and where each field's lowered name is (empty: not lowered).
    private var lowercaseNames: [UInt8] = []
    private var loweredNames: [Range<Int>] = []
    private var context: ChannelHandlerContext?
    /// The peer's "ip:port", as logs show it.
    private let clientDescription: String

    private var nativeInFlight = false
    /// Set while a native handler runs on this stack: its answer is written, but
    /// the next request waits for the loop in `processPending`.
    private var inNativeCall = false
    /// Counts native requests, so a late answer for an abandoned one is recognised.
    private var generation = 0
    private var inReadBatch = false
    /// Set while `processPending` runs: a request the gateway answers at once resumes its loop instead of nesting another.
    private var framing = false
    private var needsFlush = false
    private var closing = false
    private var quiescing = false
    private var readDeferred = false
    private var lastRead = NIODeadline.now()
    /// Whether this read batch moved a request on (a slowly dribbled head does not keep a connection).
    private var progressed = false
    /// Whether this read batch gave the gateway part of a request.
    private var gatewayFed = false
    /// The gateway, which this handler gives requests to by calling it (`GatewayHandler.receive`):
    /// through the pipeline each part was wrapped in `NIOAny` and cast back. The two refer
    /// to each other until this handler is removed (with the channel, or for an upgrade).
    /// Not `weak`: an object referred to weakly gets a side table, and every retain and
    /// release of the gateway, at each pipeline hop, takes the slow path (callgrind).
    var gateway: GatewayHandler?
    /// The channel's writability, as its last change said (read on every request; cheaper than asking the channel).
    private var writable = true
    private var idleCheck: Scheduled<Void>?
    /// Bytes of answers not yet sent when the idle check last found any.
    private var unsentAtLastCheck = 0
    /// Gives up on an async handler that does not answer (`NativeResponder.timeOut`).
    private var nativeTimer: Scheduled<Void>?
    /// The encoder of the gateway's answers, told each request's method as it goes to the gateway.
    private let responses: HTTP1ResponseEncoder

    init(
        loop: LoopState, shared: GatewayShared, client: String, keepAliveTimeout: TimeAmount, maxHeadBytes: Int,
        decoderLimits: NIOHTTPDecoderLimitConfiguration, responses: HTTP1ResponseEncoder
    ) {
        self.decoderLimits = decoderLimits
        self.responses = responses
        self.loop = loop
        self.shared = shared
        self.clientDescription = client
        self.keepAliveTimeout = keepAliveTimeout
        self.maxHeadBytes = maxHeadBytes
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { scheduleIdleCheck(context, at: .now() + keepAliveTimeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        abandonNative()
        // Removed with the channel (or, for an upgrade, after the hand-over, which
        // leaves nothing held): what a closing connection held is dropped.
        pending = ByteBuffer()
        self.context = nil
        gateway = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if idleCheck == nil { scheduleIdleCheck(context, at: .now() + keepAliveTimeout) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        abandonNative()
        closing = true
        context.fireChannelInactive()
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inReadBatch = true
        var buffer = unwrapInboundIn(data)
        switch mode {
        case .passthrough:
            progressed = true
            context.fireChannelRead(data)
            return
        case .gateway(let remaining) where remaining > 0:
            let forward = min(remaining, buffer.readableBytes)
            let body = buffer.readSlice(length: forward)!
            mode = .gateway(bodyRemaining: remaining - forward)
            progressed = true
            // Held before the body goes on: the gateway may answer at once, and framing resumes with these bytes.
            if buffer.readableBytes > 0 { hold(&buffer) }
            gatewayFed = true
            gateway?.receive(.body(body))
            if remaining == forward { gateway?.receive(.end(nil)) }
            return
        default:
            break
        }
        hold(&buffer)
        processPending(context)
    }

    /// Keeps received bytes until they are framed (dropped once the connection is closing).
    private func hold(_ buffer: inout ByteBuffer) {
        if closing { return }
        if pending.readableBytes == 0 {
            pending = buffer
        } else {
            pending.writeBuffer(&buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadBatch = false
        if progressed {
            progressed = false
            lastRead = .now()
        }
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        // The handlers behind this one see a read batch only when it gave them part of a
        // request, or when the connection is theirs (with the gateway, or handed over):
        // native requests never reach them.
        var theirs = true
        if case .fast = mode { theirs = gatewayFed }
        if theirs { context.fireChannelReadComplete() }
        gatewayFed = false
        if case .gateway(0) = mode, pending.readableBytes <= Self.holdLimit, context.channel.isWritable {
            // The gateway withholds reads while it waits for a backend connection (and,
            // on a handed-over connection, so does the codec's pipelining handler); the
            // request is complete, so anything the client sends now is held here
            // (bounded by holdLimit). Asking for it keeps the socket's read interest,
            // instead of dropping and re-adding it (two epoll_ctl calls) per request.
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if writable { resumeReading(context) }
        context.fireChannelWritabilityChanged()
        // Pipelined requests wait while the client does not take the answers (`processPending`).
        if writable, !framing, case .fast = mode, pending.readableBytes > 0 { processPending(context) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Graceful shutdown: no new requests are framed. Close now if idle, else
            // after the answer in progress (`gatewayResponseFinished` for the gateway's;
            // on a handed-over connection, the codec's pipeline handler does it).
            quiescing = true
            if case .fast = mode {
                if !nativeInFlight { context.close(promise: nil) }
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if readShouldWait(context) {
            readDeferred = true
        } else {
            context.read()
        }
    }

    /// Back-pressure for what this handler answers or holds: while it serves, it
    /// stops reading when the client does not take the answers, or when more than
    /// `holdLimit` bytes wait behind an answer in progress. Requests with the
    /// gateway keep the gateway's own back-pressure (which this must not couple:
    /// a client may stream a body while it ignores a streamed response).
    private func readShouldWait(_ context: ChannelHandlerContext) -> Bool {
        switch mode {
        case .passthrough: return false
        case .gateway(let remaining): return remaining == 0 && pending.readableBytes > Self.holdLimit
        case .fast: return !context.channel.isWritable || (nativeInFlight && pending.readableBytes > Self.holdLimit)
        }
    }

    private func resumeReading(_ context: ChannelHandlerContext) {
        guard readDeferred, !readShouldWait(context) else { return }
        readDeferred = false
        context.read()
    }

    // MARK: framing

    /// Frames and serves what is buffered, until a request is incomplete or
    /// another party (an async handler, the gateway) has to answer first. It also
    /// waits while the channel is not writable: a client that pipelines requests
    /// and does not read the answers would otherwise make the gateway hold every
    /// answer at once (64 KiB of short requests for a large native response each
    /// is gigabytes). Framing resumes when the answers drain (`channelWritabilityChanged`).
    private func processPending(_ context: ChannelHandlerContext) {
        framing = true
        defer {
            framing = false
            resumeReading(context)
        }
        while case .fast = mode, !nativeInFlight, !closing, !quiescing, writable, pending.readableBytes > 0 {
            let scan = pending.withUnsafeReadableBytes { bytes in
                HTTP1RequestHead.scan(bytes, fields: &fields, maxFields: maxHeaderFields)
            }
            switch scan {
            case .incomplete:
                if pending.readableBytes > maxHeadBytes { handOver(context) }
                return
            case .unframeable:
                handOver(context)
                return
            case .complete(let head):
                guard head.length <= maxHeadBytes else {
                    handOver(context)  // the codec refuses it with its own limits
                    return
                }
                let call: NativeCall
                switch routing(for: head) {
                case .native(let found): call = found
                case .noNativeRoute:
                    toGateway(head, context, noNativeRoute: true)
                    continue  // framing goes on if the gateway has answered already
                case .gatewayDecides:
                    toGateway(head, context, noNativeRoute: false)
                    continue
                }
                progressed = true
                guard pending.readableBytes >= head.length + head.contentLength else { return }  // the body is on its way
                serveNative(head, call, context)
            }
        }
    }

    /// Gives the rest of the connection to NIO's codec, which joins the pipeline behind this handler.
    private func handOver(_ context: ChannelHandlerContext) {
        mode = .passthrough
        do {
            try HTTPPipelines.addHTTP1Decoding(
                context.pipeline.syncOperations, decoderPosition: .after(self), decoderLimits: decoderLimits)
        } catch {
            shared.logger.error("could not add the HTTP/1 decoder; closing the connection", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        let bytes = pending
        pending = ByteBuffer()
        context.fireChannelRead(wrapInboundOut(bytes))
        if !inReadBatch { context.fireChannelReadComplete() }
    }

    /// Gives one request to the gateway: its head, as much of its body as is here,
    /// and its end if the body is complete (the rest of the body follows as it arrives).
    private func toGateway(_ head: HTTP1RequestHead, _ context: ChannelHandlerContext, noNativeRoute: Bool) {
        // A request with no native route goes straight to the backend, written from its
        // bytes: what the gateway needs of its fields, this parse already knows, so its
        // `HTTPHeaders` (a `String` per name and value) are not made.
        let facts = noNativeRoute ? makeFacts(head) : nil
        let requestHead = makeRequestHead(head, withFields: facts == nil)
        let received = ReceivedRequestHead(bytes: pending.readSlice(length: head.length)!, target: head.target, fields: fields)
        let available = min(head.contentLength, pending.readableBytes)
        let body = available > 0 ? pending.readSlice(length: available) : nil
        if pending.readableBytes == 0 { pending = ByteBuffer() }
        let remaining = head.contentLength - available
        progressed = true
        mode = .gateway(bodyRemaining: remaining)
        responses.expectResponse(to: requestHead.method)
        gatewayFed = true
        // Found here to have no native route (method and normalised path checked against
        // the same table): the gateway takes the verdict instead of routing again.
        gateway?.receive(.head(requestHead), noNativeRoute: noNativeRoute, received: received, facts: facts)
        if let body { gateway?.receive(.body(body)) }
        if remaining == 0 { gateway?.receive(.end(nil)) }
        if !inReadBatch { context.fireChannelReadComplete() }
    }

    /// The gateway's view of a framed head: NIO's `HTTPRequestHead`, with the fields as they came.
    private func makeRequestHead(_ head: HTTP1RequestHead, withFields: Bool) -> HTTPRequestHead {
        pending.withUnsafeReadableBytes { bytes in
            HTTPRequestHead(
                version: HTTPVersion(major: 1, minor: head.minorVersion),
                method: HTTPMethod(rawValue: HTTPSyntax.string(bytes, head.method)),
                uri: HTTPSyntax.string(bytes, head.target), headers: withFields ? HTTPSyntax.headers(bytes, fields) : HTTPHeaders())
        }
    }

    private func makeFacts(_ head: HTTP1RequestHead) -> FramedHeadFacts {
        let requestID = head.requestID.flatMap { pending.getString(at: pending.readerIndex + $0.lowerBound, length: $0.count) }
        return FramedHeadFacts(requestID: requestID, keepAlive: head.keepAlive, hasBody: head.contentLength > 0)
    }

    /// Whether the connection was handed to NIO's codec (which then frames every request).
    var isHandedOver: Bool {
        if case .passthrough = mode { return true }
        return false
    }

    /// Called by the gateway when it has written the whole response to a request
    /// this handler gave it (and keeps the connection): framing resumes here with
    /// whatever the client sent since.
    func gatewayResponseFinished() {
        guard case .gateway(let remaining) = mode, let context else { return }
        guard remaining == 0, !quiescing else {
            // Shutting down, or answered before the body arrived (the gateway closes
            // such connections itself): close once the answer is out.
            closing = true
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in bound.value.close(promise: nil) }
            return
        }
        mode = .fast
        if !framing { processPending(context) }
    }

    // MARK: native requests

    private struct NativeCall {
        let route: NativeRoute
        let pattern: String
        let path: String
        let parameters: [(name: String, value: String)]
        let method: String
        let queryStart: Int?
    }

    private enum Routing {
        /// A native route this handler serves itself.
        case native(NativeCall)
        /// No native route matches the method and the (valid) path: the backend's.
        case noNativeRoute
        /// The gateway routes it (a native route it serves another way, or a path it refuses).
        case gatewayDecides
    }

    /// Where this request goes, as far as this handler can tell.
    private func routing(for head: HTTP1RequestHead) -> Routing {
        let router = loop.router
        guard !head.expects else { return .gatewayDecides }
        return pending.withUnsafeReadableBytes { bytes -> Routing in
            let methodBytes = UnsafeRawBufferPointer(rebasing: bytes[head.method])
            let target = UnsafeRawBufferPointer(rebasing: bytes[head.target])
            let queryOffset = target.firstIndex(of: UInt8(ascii: "?"))
            let rawPathBytes = UnsafeRawBufferPointer(rebasing: target[..<(queryOffset ?? target.count)])
            let match: RouteTable<NativeRoute>.Match
            let path: String
            let method: String
            // Strings are made only for a native route, or when the path must be normalised first.
            switch router.table.quickMatch(method: methodBytes, path: rawPathBytes) {
            case .noRoute:
                return .noNativeRoute
            case .route(let literal):
                match = literal
                path = String(decoding: rawPathBytes, as: UTF8.self)
                method = methodText(methodBytes)
            case .ask:
                method = methodText(methodBytes)
                let rawPath = String(decoding: rawPathBytes, as: UTF8.self)
                guard let normalized = try? NormalizedPath(Substring(rawPath)) else { return .gatewayDecides }
                guard let found = router.table.match(method: method, path: normalized) else { return .noNativeRoute }
                match = found
                path = NormalizedPath.isCanonical(rawPathBytes) ? rawPath : normalized.text
            }
            guard match.target.library.kind != .blocking, head.contentLength <= match.target.maxBodyBytes else {
                return .gatewayDecides
            }
            return .native(
                NativeCall(
                    route: match.target, pattern: match.pattern.description, path: path, parameters: match.parameters,
                    method: method, queryStart: queryOffset))
        }
    }

    private func serveNative(_ head: HTTP1RequestHead, _ call: NativeCall, _ context: ChannelHandlerContext) {
        generation += 1
        let generation = self.generation
        let started = NIODeadline.now()
        let length = head.length + head.contentLength
        // The target is kept for the access log only.
        let target =
            shared.accessLog.isEnabled
            ? pending.getString(at: pending.readerIndex + head.target.lowerBound, length: head.target.count) ?? "" : ""
        var requestID = loop.makeRequestID()
        if let range = head.requestID,
            let supplied = pending.getString(at: pending.readerIndex + range.lowerBound, length: range.count),
            isValidRequestID(supplied)
        {
            requestID = supplied
        }
        let keepAlive = head.keepAlive && !quiescing
        let encoder = NativeHTTP1Response(
            minorVersion: head.minorVersion, isHead: call.method == "HEAD", keepAlive: keepAlive, requestID: requestID,
            date: loop.dateHeader(), hsts: shared.hsts, handlerName: call.route.library.name)
        let record = FinishedRecord(
            method: call.method, target: target, minorVersion: head.minorVersion, requestID: requestID, started: started,
            route: call.pattern, bytesIn: head.contentLength, keepAlive: keepAlive)

        RequestMetrics.inFlight.increment()
        nativeInFlight = true
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let allocator = context.channel.allocator
        let logger = shared.logger
        let responder = NativeResponder(handlerName: call.route.library.name, logger: logger) { response in
            var bytes = allocator.buffer(capacity: 0)
            let written = encoder.encode(response.pointee, into: &bytes, logger: logger)
            let encoded = bytes
            if eventLoop.inEventLoop {
                bound.value.nativeFinished(encoded, written, record, generation: generation)
            } else {
                eventLoop.execute { bound.value.nativeFinished(encoded, written, record, generation: generation) }
            }
        }

        inNativeCall = true
        let library = call.route.library
        let remote = clientDescription
        // The ABI promises lower-case names. Names with capitals are lowered into a
        // scratch buffer: the received bytes may still be shared with NIO's read buffer,
        // and writing them would copy the whole buffer.
        lowercaseNames.removeAll(keepingCapacity: true)
        loweredNames.removeAll(keepingCapacity: true)
        pending.withUnsafeReadableBytes { bytes in
            for field in fields {
                let name = UnsafeRawBufferPointer(rebasing: bytes[field.name])
                guard name.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) else {
                    loweredNames.append(0..<0)  // already lower-case: used where it lies
                    continue
                }
                let start = lowercaseNames.count
                for byte in name { lowercaseNames.append(byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte) }
                loweredNames.append(start..<lowercaseNames.count)
            }
        }
        pending.withUnsafeReadableBytes { bytes in lowercaseNames.withUnsafeBytes { scratch in
            let base = bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
            func str(_ range: Range<Int>) -> apus_type_str { apus_type_str(data: base + range.lowerBound, length: range.count) }
            cHeaders.removeAll(keepingCapacity: true)
            for (field, lowered) in zip(fields, loweredNames) {
                let name =
                    lowered.isEmpty
                    ? str(field.name)
                    : apus_type_str(
                        data: scratch.baseAddress!.assumingMemoryBound(to: CChar.self) + lowered.lowerBound, length: lowered.count)
                cHeaders.append(apus_type_header(name: name, value: str(field.value)))
            }
            let query = call.queryStart.map { head.target.lowerBound + $0 + 1..<head.target.upperBound } ?? 0..<0
            let body = head.length..<length
            withCHeaders(call.parameters) { parameters in
                withStrings(call.path, requestID, remote) { path, requestID, remote in
                    cHeaders.withUnsafeBufferPointer { headers in
                        var request = apus_type_request(
                            struct_size: UInt32(MemoryLayout<apus_type_request>.size),
                            method: str(head.method), path: path, query: str(query), request_id: requestID,
                            remote_address: remote, headers: headers.baseAddress, header_count: headers.count,
                            params: parameters.baseAddress, param_count: parameters.count,
                            body: UnsafeRawPointer(base + body.lowerBound).assumingMemoryBound(to: UInt8.self),
                            body_length: body.count)
                        library.invoke(borrowing: &request, responder: responder)
                    }
                }
            }
        } }
        inNativeCall = false
        // An async handler answers later: not later than backend.response_timeout.
        if nativeInFlight { nativeTimer = loop.scheduleAnswerTimeout(for: responder) }
        pending.moveReaderIndex(forwardBy: length)
        if pending.readableBytes == 0 { pending = ByteBuffer() }
    }

    /// What metrics and the access log need once the answer is out.
    private struct FinishedRecord: Sendable {
        let method: String
        let target: String
        let minorVersion: Int
        let requestID: String
        let started: NIODeadline
        let route: String
        let bytesIn: Int
        let keepAlive: Bool
    }

    private func nativeFinished(
        _ response: ByteBuffer, _ written: NativeHTTP1Response.Written, _ record: FinishedRecord, generation: Int
    ) {
        guard generation == self.generation, nativeInFlight, let context else { return }
        nativeInFlight = false
        nativeTimer?.cancel()
        nativeTimer = nil
        RequestMetrics.inFlight.decrement()
        shared.recordRequest(
            loop: loop, client: clientDescription, method: record.method, target: record.target,
            version: HTTPVersion(major: 1, minor: record.minorVersion), status: written.status, kind: "native",
            route: record.route, requestID: record.requestID, traceID: "", started: record.started,
            upstreamSeconds: nil, bytesIn: record.bytesIn, bytesOut: written.bodyBytes)
        if !record.keepAlive || quiescing {
            closing = true
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in bound.value.close(promise: nil) }
            return
        }
        context.write(wrapOutboundOut(response), promise: nil)
        if inReadBatch {
            needsFlush = true
        } else {
            context.flush()
        }
        if !inNativeCall { processPending(context) }
    }

    private func abandonNative() {
        nativeTimer?.cancel()
        nativeTimer = nil
        if nativeInFlight {
            nativeInFlight = false
            RequestMetrics.inFlight.decrement()
        }
        generation += 1
    }

    // MARK: keep-alive timeout

    private func scheduleIdleCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.idleCheckFired(context)
        }
    }

    /// A quiet connection is closed after `keepalive_timeout`, as is one that sent
    /// only part of a request head in that time. One timer per connection, moved
    /// on lazily rather than reset on every read.
    private func idleCheckFired(_ context: ChannelHandlerContext) {
        idleCheck = nil
        guard self.context != nil, !closing else { return }
        let quietSince = lastRead
        let now = NIODeadline.now()
        if now - quietSince < keepAliveTimeout {
            unsentAtLastCheck = 0
            scheduleIdleCheck(context, at: quietSince + keepAliveTimeout)
            return
        }
        // Answers still leaving for a client that reads slowly keep the connection
        // while they move (nginx's `send_timeout`): it is idle once nothing has left
        // since the last check, or nothing is left to send.
        let unsent = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        let answersMoving = unsent > 0 && unsent != unsentAtLastCheck
        unsentAtLastCheck = unsent
        switch mode {
        case .fast where !nativeInFlight:
            if !answersMoving {
                context.close(promise: nil)
                return
            }
        case .passthrough:
            // The gateway knows whether a request is in progress; it closes if not.
            if !answersMoving { context.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read) }
        case .fast, .gateway:
            break  // a request is being answered
        }
        scheduleIdleCheck(context, at: now + keepAliveTimeout)
    }
}

/// A request method as text: the standard ones without decoding (they are string literals).
private func methodText(_ bytes: UnsafeRawBufferPointer) -> String {
    func equals(_ name: StaticString) -> Bool {
        bytes.count == name.utf8CodeUnitCount && memcmp(bytes.baseAddress!, name.utf8Start, bytes.count) == 0
    }
    if equals("GET") { return "GET" }
    if equals("POST") { return "POST" }
    if equals("HEAD") { return "HEAD" }
    if equals("PUT") { return "PUT" }
    if equals("DELETE") { return "DELETE" }
    if equals("PATCH") { return "PATCH" }
    return String(decoding: bytes, as: UTF8.self)
}

/// Lends three strings as `apus_type_str` for the duration of `body`.
private func withStrings<Result>(
    _ first: String, _ second: String, _ third: String,
    _ body: (apus_type_str, apus_type_str, apus_type_str) -> Result
) -> Result {
    var first = first
    var second = second
    var third = third
    func str(_ bytes: UnsafeBufferPointer<UInt8>) -> apus_type_str {
        apus_type_str(data: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), length: bytes.count)
    }
    return first.withUTF8 { a in second.withUTF8 { b in third.withUTF8 { c in body(str(a), str(b), str(c)) } } }
}
