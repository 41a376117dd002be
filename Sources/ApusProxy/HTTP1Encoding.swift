import NIOCore
import NIOHTTP1

/// What Apus's two HTTP/1.1 encoders share (requests to the backend,
/// `UpstreamRequestEncoder`; responses to clients, `HTTP1ResponseEncoder`): a head
/// sized first and copied into one buffer, and NIO's chunked framing. NIO's
/// encoders write a head piece by piece, and each `ByteBuffer` write carries its
/// own capacity, uniqueness and exclusivity checks.
public enum HTTP1Encoding {
    /// What a head does with its framing fields as it is written: NIO's encoders
    /// edit the head first (each removal a pass over the fields and, since the
    /// head is shared with the part that carried it, a copy of them); here the
    /// fields are skipped, and `transfer-encoding: chunked` appended, in the pass
    /// that writes the head.
    public struct Framing: Sendable {
        let dropsContentLength: Bool
        let dropsTransferEncoding: Bool
        let addsChunked: Bool

        /// The fields as they are.
        public static let asIs = Framing(dropsContentLength: false, dropsTransferEncoding: false, addsChunked: false)
        /// Neither `Content-Length` nor `Transfer-Encoding`: a message that cannot have a body.
        public static let withoutBodyFields = Framing(dropsContentLength: true, dropsTransferEncoding: true, addsChunked: false)
        /// No `Transfer-Encoding`: the `Content-Length` frames the body.
        public static let byContentLength = Framing(dropsContentLength: false, dropsTransferEncoding: true, addsChunked: false)
        /// Any `Transfer-Encoding` replaced by `transfer-encoding: chunked` at the end.
        public static let chunked = Framing(dropsContentLength: false, dropsTransferEncoding: true, addsChunked: true)

        @inline(__always)
        func skips(_ name: String) -> Bool {
            switch name.utf8.count {
            case 14: return dropsContentLength && equalsIgnoringCase(name, "content-length")
            case 17: return dropsTransferEncoding && equalsIgnoringCase(name, "transfer-encoding")
            default: return false
            }
        }
    }

    /// `first second third\r\n`, the fields (framed as `framing` says), and the
    /// empty line, in one buffer.
    public static func head(
        _ first: String, _ second: String, _ third: String, headers: HTTPHeaders, framing: Framing = .asIs,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let chunkedField: StaticString = "transfer-encoding: chunked\r\n"
        var size = first.utf8.count + 1 + second.utf8.count + 1 + third.utf8.count + 2 + 2
        for (name, value) in headers where !framing.skips(name) { size += name.utf8.count + 2 + value.utf8.count + 2 }
        if framing.addsChunked { size += chunkedField.utf8CodeUnitCount }
        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { memory in
            var cursor = Cursor(memory.baseAddress!)
            cursor.append(first)
            cursor.append(" ")
            cursor.append(second)
            cursor.append(" ")
            cursor.append(third)
            cursor.append("\r\n")
            for (name, value) in headers where !framing.skips(name) {
                cursor.append(name)
                cursor.append(": ")
                cursor.append(value)
                cursor.append("\r\n")
            }
            if framing.addsChunked { cursor.append(chunkedField) }
            cursor.append("\r\n")
            let written = cursor.next - memory.baseAddress!
            precondition(written == size, "HTTP/1.1 head sized \(size) bytes, wrote \(written)")
            return written
        }
        return buffer
    }

    /// Copies text into memory sized for it beforehand (a head's buffer).
    struct Cursor {
        private(set) var next: UnsafeMutableRawPointer

        init(_ start: UnsafeMutableRawPointer) { next = start }

        mutating func append(_ text: String) {
            // Not `withUTF8`: that needs a mutable copy of each string (a retain and a release).
            let copied: Void? = text.utf8.withContiguousStorageIfAvailable { utf8 in
                if let base = utf8.baseAddress { next.copyMemory(from: base, byteCount: utf8.count) }
                next += utf8.count
            }
            if copied == nil {
                for byte in text.utf8 {
                    next.storeBytes(of: byte, as: UInt8.self)
                    next += 1
                }
            }
        }

        mutating func append(_ text: StaticString) {
            next.copyMemory(from: text.utf8Start, byteCount: text.utf8CodeUnitCount)
            next += text.utf8CodeUnitCount
        }

        /// `bytes[range]`.
        mutating func append(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) {
            next.copyMemory(from: bytes.baseAddress! + range.lowerBound, byteCount: range.count)
            next += range.count
        }
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
