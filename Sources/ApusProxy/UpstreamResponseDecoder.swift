import NIOCore
import NIOHTTP1

/// Why a backend's response could not be read. The exchange fails with a 502
/// (`UpstreamError.invalidResponse`) and the backend connection is closed.
struct UpstreamResponseError: Error, Sendable, CustomStringConvertible {
    let description: String
}

/// Frames the backend's HTTP/1.x responses into `UpstreamResponsePart`s, in
/// place of NIO's `HTTPResponseDecoder` (llhttp behind a generic
/// `ByteToMessageHandler`, which was the largest single cost of a proxied
/// request after the client side stopped using it).
///
/// It reads what an HTTP/1.1 origin server sends (RFC 9112): a status line, header
/// lines, and a body framed by `Transfer-Encoding: chunked` (with trailers), by
/// `Content-Length`, or by the end of the connection; no body for `HEAD`, 204 and
/// 304; interim 1xx answers are dropped. Lines may end in CRLF or a bare LF;
/// header values lose surrounding whitespace (RFC 9110, 5.5; llhttp kept trailing
/// whitespace). Bodies go on as slices of the received bytes, not copies.
/// What a mature proxy refuses from a backend, it
/// refuses (nginx does the same): obs-fold, control bytes, both `Content-Length`
/// and `Transfer-Encoding`, more than one `Content-Length`, a head over 80 KiB
/// (NIO's limit for responses), a `101` nobody asked for, and bytes that answer
/// no request. Then it reports an `UpstreamResponseError` and stops reading; the
/// connection is closed and never reused.
///
/// It is not a channel handler: `UpstreamHandler`, the only handler on a backend
/// connection, feeds it the bytes read and hands the parts straight to the
/// exchange. Passed along a pipeline, each part was wrapped in `NIOAny` and cast
/// back, a dynamic cast of about 480 instructions per part.
/// `UpstreamHandler` tells it each request's method (`requestSent`), so it knows
/// which response answers a `HEAD`.
final class UpstreamResponseDecoder {
    static let maxHeadBytes = 80 * 1024
    private static let maxChunkLineBytes = 4 * 1024

    private enum State {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        /// The line break after a chunk's data.
        case chunkDataEnd
        case trailers
        case untilClose
        case failed
    }

    private var state = State.head
    private var buffered = ByteBuffer()
    /// Methods of requests sent and not yet answered, oldest first.
    private var methods = CircularBuffer<HTTPMethod>(initialCapacity: 2)
    private var fields: [ResponseHeadScanner.Field] = []
    private var failure: UpstreamResponseError?

    // MARK: requests

    /// A request with this method went out; its response comes after those of the requests before it.
    func requestSent(_ method: HTTPMethod) {
        methods.append(method)
    }

    // MARK: inbound

    /// Decodes what the backend sent, handing each complete part to `deliver`.
    /// Returns the reason when the bytes are not a response the proxy passes on;
    /// the decoder reads nothing more after that.
    func decode(_ incoming: ByteBuffer, deliver: (UpstreamResponsePart) -> Void) -> UpstreamResponseError? {
        if case .failed = state { return nil }
        if buffered.readableBytes == 0 {
            buffered = incoming
        } else {
            var incoming = incoming
            buffered.writeBuffer(&incoming)
        }
        decode(deliver)
        // Let go of the read buffer once everything in it went on.
        if buffered.readableBytes == 0 { buffered = ByteBuffer() }
        let found = failure
        failure = nil
        return found
    }

    /// The connection ended: true when that ends a body read until the close
    /// (the caller delivers the `.end`).
    func connectionEnded() -> Bool {
        guard case .untilClose = state else { return false }
        state = .head
        return true
    }

