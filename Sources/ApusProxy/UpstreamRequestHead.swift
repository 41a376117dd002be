import NIOCore
import NIOHTTP1

/// A request head as the HTTP/1.1 front handler framed it: the bytes that
/// arrived, with the offsets of the target and of each field. The front handler
/// frames only canonical heads: an origin-form target without a fragment, no
/// `Transfer-Encoding`, no upgrade, one `Host` in HTTP/1.1.
public struct ReceivedRequestHead {
    let bytes: ByteBuffer
    let target: Range<Int>
    let fields: [HTTPSyntax.Field]

    /// `bytes` from the head's first byte; the ranges are offsets into them.
    package init(bytes: ByteBuffer, target: Range<Int>, fields: [HTTPSyntax.Field]) {
        self.bytes = bytes
        self.target = target
        self.fields = fields
    }
}

/// A request head ready for a backend connection: its bytes, its method (the
/// response decoder needs it for `HEAD`) and whether the body is sent chunked.
/// Encoded once, before the exchange asks for a connection, and sent again as
/// is if a stale pooled connection makes it retry.
public struct UpstreamRequestHead {
    public let method: HTTPMethod
    let bytes: ByteBuffer
    let chunked: Bool

    /// `head` (already rewritten for the backend: `makeUpstreamHead`) with NIO's
    /// framing rules (`UpstreamRequestEncoder.framing`).
    public init(encoding head: HTTPRequestHead, allocator: ByteBufferAllocator) {
        let framing = UpstreamRequestEncoder.framing(head)
        method = head.method
        chunked = framing.chunked
        bytes = HTTP1Encoding.head(
            head.method.rawValue, head.uri, HTTP1Encoding.text(head.version), headers: head.headers,
            framing: framing.fields, allocator: allocator)
    }

    /// The head the backend gets for a request the front handler framed, written
    /// from the received bytes: byte for byte what `makeUpstreamHead`, the
    /// gateway's trace context (`traceparent` kept when valid, else a new one
    /// from `makeTraceparent` when `startTraces`, replacing `tracestate` too) and
    /// `init(encoding:)` make of the same request (a unit test compares them), but
    /// without a `String` per field or a second `HTTPHeaders`. Field values go on
    /// as received, bytes over 0x7F included.
    ///
    /// Returns the head and the trace id of the `traceparent` sent (empty when none).
    public static func relaying(
        _ received: ReceivedRequestHead, method: HTTPMethod, requestID: String, client: ClientFacts, startTraces: Bool,
        makeTraceparent: () -> String, allocator: ByteBufferAllocator
    ) -> (head: UpstreamRequestHead, traceID: String) {
        received.bytes.withUnsafeReadableBytes { bytes in
            relaying(
                bytes, received, method: method, requestID: requestID, client: client, startTraces: startTraces,
                makeTraceparent: makeTraceparent, allocator: allocator)
        }
    }

    /// What a field of the client's head becomes on the way to the backend.
    private enum Verdict {
        case dropped
        case kept
        /// An `X-Forwarded-For`: its value joins the one the gateway sends.
        case priorFor
    }

