import NIOCore
import NIOHTTP1

/// What Apus's two HTTP/1.1 encoders share (requests to the backend,
/// `UpstreamRequestEncoder`; responses to clients, `HTTP1ResponseEncoder`): a head
/// sized first and copied into one buffer, and NIO's chunked framing. NIO's
/// encoders write a head piece by piece, and each `ByteBuffer` write carries its
/// own capacity, uniqueness and exclusivity checks.
public enum HTTP1Encoding {
    /// `first second third\r\n`, the fields, and the empty line, in one buffer.
    public static func head(_ first: String, _ second: String, _ third: String, headers: HTTPHeaders, allocator: ByteBufferAllocator)
        -> ByteBuffer
    {
        var size = first.utf8.count + 1 + second.utf8.count + 1 + third.utf8.count + 2 + 2
        for (name, value) in headers { size += name.utf8.count + 2 + value.utf8.count + 2 }
        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { memory in
            var next = memory.baseAddress!
            func append(_ text: String) {
                var text = text
                text.withUTF8 { utf8 in
                    if let base = utf8.baseAddress { next.copyMemory(from: base, byteCount: utf8.count) }
                    next += utf8.count
                }
            }
            func append(_ text: StaticString) {
                next.copyMemory(from: text.utf8Start, byteCount: text.utf8CodeUnitCount)
                next += text.utf8CodeUnitCount
            }
            append(first)
            append(" ")
            append(second)
            append(" ")
            append(third)
            append("\r\n")
            for (name, value) in headers {
                append(name)
                append(": ")
                append(value)
                append("\r\n")
            }
            append("\r\n")
            let written = next - memory.baseAddress!
            precondition(written == size, "HTTP/1.1 head sized \(size) bytes, wrote \(written)")
            return written
        }
        return buffer
    }

    /// `HTTP/1.1`, as the start lines write a version.
    public static func text(_ version: HTTPVersion) -> String {
        switch (version.major, version.minor) {
        case (1, 1): return "HTTP/1.1"
        case (1, 0): return "HTTP/1.0"
        default: return "HTTP/\(version.major).\(version.minor)"
        }
    }

    /// Writes a body part, framed as a chunk when the message is chunked (an empty part
    /// is passed as it is: as a chunk it would end the body).
    public static func writeBody(_ body: IOData, chunked: Bool, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard chunked, body.readableBytes > 0 else {
            context.write(NIOAny(body), promise: promise)
            return
        }
        var size = context.channel.allocator.buffer(capacity: 18)
        size.writeString(String(body.readableBytes, radix: 16))
        size.writeStaticString("\r\n")
        context.write(NIOAny(IOData.byteBuffer(size)), promise: nil)
        context.write(NIOAny(body), promise: nil)
        // Writes complete in order: the last one's promise stands for all three.
        context.write(NIOAny(IOData.byteBuffer(ByteBuffer(staticString: "\r\n"))), promise: promise)
    }

    /// Ends a message: the last chunk and the trailers when chunked; otherwise nothing,
    /// but a promise still completes in order with the writes before it.
    public static func writeEnd(trailers: HTTPHeaders?, chunked: Bool, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        if chunked {
            var end = context.channel.allocator.buffer(capacity: 5)
            end.writeStaticString("0\r\n")
            for (name, value) in trailers ?? [:] {
                end.writeString(name)
                end.writeStaticString(": ")
                end.writeString(value)
                end.writeStaticString("\r\n")
            }
            end.writeStaticString("\r\n")
            context.write(NIOAny(IOData.byteBuffer(end)), promise: promise)
        } else if let promise {
            context.write(NIOAny(IOData.byteBuffer(ByteBuffer())), promise: promise)
        }
    }
}