    /// Moves on through the buffered bytes until they run out or a part is incomplete.
    /// The state is updated before each part goes on: taking an `.end` may hand this
    /// connection to the next exchange at once, which sends its request (`requestSent`).
    private func decode(_ deliver: (UpstreamResponsePart) -> Void) {
        while buffered.readableBytes > 0 {
            switch state {
            case .failed:
                return
            case .head:
                guard decodeHead(deliver) else { return }
            case .fixedBody(let remaining):
                let slice = buffered.readSlice(length: min(remaining, buffered.readableBytes))!
                let left = remaining - slice.readableBytes
                state = left == 0 ? .head : .fixedBody(remaining: left)
                deliver(.body(slice))
                if left == 0 { deliver(.end(nil)) }
            case .untilClose:
                let slice = buffered.readSlice(length: buffered.readableBytes)!
                deliver(.body(slice))
            case .chunkSize:
                guard decodeChunkSize() else { return }
            case .chunkData(let remaining):
                let slice = buffered.readSlice(length: min(remaining, buffered.readableBytes))!
                let left = remaining - slice.readableBytes
                state = left == 0 ? .chunkDataEnd : .chunkData(remaining: left)
                deliver(.body(slice))
            case .chunkDataEnd:
                let first = buffered.getInteger(at: buffered.readerIndex, as: UInt8.self)!
                if first == lf {
                    buffered.moveReaderIndex(forwardBy: 1)
                } else {
                    guard first == cr else { return fail("chunk data is not followed by a line break") }
                    guard buffered.readableBytes >= 2 else { return }
                    guard buffered.getInteger(at: buffered.readerIndex + 1, as: UInt8.self) == lf else {
                        return fail("chunk data is not followed by a line break")
                    }
                    buffered.moveReaderIndex(forwardBy: 2)
                }
                state = .chunkSize
            case .trailers:
                guard decodeTrailers(deliver) else { return }
            }
        }
    }

    /// One response head, and what its body will be. False when more bytes are needed (or it failed).
    private func decodeHead(_ deliver: (UpstreamResponsePart) -> Void) -> Bool {
        guard let method = methods.first else {
            fail("the backend sent bytes that answer no request")
            return false
        }
        let scan = buffered.withUnsafeReadableBytes { ResponseHeadScanner.scanHead($0, fields: &fields) }
        let head: ResponseHeadScanner.Head
        switch scan {
        case .incomplete:
            if buffered.readableBytes > Self.maxHeadBytes { fail("response head is larger than 80 KiB") }
            return false
        case .invalid(let reason):
            fail(reason)
            return false
        case .complete(let found):
            guard found.length <= Self.maxHeadBytes else {
                fail("response head is larger than 80 KiB")
                return false
            }
            head = found
        }
        if head.status < 200 {
            buffered.moveReaderIndex(forwardBy: head.length)
            // An interim answer (100 Continue, 103 Early Hints) is dropped, as NIO's decoder
            // does: the gateway answers `Expect` itself; the final answer follows.
            guard head.status != 101 else {
                fail("the backend switched protocols on a request that asked for no upgrade")
                return false
            }
            return true
        }
        // An unknown code keeps the backend's reason phrase (NIO's decoder drops it).
        var status = HTTPResponseStatus(statusCode: head.status)
        if case .custom = status {
            status = HTTPResponseStatus(
                statusCode: head.status, reasonPhrase: buffered.withUnsafeReadableBytes { HTTPSyntax.string($0, head.reason) })
        }
        // The head's bytes stay where they arrived (a slice, not a copy), with its fields' offsets.
        let response = UpstreamResponseHead(
            status: status, version: HTTPVersion(major: 1, minor: head.minorVersion),
            bytes: buffered.readSlice(length: head.length)!, fields: fields)
        methods.removeFirst()
        let noBody = method.isHEAD || head.status == 204 || head.status == 304
        if noBody {
            state = .head
        } else if head.chunked {
            state = .chunkSize
        } else if let length = head.contentLength {
            state = length > 0 ? .fixedBody(remaining: length) : .head
        } else {
            state = .untilClose
        }
        deliver(.head(response))
        if case .head = state { deliver(.end(nil)) }
        return true
    }

    /// A chunk-size line (`1a;ext=x`). False when more bytes are needed (or it failed).
    private func decodeChunkSize() -> Bool {
        let line = buffered.withUnsafeReadableBytes { ResponseHeadScanner.scanChunkSize($0, maxLine: Self.maxChunkLineBytes) }
        switch line {
        case .incomplete:
            return false
        case .invalid(let reason):
            fail(reason)
            return false
        case .complete(let size, let length):
            buffered.moveReaderIndex(forwardBy: length)
            state = size == 0 ? .trailers : .chunkData(remaining: size)
            return true
        }
    }

