import ApusProxy
import NIOCore
import NIOHTTP1

/// Serialises responses on the HTTP/1.1 codec path: what NIO's
/// `HTTPResponseEncoder` does, with the head written in one pass (`HTTP1Encoding`).
///
/// It is told each request's method (`expectResponse(to:)`) by whoever hands the
/// request to the gateway: the front handler, or `HTTP1RequestMethodRecorder`
/// behind NIO's decoder. So it knows which responses answer `HEAD` or `CONNECT`
/// (NIO's encoder learns that from its paired decoder) without every request part
/// passing through it. The framing rules are NIO's, and a test checks
/// the bytes against NIO's pipeline: a status that cannot have a body, or a 2xx
/// answer to `CONNECT`, loses `Content-Length` and `Transfer-Encoding` (NIO's
/// encoder does that to every answer to `CONNECT`, dropping a refusal's body); a body
/// without `Content-Length` is chunked over HTTP/1.1; an answer to `HEAD` keeps
/// its framing headers but sends no body.
final class HTTP1ResponseEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = IOData

    /// Methods of requests still waiting for their response, oldest first.
    private var pendingMethods = CircularBuffer<HTTPMethod>(initialCapacity: 2)
    private var isChunked = false
    private var suppressBody = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// A request with this method goes to the gateway; its response comes after those before it.
    func expectResponse(to method: HTTPMethod) {
        pendingMethods.append(method)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        write(unwrapOutboundIn(data), context: context, promise: promise)
    }

    // MARK: direct writes

    // The gateway writes its HTTP/1.1 responses here directly while nothing sits between
    // it and this encoder (the front handler frames the connection): through the
    // pipeline, each part was wrapped in `NIOAny` and cast back (about 480
    // instructions a part). Bytes leave from this handler's place either way.

    /// Writes a response part, as if it came down the pipeline.
    func writeDirectly(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        write(part, context: context, promise: promise)
    }

    /// Flushes what was written, from this handler's place.
    func flushDirectly() {
        context?.flush()
    }

    /// Writes the client's head for a backend's response from the bytes it arrived
    /// in (`UpstreamResponseHead.clientHead`); false when the head has no such bytes
    /// (the caller writes `makeDownstreamHead`'s head instead).
    func writeRelayedHead(_ head: UpstreamResponseHead, version: HTTPVersion, requestID: String, keepAlive: Bool, hsts: String?) -> Bool {
        guard let context, head.hasReceivedBytes else { return false }
        let answersConnect = startResponse(code: head.status.code)
        guard
            let (bytes, chunked) = head.clientHead(
                version: version, requestID: requestID, keepAlive: keepAlive, hsts: hsts,
                mayHaveBody: !answersConnect && head.status.mayHaveResponseBody, allocator: context.channel.allocator)
        else { return false }
        isChunked = suppressBody ? false : chunked
        context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: nil)
        return true
    }

    // MARK: encoding

    /// Takes the method a final response answers; true when it is a 2xx answer to
    /// `CONNECT` (a tunnel, which has no framing or body).
    private func startResponse(code: UInt) -> Bool {
        // A non-final 1xx (not 101) is followed by the real head: it answers no request yet.
        guard !((100..<200).contains(code) && code != 101), let method = pendingMethods.popFirst() else { return false }
        // Matched by case: `==` on HTTPMethod compares raw value strings (see `isHEAD`).
        switch method {
        case .HEAD:
            suppressBody = true
        // Only a 2xx to CONNECT starts a tunnel and so has no framing or body (RFC 9110 9.3.6);
        // NIO drops both on every answer, which loses a refusal's explanation.
        case .CONNECT where (200..<300).contains(code):
            suppressBody = true
            return true
        default:
            suppressBody = false
        }
        return false
    }

    private func write(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(let head):
            let answersConnect = startResponse(code: head.status.code)
            let framing = Self.framing(head, mayHaveBody: !answersConnect && head.status.mayHaveResponseBody)
            isChunked = suppressBody ? false : framing.chunked
            let bytes = HTTP1Encoding.head(
                HTTP1Encoding.text(head.version), String(head.status.code), head.status.reasonPhrase, headers: head.headers,
                framing: framing.fields, allocator: context.channel.allocator)
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        case .body(let body):
            guard !suppressBody else {
                promise?.fail(HTTP1ResponseEncoderError.bodyNotAllowed)
                return
            }
            HTTP1Encoding.writeBody(body, chunked: isChunked, context: context, promise: promise)
        case .end(let trailers):
            suppressBody = false
            HTTP1Encoding.writeEnd(trailers: trailers, chunked: isChunked, context: context, promise: promise)
        }
    }

    /// The head's framing made explicit, as NIO's encoder does, and whether the body is chunked.
    static func framing(_ head: HTTPResponseHead, mayHaveBody: Bool) -> (fields: HTTP1Encoding.Framing, chunked: Bool) {
        guard mayHaveBody else { return (.withoutBodyFields, false) }
        if head.headers.contains(name: "content-length") { return (.byContentLength, false) }
        guard head.version.major == 1 && head.version.minor >= 1 else { return (.asIs, false) }
        return (.chunked, true)
    }
}

/// Tells the response encoder the method of each request NIO's decoder passes on
/// (on a connection the front handler handed over).
final class HTTP1RequestMethodRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let responses: HTTP1ResponseEncoder

    init(responses: HTTP1ResponseEncoder) { self.responses = responses }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { responses.expectResponse(to: head.method) }
        context.fireChannelRead(data)
    }
}

/// A response part the HTTP/1.1 encoder refuses.
enum HTTP1ResponseEncoderError: Error, CustomStringConvertible {
    /// A body was written for a response to `HEAD` or `CONNECT`, which cannot carry one.
    case bodyNotAllowed

    var description: String { "a response to HEAD or CONNECT cannot carry a body" }
}
