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
/// Not a channel handler: `UpstreamHandler` calls it with each part and its own
/// context, so a part is not wrapped in `NIOAny` and cast back on the way. Heads
/// come encoded already (`UpstreamRequestHead`): the exchange keeps one to send
/// again if a stale pooled connection makes it retry.
struct UpstreamRequestEncoder {
    private var isChunked = false

    /// Writes a head and takes its framing for the body that follows.
    mutating func write(_ head: UpstreamRequestHead, context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        isChunked = head.chunked
        context.write(NIOAny(IOData.byteBuffer(head.bytes)), promise: promise)
    }

    /// Writes a request part (a head encoded with `UpstreamRequestHead(encoding:)`).
    mutating func write(_ part: HTTPClientRequestPart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(let head):
            write(UpstreamRequestHead(encoding: head, allocator: context.channel.allocator), context: context, promise: promise)
        case .body(let body):
            HTTP1Encoding.writeBody(body, chunked: isChunked, context: context, promise: promise)
        case .end(let trailers):
            HTTP1Encoding.writeEnd(trailers: trailers, chunked: isChunked, context: context, promise: promise)
        }
    }

    /// The head's framing made explicit, as NIO's encoder does, and whether the body is chunked.
    static func framing(_ head: HTTPRequestHead) -> (fields: HTTP1Encoding.Framing, chunked: Bool) {
        let chunkedCapable = head.version.major == 1 && head.version.minor >= 1
        switch head.method {
        case .TRACE:
            return (.withoutBodyFields, false)
        case .POST, .PUT, .PATCH:
            if head.headers.contains(name: "content-length") { return (.byContentLength, false) }
            return chunkedCapable ? (.chunked, true) : (.asIs, false)
        default:
            if head.headers.contains(name: "content-length") { return (.byContentLength, false) }
            return (.asIs, chunkedCapable && head.headers["transfer-encoding"].first == "chunked")
        }
    }
}
