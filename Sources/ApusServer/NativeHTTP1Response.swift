import CApusABI
import Logging
import NIOCore
import NIOHTTP1

/// Writes a native handler's response straight from the module's memory into
/// the bytes of an HTTP/1.1 response: status line, the handler's headers, the
/// gateway's framing and identity headers, and the body, in one buffer for one
/// `write(2)`. The same rules as the codec path in `GatewayHandler`: the
/// handler's framing headers are replaced, an invalid header becomes a 500, a
/// status outside 200...599 becomes a 500.
struct NativeHTTP1Response: Sendable {
    /// What the response says about the request it answers.
    var minorVersion: Int
    var isHead: Bool
    var keepAlive: Bool
    var requestID: String
    var date: String
    var hsts: String?
    var handlerName: String

    /// What went out, for the access log and metrics.
    struct Written {
        var status: Int
        var bodyBytes: Int
    }

    func encode(_ response: apus_type_response, into out: inout ByteBuffer, logger: Logger) -> Written {
        let headers = UnsafeBufferPointer(start: response.headers, count: response.headers == nil ? 0 : response.header_count)
        for header in headers where !HeaderRules.isValidName(Self.bytes(header.name)) || !HeaderRules.isValidValue(Self.bytes(header.value)) {
            logger.error(
                "native handler returned an invalid header; answering 500",
                metadata: ["handler.name": "\(handlerName)", "header": "\(Self.text(header.name))"])
            return encodeError(into: &out)
        }
        var status = Int(response.status)
        if !(200...599).contains(status) {
            logger.error("native handler returned status \(status); answering 500", metadata: ["handler.name": "\(handlerName)"])
            status = 500
        }
        let body = UnsafeRawBufferPointer(start: response.body, count: response.body == nil ? 0 : response.body_length)
        let mayHaveBody = HTTPResponseStatus(statusCode: status).mayHaveResponseBody
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        let sentBody = mayHaveBody && !isHead ? body : UnsafeRawBufferPointer(start: nil, count: 0)
        let contentLength = mayHaveBody ? body.count : nil

        // Sized first, then written in one pass: one capacity check for the whole response.
        var size = 9 + 3 + 1 + reason.utf8.count + 2 + gatewayHeadersSize(contentLength: contentLength) + sentBody.count
        for header in headers where !HeaderRules.isGatewayOwned(Self.bytes(header.name)) {
            size += header.name.length + 2 + header.value.length + 2
        }
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { buffer in
            var cursor = ResponseCursor(buffer.baseAddress!)
            cursor.append(minorVersion == 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
            cursor.append(decimal: status)
            cursor.append(" ")
            cursor.append(reason)
            cursor.append("\r\n")
            for header in headers where !HeaderRules.isGatewayOwned(Self.bytes(header.name)) {
                cursor.append(Self.bytes(header.name))
                cursor.append(": ")
                cursor.append(Self.bytes(header.value))
                cursor.append("\r\n")
            }
            writeGatewayHeaders(contentLength: contentLength, into: &cursor)
            cursor.append(sentBody)
            let written = cursor.written(since: buffer.baseAddress!)
            precondition(written == size, "native response sized \(size) bytes, wrote \(written)")
            return written
        }
        return Written(status: status, bodyBytes: sentBody.count)
    }

    private func encodeError(into out: inout ByteBuffer) -> Written {
        let body = #"{"error":"handler returned an invalid header"}"#
        let head: StaticString = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
        let sentBody = isHead ? "" : body
        let size = head.utf8CodeUnitCount + gatewayHeadersSize(contentLength: body.utf8.count) + sentBody.utf8.count
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { buffer in
            var cursor = ResponseCursor(buffer.baseAddress!)
            cursor.append(minorVersion == 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
            cursor.append(UnsafeRawBufferPointer(start: head.utf8Start + 9, count: head.utf8CodeUnitCount - 9))
            writeGatewayHeaders(contentLength: body.utf8.count, into: &cursor)
            cursor.append(sentBody)
            let written = cursor.written(since: buffer.baseAddress!)
            precondition(written == size, "error response sized \(size) bytes, wrote \(written)")
            return written
        }
        return Written(status: 500, bodyBytes: sentBody.utf8.count)
    }

    /// `Connection`, as `connectionField` decides it: `close`, or `keep-alive` for an
    /// HTTP/1.0 client that asked to keep the connection (it would wait for the close).
    private var connectionLine: StaticString? {
        if !keepAlive { return "connection: close\r\n" }
        return minorVersion == 0 ? "connection: keep-alive\r\n" : nil
    }

    private func gatewayHeadersSize(contentLength: Int?) -> Int {
        var size = 6 + date.utf8.count + 2 + 14 + requestID.utf8.count + 2 + 2
        if let contentLength { size += 16 + ResponseCursor.decimalDigits(contentLength) + 2 }
        if let connectionLine { size += connectionLine.utf8CodeUnitCount }
        if let hsts { size += 27 + hsts.utf8.count + 2 }
        return size
    }

    private func writeGatewayHeaders(contentLength: Int?, into cursor: inout ResponseCursor) {
        if let contentLength {
            cursor.append("content-length: ")
            cursor.append(decimal: contentLength)
            cursor.append("\r\n")
        }
        cursor.append("date: ")
        cursor.append(date)
        cursor.append("\r\nx-request-id: ")
        cursor.append(requestID)
        cursor.append("\r\n")
        if let connectionLine { cursor.append(connectionLine) }
        if let hsts {
            cursor.append("strict-transport-security: ")
            cursor.append(hsts)
            cursor.append("\r\n")
        }
        cursor.append("\r\n")
    }

    // MARK: header bytes

    private static func bytes(_ value: apus_type_str) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: value.data, count: value.data == nil ? 0 : value.length)
    }

    private static func text(_ value: apus_type_str) -> String {
        String(decoding: bytes(value), as: UTF8.self)
    }

}

/// Appends bytes at a pointer into memory already sized for them (by `encode`).
private struct ResponseCursor {
    private var next: UnsafeMutableRawPointer

    init(_ start: UnsafeMutableRawPointer) { next = start }

    func written(since start: UnsafeMutableRawPointer) -> Int { next - start }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        next.copyMemory(from: base, byteCount: bytes.count)
        next += bytes.count
    }

    mutating func append(_ text: StaticString) {
        append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    mutating func append(_ text: String) {
        // Gateway strings are native and contiguous; the fallback copies byte by byte.
        if text.utf8.withContiguousStorageIfAvailable({ append(UnsafeRawBufferPointer($0)) }) == nil {
            for byte in text.utf8 {
                next.storeBytes(of: byte, as: UInt8.self)
                next += 1
            }
        }
    }

    mutating func append(decimal value: Int) {
        let digits = Self.decimalDigits(value)
        var rest = value
        for offset in stride(from: digits - 1, through: 0, by: -1) {
            next.storeBytes(of: UInt8(truncatingIfNeeded: 48 + rest % 10), toByteOffset: offset, as: UInt8.self)
            rest /= 10
        }
        next += digits
    }

    /// Digits of a non-negative integer (status codes and lengths).
    static func decimalDigits(_ value: Int) -> Int {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        return digits
    }
}
