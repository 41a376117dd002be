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
        out.reserveCapacity(minimumWritableBytes: 256 + body.count)
        writeStatusLine(status, into: &out)
        for header in headers where !HeaderRules.isGatewayOwned(Self.bytes(header.name)) {
            Self.write(header.name, into: &out)
            out.writeStaticString(": ")
            Self.write(header.value, into: &out)
            out.writeStaticString("\r\n")
        }
        let mayHaveBody = HTTPResponseStatus(statusCode: status).mayHaveResponseBody
        writeGatewayHeaders(contentLength: mayHaveBody ? body.count : nil, into: &out)
        guard mayHaveBody, !isHead else { return Written(status: status, bodyBytes: 0) }
        out.writeBytes(body)
        return Written(status: status, bodyBytes: body.count)
    }

    private func encodeError(into out: inout ByteBuffer) -> Written {
        let body = #"{"error":"handler returned an invalid header"}"#
        writeStatusLine(500, into: &out)
        out.writeStaticString("content-type: application/json\r\n")
        writeGatewayHeaders(contentLength: body.utf8.count, into: &out)
        guard !isHead else { return Written(status: 500, bodyBytes: 0) }
        out.writeString(body)
        return Written(status: 500, bodyBytes: body.utf8.count)
    }

    private func writeStatusLine(_ status: Int, into out: inout ByteBuffer) {
        out.writeStaticString(minorVersion == 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
        out.writeString(String(status))
        out.writeStaticString(" ")
        out.writeString(HTTPResponseStatus(statusCode: status).reasonPhrase)
        out.writeStaticString("\r\n")
    }

    private func writeGatewayHeaders(contentLength: Int?, into out: inout ByteBuffer) {
        if let contentLength {
            out.writeStaticString("content-length: ")
            out.writeString(String(contentLength))
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("date: ")
        out.writeString(date)
        out.writeStaticString("\r\nx-request-id: ")
        out.writeString(requestID)
        out.writeStaticString("\r\n")
        if !keepAlive { out.writeStaticString("connection: close\r\n") }
        if let hsts {
            out.writeStaticString("strict-transport-security: ")
            out.writeString(hsts)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
    }

    // MARK: header bytes

    private static func bytes(_ value: apus_type_str) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: value.data, count: value.data == nil ? 0 : value.length)
    }

    private static func write(_ value: apus_type_str, into out: inout ByteBuffer) {
        out.writeBytes(bytes(value))
    }

    private static func text(_ value: apus_type_str) -> String {
        String(decoding: bytes(value), as: UTF8.self)
    }

}