    /// The trailer section after the last chunk, then the end of the response.
    private func decodeTrailers(_ deliver: (UpstreamResponsePart) -> Void) -> Bool {
        let scan = buffered.withUnsafeReadableBytes { ResponseHeadScanner.scanFields($0, from: 0, fields: &fields) }
        switch scan {
        case .incomplete:
            if buffered.readableBytes > Self.maxHeadBytes { fail("response trailers are larger than 80 KiB") }
            return false
        case .invalid(let reason):
            fail(reason)
            return false
        case .complete(let length):
            let trailers = fields.isEmpty ? nil : buffered.withUnsafeReadableBytes { HTTPSyntax.headers($0, fields) }
            buffered.moveReaderIndex(forwardBy: length)
            state = .head
            deliver(.end(trailers))
            return true
        }
    }

    private func fail(_ reason: String) {
        state = .failed
        buffered = ByteBuffer()
        failure = UpstreamResponseError(description: reason)
    }
}

private let cr: UInt8 = 0x0D
private let lf: UInt8 = 0x0A

/// The byte-level parsing behind `UpstreamResponseDecoder`, on raw bytes so that
/// it costs no `ByteBuffer` call per byte.
enum ResponseHeadScanner {
    typealias Field = HTTPSyntax.Field

    struct Head {
        var minorVersion = 1
        var status = 0
        var reason: Range<Int> = 0..<0
        /// Bytes of the head, including the empty line that ends it.
        var length = 0
        var contentLength: Int?
        /// `Transfer-Encoding: chunked` (the only transfer coding accepted).
        var chunked = false
    }

    enum HeadScan {
        case incomplete
        case invalid(String)
        case complete(Head)
    }

    enum FieldsScan {
        case incomplete
        case invalid(String)
        /// The offset just past the empty line that ends the fields.
        case complete(Int)
    }

    enum ChunkSizeScan {
        case incomplete
        case invalid(String)
        case complete(size: Int, length: Int)
    }

    /// A status line and the header fields after it.
    static func scanHead(_ bytes: UnsafeRawBufferPointer, fields: inout [Field]) -> HeadScan {
        var head = Head()
        // "HTTP/1.x SP 3DIGIT [SP reason]" line break
        guard bytes.count >= 12 else { return .incomplete }
        guard bytes[0] == 0x48, bytes[1] == 0x54, bytes[2] == 0x54, bytes[3] == 0x50, bytes[4] == 0x2F, bytes[5] == 0x31,
            bytes[6] == 0x2E, bytes[7] == 0x31 || bytes[7] == 0x30, bytes[8] == 0x20
        else { return .invalid("the response does not start with an HTTP/1.0 or HTTP/1.1 status line") }
        head.minorVersion = bytes[7] == 0x31 ? 1 : 0
        var status = 0
        for index in 9..<12 {
            let digit = bytes[index] &- 0x30
            guard digit < 10 else { return .invalid("the response's status code is not three digits") }
            status = status * 10 + Int(digit)
        }
        guard status >= 100 else { return .invalid("the response's status code \(status) is below 100") }
        head.status = status
        var index = 12
        guard index < bytes.count else { return .incomplete }
        switch bytes[index] {
        case 0x20: index += 1
        case cr, lf: break
        default: return .invalid("the response's status code is not three digits")
        }
        let reasonStart = index
        while index < bytes.count, bytes[index] != cr, bytes[index] != lf {
            guard isFieldValueByte(bytes[index]) else { return .invalid("the response's reason phrase has a control byte") }
            index += 1
        }
        guard let afterLine = lineEnd(bytes, index) else { return .incomplete }
        guard afterLine > 0 else { return .invalid("the response's status line has a CR without LF") }
        head.reason = reasonStart..<index

        switch scanFields(bytes, from: afterLine, fields: &fields) {
        case .incomplete: return .incomplete
        case .invalid(let reason): return .invalid(reason)
        case .complete(let length): head.length = length
        }
        for field in fields {
            switch field.name.count {
            case 14 where HTTPSyntax.equalsLowercase(bytes, field.name, "content-length"):
                guard head.contentLength == nil else { return .invalid("the response has more than one Content-Length") }
                guard let length = HTTPSyntax.decimal(bytes, field.value) else {
                    return .invalid("the response's Content-Length is not a number")
                }
                head.contentLength = length
            case 17 where HTTPSyntax.equalsLowercase(bytes, field.name, "transfer-encoding"):
                // Only chunked: the client connection is framed anew, and any other coding
                // would reach the client undone and unannounced (nginx answers 502 too).
                guard !head.chunked else { return .invalid("the response has more than one Transfer-Encoding") }
                guard isOnlyChunked(bytes, field.value) else {
                    return .invalid("the response uses a transfer coding other than chunked")
                }
                head.chunked = true
            default:
                break
            }
        }
        if head.chunked && head.contentLength != nil {
            return .invalid("the response has both Content-Length and Transfer-Encoding")
        }
        return .complete(head)
    }

