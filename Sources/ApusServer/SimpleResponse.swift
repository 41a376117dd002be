import ApusProxy
import NIOCore
import NIOHTTP1

/// Writes a complete small response (head, body unless HEAD, end) for a request on an
/// HTTP/1.1 pipeline, with `content-length`, closing the connection afterwards when
/// the request was not keep-alive. For the gateway's own endpoints (admin, redirects).
func writeSimpleResponse(
    _ context: ChannelHandlerContext, to request: HTTPRequestHead, status: HTTPResponseStatus,
    headers extra: [(String, String)], body: [UInt8]
) {
    var headers = HTTPHeaders(extra)
    headers.add(name: "content-length", value: String(body.count))
    if let (name, value) = connectionField(version: request.version, keepAlive: request.isKeepAlive) {
        headers.add(name: name, value: value)
    }
    let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
    context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
    if request.method != .HEAD && !body.isEmpty {
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
    }
    let keepAlive = request.isKeepAlive
    let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
    context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
        if !keepAlive { bound.value.close(promise: nil) }
    }
}
