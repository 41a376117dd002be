import NIOCore
import NIOHTTP1

/// Serialises request parts for the backend connection: what NIO's
/// `HTTPRequestEncoder` does, with the head written in one pass (`HTTP1Encoding`;
/// NIO's encoding of heads was a tenth of a proxied request's instructions).
///
/// Framing follows NIO's encoder exactly (its "automatically set framing
/// headers" mode), so the backend sees the same bytes: a method that never has a
/// body (`TRACE`) loses `Content-Length` and `Transfer-Encoding`; one that has a
/// body (`POST`, `PUT`, `PATCH`) without `Content-Length` is sent chunked; any
/// other keeps `Content-Length`, or is chunked if it already says so.
///
/// It tells the response decoder each request's method as the head goes out
/// (the decoder needs it for `HEAD`), so the decoder need not watch writes.
final class UpstreamRequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private var isChunked = false
    private let responses: UpstreamResponseDecoder?

    init(responses: UpstreamResponseDecoder?) { self.responses = responses }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            responses?.requestSent(head.method)
            isChunked = Self.frame(&head)
            let bytes = HTTP1Encoding.head(
                head.method.rawValue, head.uri, HTTP1Encoding.text(head.version), headers: head.headers,
                allocator: context.channel.allocator)
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        case .body(let body):
            HTTP1Encoding.writeBody(body, chunked: isChunked, context: context, promise: promise)
        case .end(let trailers):
            HTTP1Encoding.writeEnd(trailers: trailers, chunked: isChunked, context: context, promise: promise)
        }
    }

    /// Makes the head's framing explicit, as NIO's encoder does; returns whether the body is chunked.
    static func frame(_ head: inout HTTPRequestHead) -> Bool {
        let chunkedCapable = head.version.major == 1 && head.version.minor >= 1
        switch head.method {
        case .TRACE:
            head.headers.remove(name: "content-length")
            head.headers.remove(name: "transfer-encoding")
            return false
        case .POST, .PUT, .PATCH:
            if head.headers.contains(name: "content-length") {
                head.headers.remove(name: "transfer-encoding")
                return false
            }
            guard chunkedCapable else { return false }
            head.headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            return true
        default:
            if head.headers.contains(name: "content-length") {
                head.headers.remove(name: "transfer-encoding")
                return false
            }
            return chunkedCapable && head.headers["transfer-encoding"].first == "chunked"
        }
    }
}