    /// Header (or trailer) lines from `start` up to and including the empty line.
    static func scanFields(_ bytes: UnsafeRawBufferPointer, from start: Int, fields: inout [Field]) -> FieldsScan {
        fields.removeAll(keepingCapacity: true)
        var index = start
        while true {
            guard index < bytes.count else { return .incomplete }
            if bytes[index] == cr || bytes[index] == lf {
                guard let after = lineEnd(bytes, index) else { return .incomplete }
                guard after > 0 else { return .invalid("a response header line has a CR without LF") }
                return .complete(after)
            }
            let nameStart = index
            while index < bytes.count, HTTPSyntax.isTokenByte(bytes[index]) { index += 1 }
            guard index < bytes.count else { return .incomplete }
            guard bytes[index] == 0x3A, index > nameStart else {
                return .invalid(
                    nameStart == index && (bytes[index] == 0x20 || bytes[index] == 0x09)
                        ? "a response header is folded over lines (obs-fold)" : "a response header name is not a token")
            }
            let name = nameStart..<index
            index += 1
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
            let valueStart = index
            while index < bytes.count, isFieldValueByte(bytes[index]) { index += 1 }
            guard index < bytes.count else { return .incomplete }
            guard bytes[index] == cr || bytes[index] == lf else { return .invalid("a response header value has a control byte") }
            guard let after = lineEnd(bytes, index) else { return .incomplete }
            guard after > 0 else { return .invalid("a response header line has a CR without LF") }
            var valueEnd = index
            while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            fields.append(Field(name: name, value: valueStart..<valueEnd))
            index = after
        }
    }

    /// A chunk-size line: hex digits, optional extensions (ignored), a line break.
    static func scanChunkSize(_ bytes: UnsafeRawBufferPointer, maxLine: Int) -> ChunkSizeScan {
        var index = 0
        var size = 0
        while index < bytes.count, let digit = hexValue(bytes[index]) {
            guard index < 15 else { return .invalid("a response chunk size is too large") }
            size = size << 4 | digit
            index += 1
        }
        guard index < bytes.count else { return bytes.count > maxLine ? .invalid("a response chunk-size line is too long") : .incomplete }
        guard index > 0 else { return .invalid("a response chunk does not start with its size") }
        // Whitespace and `;name=value` extensions, which nobody needs: skipped.
        if bytes[index] != cr && bytes[index] != lf {
            guard bytes[index] == 0x3B || bytes[index] == 0x20 || bytes[index] == 0x09 else {
                return .invalid("a response chunk size is not a hex number")
            }
            while index < bytes.count, bytes[index] != cr, bytes[index] != lf {
                guard isFieldValueByte(bytes[index]) else { return .invalid("a response chunk extension has a control byte") }
                index += 1
            }
        }
        guard index <= maxLine else { return .invalid("a response chunk-size line is too long") }
        guard let after = lineEnd(bytes, index) else { return .incomplete }
        guard after > 0 else { return .invalid("a response chunk-size line has a CR without LF") }
        return .complete(size: size, length: after)
    }

    // MARK: bytes

    /// The offset after the line break at `index` (CRLF or LF); nil if it is not all here
    /// yet; 0 for a CR followed by something else.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> Int? {
        guard index < bytes.count else { return nil }
        if bytes[index] == lf { return index + 1 }
        guard index + 1 < bytes.count else { return nil }
        return bytes[index + 1] == lf ? index + 2 : 0
    }

    /// Visible ASCII, obs-text, space and tab (RFC 9110 `field-vchar` and whitespace).
    private static func isFieldValueByte(_ byte: UInt8) -> Bool {
        (byte >= 0x20 && byte != 0x7F) || byte == 0x09
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: return Int(byte - 0x30)
        case 0x41...0x46: return Int(byte - 0x41 + 10)
        case 0x61...0x66: return Int(byte - 0x61 + 10)
        default: return nil
        }
    }

    /// Whether a `Transfer-Encoding` value is `chunked` alone (values come without
    /// surrounding whitespace).
    private static func isOnlyChunked(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        HTTPSyntax.equalsLowercase(bytes, range, "chunked")
    }
}