    private static func relaying(
        _ bytes: UnsafeRawBufferPointer, _ received: ReceivedRequestHead, method: HTTPMethod, requestID: String,
        client: ClientFacts, startTraces: Bool, makeTraceparent: () -> String, allocator: ByteBufferAllocator
    ) -> (head: UpstreamRequestHead, traceID: String) {
        let fields = received.fields
        let named = HopByHop.connectionNamed(bytes, fields)
        // `makeUpstreamHead`'s rules, decided per field (the front handler frames no Transfer-Encoding).
        func verdict(_ field: HTTPSyntax.Field) -> Verdict {
            let name = field.name
            if HopByHop.stopsHere(bytes, name, named: named) { return .dropped }
            switch name.count {
            case 6 where HTTPSyntax.equalsLowercase(bytes, name, "expect"): return .dropped
            case 15 where HTTPSyntax.equalsLowercase(bytes, name, "x-forwarded-for"): return .priorFor
            case 17 where HTTPSyntax.equalsLowercase(bytes, name, "x-forwarded-proto"): return client.peerIsTrusted ? .kept : .dropped
            case 16 where HTTPSyntax.equalsLowercase(bytes, name, "x-forwarded-host"): return client.peerIsTrusted ? .kept : .dropped
            case 12 where HTTPSyntax.equalsLowercase(bytes, name, "x-request-id"): return .dropped
            default: return .kept
            }
        }

        // First pass: what the gateway adds depends on what is kept.
        var host: Range<Int>?
        var keptProto = false, keptHost = false, contentLength = false
        var priorFor: [Range<Int>] = []
        var traceparent: Range<Int>?
        var size = 0
        for field in fields {
            switch verdict(field) {
            case .dropped: continue
            case .priorFor: priorFor.append(field.value)
            case .kept:
                let name = field.name
                switch name.count {
                case 4 where HTTPSyntax.equalsLowercase(bytes, name, "host"): host = host ?? field.value
                case 11 where HTTPSyntax.equalsLowercase(bytes, name, "traceparent"): traceparent = traceparent ?? field.value
                case 14 where HTTPSyntax.equalsLowercase(bytes, name, "content-length"): contentLength = true
                case 16 where HTTPSyntax.equalsLowercase(bytes, name, "x-forwarded-host"): keptHost = true
                case 17 where HTTPSyntax.equalsLowercase(bytes, name, "x-forwarded-proto"): keptProto = true
                default: break
                }
                size += name.count + 2 + field.value.count + 2
            }
        }
        // The gateway's trace context: a valid traceparent goes on (the first, as
        // `HTTPHeaders.first(name:)` finds it); otherwise a new one replaces it and tracestate.
        var traceID = ""
        var newTraceparent: String?
        if let traceparent, let valid = traceIDIfValid(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[traceparent]), as: UTF8.self)) {
            traceID = valid
        } else if startTraces {
            let made = makeTraceparent()
            newTraceparent = made
            traceID = String(made.dropFirst(3).prefix(32))
        }
        let insertedHost = host == nil ? client.localAuthority : nil
        var forwardedFor = client.peerAddress
        if client.peerIsTrusted && !priorFor.isEmpty {
            var prior = priorFor.map { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[$0]), as: UTF8.self) }.joined(separator: ", ")
            if !prior.isEmpty {
                if !client.peerAddress.isEmpty { prior += ", " + client.peerAddress }
                forwardedFor = prior
            }
        }
        // NIO's framing (`UpstreamRequestEncoder.framing`): TRACE sends no framing
        // fields; POST, PUT and PATCH without a length are chunked.
        let dropsContentLength: Bool
        let chunked: Bool
        switch method {
        case .TRACE: (dropsContentLength, chunked) = (true, false)
        case .POST, .PUT, .PATCH: (dropsContentLength, chunked) = (false, !contentLength)
        default: (dropsContentLength, chunked) = (false, false)
        }

        let methodText = method.rawValue
        let proto: StaticString = "x-forwarded-proto: ", forwardedHost: StaticString = "x-forwarded-host: "
        size += methodText.utf8.count + 1 + received.target.count + 1 + 8 + 2 + 2
        if let insertedHost { size += 6 + insertedHost.utf8.count + 2 }
        if !forwardedFor.isEmpty { size += 17 + forwardedFor.utf8.count + 2 }
        if !keptProto { size += proto.utf8CodeUnitCount + client.scheme.utf8.count + 2 }
        if !keptHost, let host { size += forwardedHost.utf8CodeUnitCount + host.count + 2 }
        size += 14 + requestID.utf8.count + 2
        if let newTraceparent { size += 13 + newTraceparent.utf8.count + 2 }
        if chunked { size += 28 }

        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { memory in
            var cursor = HTTP1Encoding.Cursor(memory.baseAddress!)
            cursor.append(methodText)
            cursor.append(" ")
            cursor.append(bytes, received.target)
            cursor.append(" HTTP/1.1\r\n")
            if let insertedHost {
                cursor.append("host: ")
                cursor.append(insertedHost)
                cursor.append("\r\n")
            }
            for field in fields where verdict(field) == .kept {
                let name = field.name
                if name.count == 14, dropsContentLength, HTTPSyntax.equalsLowercase(bytes, name, "content-length") { continue }
                if newTraceparent != nil, name.count == 11 || name.count == 10,
                    HTTPSyntax.equalsLowercase(bytes, name, "traceparent") || HTTPSyntax.equalsLowercase(bytes, name, "tracestate")
                {
                    continue
                }
                cursor.append(bytes, name)
                cursor.append(": ")
                cursor.append(bytes, field.value)
                cursor.append("\r\n")
            }
            if !forwardedFor.isEmpty {
                cursor.append("x-forwarded-for: ")
                cursor.append(forwardedFor)
                cursor.append("\r\n")
            }
            if !keptProto {
                cursor.append(proto)
                cursor.append(client.scheme)
                cursor.append("\r\n")
            }
            if !keptHost, let host {
                cursor.append(forwardedHost)
                cursor.append(bytes, host)
                cursor.append("\r\n")
            }
            cursor.append("x-request-id: ")
            cursor.append(requestID)
            cursor.append("\r\n")
            if let newTraceparent {
                cursor.append("traceparent: ")
                cursor.append(newTraceparent)
                cursor.append("\r\n")
            }
            if chunked { cursor.append("transfer-encoding: chunked\r\n") }
            cursor.append("\r\n")
            let written = cursor.next - memory.baseAddress!
            precondition(written <= size, "relayed request head sized \(size) bytes at most, wrote \(written)")
            return written
        }
        return (UpstreamRequestHead(method: method, bytes: buffer, chunked: chunked), traceID)
    }

    private init(method: HTTPMethod, bytes: ByteBuffer, chunked: Bool) {
        self.method = method
        self.bytes = bytes
        self.chunked = chunked
    }
}
