import NIOCore
import NIOHTTP1

/// A backend's response head. As `UpstreamResponseDecoder` delivers it, it is the
/// bytes that arrived with the offsets of each field: the HTTP/1.1 client path
/// writes the client's head straight from them (`clientHead`), so a proxied
/// response makes no `String` of a header name or value. HTTP/2 streams and
/// connections handed to NIO's codec take it as NIO's `HTTPResponseHead` (`head`).
/// Making those strings, copying them into the client's head and writing them out
/// again was about 8,000 instructions of a proxied request (callgrind).
public struct UpstreamResponseHead {
    /// The status; a code NIO does not know keeps the backend's reason phrase.
    public let status: HTTPResponseStatus
    /// The backend's HTTP version.
    public let version: HTTPVersion
    private let storage: Storage

    private enum Storage {
        /// The head's bytes (status line, fields, empty line) and where each field is in them.
        case received(ByteBuffer, [HTTPSyntax.Field])
        /// A head NIO's decoder made (an upgrade request's answer).
        case parsed(HTTPHeaders)
    }

    /// A head as the decoder read it: `bytes` from its first byte, `fields` offsets into them.
    init(status: HTTPResponseStatus, version: HTTPVersion, bytes: ByteBuffer, fields: [HTTPSyntax.Field]) {
        self.status = status
        self.version = version
        self.storage = .received(bytes, fields)
    }

    /// A head NIO's decoder made.
    public init(_ head: HTTPResponseHead) {
        status = head.status
        version = head.version
        storage = .parsed(head.headers)
    }

    /// The head as NIO's type, names and values as received (invalid UTF-8 repaired).
    public var head: HTTPResponseHead {
        switch storage {
        case .parsed(let headers):
            return HTTPResponseHead(version: version, status: status, headers: headers)
        case .received(let bytes, let fields):
            return bytes.withUnsafeReadableBytes {
                HTTPResponseHead(version: version, status: status, headers: HTTPSyntax.headers($0, fields))
            }
        }
    }

    /// Whether the head has the bytes it arrived in (`clientHead` can relay it).
    public var hasReceivedBytes: Bool {
        if case .received = storage { return true }
        return false
    }

    /// Whether the backend keeps the connection after this response (NIO's rule:
    /// HTTP/1.1 unless `Connection` says `close`; HTTP/1.0 only if it says `keep-alive`).
    public var isKeepAlive: Bool {
        guard case .received(let bytes, let fields) = storage else { return head.isKeepAlive }
        let wanted: StaticString = version.minor == 0 ? "keep-alive" : "close"
        let found = bytes.withUnsafeReadableBytes { bytes in
            fields.contains { field in
                HTTPSyntax.equalsLowercase(bytes, field.name, "connection")
                    && HTTPSyntax.tokens(bytes, field.value).contains { HTTPSyntax.equalsLowercase(bytes, $0, wanted) }
            }
        }
        return version.minor == 0 ? found : !found
    }

    /// The HTTP/1.x head the client gets, from the received bytes: byte for byte
    /// what `makeDownstreamHead` (with `hsts` set as `Strict-Transport-Security`)
    /// and the response encoder make of `head` (a unit test compares them), except
    /// that field values are passed on as received, bytes over 0x7F included
    /// (RFC 9110 `obs-text`), where a `String` repairs what is not UTF-8.
    ///
    /// Framing is the response encoder's: no `Content-Length` when the response
    /// cannot have a body (`mayHaveBody`), and `transfer-encoding: chunked` when it
    /// may, names no length, and the client speaks HTTP/1.1. `nil` for a head NIO
    /// parsed (the caller takes the `head` path).
    public func clientHead(
        version clientVersion: HTTPVersion, requestID: String, keepAlive: Bool, hsts: String?, mayHaveBody: Bool,
        allocator: ByteBufferAllocator
    ) -> (bytes: ByteBuffer, chunked: Bool)? {
        guard case .received(let received, let fields) = storage else { return nil }
        let connection = connectionField(version: clientVersion, keepAlive: keepAlive)
        let versionText = HTTP1Encoding.text(clientVersion)
        let code = String(status.code)
        let reason = status.reasonPhrase
        let hstsName: StaticString = "strict-transport-security"
        let chunkedField: StaticString = "transfer-encoding: chunked\r\n"
        // An upper bound: a field line grows by at most two bytes (`: ` and CR for `:` and a bare LF).
        var bound = versionText.utf8.count + 1 + code.utf8.count + 1 + reason.utf8.count + 2
        bound += received.readableBytes + 2 * fields.count + 2
        bound += 12 + 2 + requestID.utf8.count + 2
        if let connection { bound += connection.0.utf8.count + 2 + connection.1.utf8.count + 2 }
        if let hsts { bound += hstsName.utf8CodeUnitCount + 2 + hsts.utf8.count + 2 }
        bound += chunkedField.utf8CodeUnitCount

        var keptContentLength = false
        var chunked = false
        var buffer = allocator.buffer(capacity: bound)
        received.withUnsafeReadableBytes { bytes in
            let named = HopByHop.connectionNamed(bytes, fields)
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { memory in
                var cursor = HTTP1Encoding.Cursor(memory.baseAddress!)
                cursor.append(versionText)
                cursor.append(" ")
                cursor.append(code)
                cursor.append(" ")
                cursor.append(reason)
                cursor.append("\r\n")
                for field in fields {
                    let name = field.name
                    if HopByHop.stopsHere(bytes, name, named: named) { continue }
                    switch name.count {
                    case 12 where HTTPSyntax.equalsLowercase(bytes, name, "x-request-id"):
                        continue
                    case 14 where HTTPSyntax.equalsLowercase(bytes, name, "content-length"):
                        guard mayHaveBody else { continue }
                        keptContentLength = true
                    case 25 where hsts != nil && HTTPSyntax.equalsLowercase(bytes, name, hstsName):
                        continue
                    default:
                        break
                    }
                    cursor.append(bytes, name)
                    cursor.append(": ")
                    cursor.append(bytes, field.value)
                    cursor.append("\r\n")
                }
                // The gateway's own fields, in `makeDownstreamHead`'s order; HSTS last, as `replaceOrAdd` puts it.
                cursor.append("x-request-id: ")
                cursor.append(requestID)
                cursor.append("\r\n")
                if let (name, value) = connection {
                    cursor.append(name)
                    cursor.append(": ")
                    cursor.append(value)
                    cursor.append("\r\n")
                }
                if let hsts {
                    cursor.append(hstsName)
                    cursor.append(": ")
                    cursor.append(hsts)
                    cursor.append("\r\n")
                }
                chunked = mayHaveBody && !keptContentLength && clientVersion.major == 1 && clientVersion.minor >= 1
                if chunked { cursor.append(chunkedField) }
                cursor.append("\r\n")
                let written = cursor.next - memory.baseAddress!
                precondition(written <= bound, "relayed head sized \(bound) bytes at most, wrote \(written)")
                return written
            }
        }
        return (buffer, chunked)
    }
}

/// A backend response part, as `UpstreamResponseDecoder` hands it to the exchange.
enum UpstreamResponsePart {
    case head(UpstreamResponseHead)
    case body(ByteBuffer)
    case end(HTTPHeaders?)
}
