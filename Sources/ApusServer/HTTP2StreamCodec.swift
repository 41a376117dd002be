import Logging
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Turns one HTTP/2 stream's frames into the HTTP/1-style request parts the
/// gateway reads, and the gateway's response parts into frames. It replaces
/// NIOHTTP2's `HTTP2FramePayloadToHTTP1ServerCodec` for three reasons:
///
/// - **HPACK indexing.** NIO's codec marks every response header indexable, so
///   each response's unique values (`x-request-id`, `date`, `content-length`)
///   went into the connection's dynamic table, evicted each other, and made the
///   encoder compare every header name with every entry (a tenth of a native
///   HTTP/2 request's instructions). Here only names whose values repeat across
///   responses are indexed; `set-cookie` is never indexed (RFC 7541 7.1.3).
/// - **Cookies.** HTTP/2 clients split `cookie` into one field per crumb
///   (RFC 9113 8.2.3); an HTTP/1.1 backend must see them joined with "; ",
///   or frameworks that read the first `cookie` header lose the rest.
/// - **RFC 8441.** Extended CONNECT's `:protocol` is kept as a private header
///   (`protocolHeader`) the gateway reads to tunnel a WebSocket; a client's own
///   header of that name is dropped.
///
/// It also ends a stream whose answer stopped leaving (nginx's `send_timeout`):
/// a client that stops opening its flow-control window would otherwise keep the
/// stream and every byte of the answer for as long as the connection lives. The
/// stream channel turns unwritable once more than 8 KiB wait in it; from then
/// on, each DATA frame that leaves (large bodies go as 16 KiB frames, each with
/// a write promise) counts as progress, and `sendTimeout` without any resets the
/// stream. Small answers on a writable stream pay nothing for this.
///
/// It also checks request header blocks (names, values, pseudo-headers) in the
/// pass that converts them, which NIOHTTP2 did in a pass of its own for requests
/// and again for every response (a tenth of a request's instructions). The
/// responses it writes are well-formed by construction: lowercased names from
/// checked tokens, values checked where they entered (the backend response
/// decoder, `HeaderRules` for native answers), connection-specific fields left out.
final class HTTP2StreamCodec: ChannelInboundHandler, ChannelOutboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// Where `:protocol` goes; removed again before the request reaches the backend.
    static let protocolHeader = "x-apus-h2-protocol"

    private var sawRequestHead = false

    /// How long an answer may wait without a DATA frame leaving (the server's `keepalive_timeout`).
    private let sendTimeout: TimeAmount
    private let logger: Logger
    /// The stream's writability, as its last change said.
    private var writable = true
    /// When a tracked DATA frame last left, or the stream last changed writability.
    private var lastDataSent = NIODeadline.now()
    private var sendCheck: Scheduled<Void>?
    /// Frames larger than this are tracked and cut into frames of this size (HTTP/2's default largest frame).
    private static let trackedFrameSize = 16 * 1024

    init(sendTimeout: TimeAmount, logger: Logger) {
        self.sendTimeout = sendTimeout
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let block):
            do {
                if sawRequestHead {
                    // The second header block of a request stream is its trailers.
                    context.fireChannelRead(wrapInboundOut(.end(try Self.trailers(block.headers))))
                    return
                }
                sawRequestHead = true
                let head = try Self.requestHead(block.headers, endStream: block.endStream)
                context.fireChannelRead(wrapInboundOut(.head(head)))
                if block.endStream { context.fireChannelRead(wrapInboundOut(.end(nil))) }
            } catch {
                // RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
                context.writeAndFlush(wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
                context.fireErrorCaught(error)
            }
        case .data(let frame):
            guard case .byteBuffer(let bytes) = frame.data else { return }
            if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(bytes))) }
            if frame.endStream { context.fireChannelRead(wrapInboundOut(.end(nil))) }
        default:
            break  // other frame types carry nothing for the gateway
        }
    }

    /// The last head or body frame written, held until the next part or flush, so
    /// that the end of the response rides on it as END_STREAM instead of costing a
    /// frame of its own (an empty DATA frame), as nginx sends it.
    private var held: (payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?)?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            writeHeld(context)
            var block = HPACKHeaders()
            block.reserveCapacity(head.headers.count + 1)
            block.add(name: ":status", value: String(head.status.code))
            Self.appendResponseFields(head.headers, to: &block)
            let payload = HTTP2Frame.FramePayload.headers(.init(headers: block))
            if head.status.code < 200 {
                context.write(wrapOutboundOut(payload), promise: promise)  // interim: never the last frame
            } else {
                held = (payload, promise)
            }
        case .body(let body):
            writeHeld(context)
            held = (.data(.init(data: body)), promise)
        case .end(let trailers?):
            writeHeld(context)
            var block = HPACKHeaders()
            Self.appendResponseFields(trailers, to: &block)
            context.write(wrapOutboundOut(.headers(.init(headers: block, endStream: true))), promise: promise)
        case .end(nil):
            guard let (payload, heldPromise) = held else {
                let empty = context.channel.allocator.buffer(capacity: 0)
                context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(empty), endStream: true))), promise: promise)
                return
            }
            held = nil
            let last: HTTP2Frame.FramePayload
            switch payload {
            case .headers(var headers):
                headers.endStream = true
                last = .headers(headers)
            case .data(var data):
                data.endStream = true
                last = .data(data)
            default:
                last = payload
            }
            if let heldPromise, let promise { heldPromise.futureResult.cascade(to: promise) }
            writeFrame(last, promise: heldPromise ?? promise, context: context)
        }
    }

    func flush(context: ChannelHandlerContext) {
        writeHeld(context)
        context.flush()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        held?.promise?.fail(ChannelError.ioOnClosedChannel)
        held = nil
        sendCheck?.cancel()
        sendCheck = nil
    }

    private func writeHeld(_ context: ChannelHandlerContext) {
        guard let (payload, promise) = held else { return }
        held = nil
        writeFrame(payload, promise: promise, context: context)
    }

    /// Writes a frame. A DATA frame is tracked when the stream is unwritable or the
    /// frame is large; a large one goes as frames of `trackedFrameSize`, so that a
    /// slow reader's progress shows frame by frame.
    private func writeFrame(_ payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard case .data(let data) = payload, case .byteBuffer(var bytes) = data.data,
            !writable || bytes.readableBytes > Self.trackedFrameSize
        else {
            context.write(wrapOutboundOut(payload), promise: promise)
            return
        }
        while bytes.readableBytes > Self.trackedFrameSize {
            let part = bytes.readSlice(length: Self.trackedFrameSize)!
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(part)))), promise: trackedPromise(context))
        }
        let last = trackedPromise(context)
        if let promise { last.futureResult.cascade(to: promise) }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes), endStream: data.endStream))), promise: last)
    }

    private func trackedPromise(_ context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        let promise = context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess { bound.value.lastDataSent = .now() }
        return promise
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if writable || sendCheck == nil { lastDataSent = .now() }  // turning writable, bytes left: progress too
        if !writable && sendCheck == nil { scheduleSendCheck(context, at: lastDataSent + sendTimeout) }
        context.fireChannelWritabilityChanged()
    }

    private func scheduleSendCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        sendCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (codec, context) = bound.value
            codec.sendCheck = nil
            guard !codec.writable, context.channel.isActive else { return }
            let due = codec.lastDataSent + codec.sendTimeout
            guard due <= .now() else { return codec.scheduleSendCheck(context, at: due) }
            codec.logger.info(
                "client stopped reading the response; stream reset",
                metadata: ["seconds": "\(Double(codec.sendTimeout.nanoseconds) / 1e9)"])
            context.close(promise: nil)
        }
    }

    // MARK: requests

    /// The request head of an HTTP/2 request header block: pseudo-headers become
    /// method, target and `host` (`:authority` replaces any `host` field, RFC 9113
    /// 8.3.1); `cookie` crumbs are joined. Methods that may carry
    /// a body and name no length get `transfer-encoding: chunked` (or
    /// `content-length: 0` when the stream already ended), as HTTP/1.1 would frame
    /// them. The block is checked in the same pass (RFC 9113 8.2 and 8.3, the rules
    /// NIOHTTP2's header block validation applied, which is off for this reason):
    /// a malformed request resets its stream.
    static func requestHead(_ block: HPACKHeaders, endStream: Bool) throws(HTTP2StreamError) -> HTTPRequestHead {
        var method: String?
        var path: String?
        var scheme: String?
        var authority: String?
        var extendedProtocol: String?
        var fields: [(String, String)] = []
        fields.reserveCapacity(block.count + 1)
        var cookie: String?
        var cookieIndex = -1
        var hosts = 0
        var hasContentLength = false
        var regularSeen = false
        for (name, value, _) in block {
            if name.utf8.first == UInt8(ascii: ":") {
                guard !regularSeen else { throw .malformed("pseudo-header \(name) after a regular field") }
                guard isPseudoHeaderValue(value) else { throw .malformed("invalid \(name) value") }
                switch name {
                case ":method": try set(&method, to: value, name)
                case ":path": try set(&path, to: value, name)
                case ":scheme": try set(&scheme, to: value, name)
                case ":authority": try set(&authority, to: value, name)
                case ":protocol": try set(&extendedProtocol, to: value, name)
                default: throw .malformed("pseudo-header \(name) in a request")
                }
                continue
            }
            try checkRegularField(name, value)
            regularSeen = true
            switch name {
            case "cookie":
                if let crumbs = cookie {
                    cookie = crumbs + "; " + value
                } else {
                    cookie = value
                    cookieIndex = fields.count
                    fields.append((name, value))
                }
                continue
            case "host":
                // RFC 9113 8.3.1: a Host made for HTTP/1.1 takes :authority's value, replacing any
                // Host sent with it, so the gateway and the backend cannot act for different sites.
                // (Pseudo-headers come first: `authority` is known by now.)
                if authority != nil { continue }
                hosts += 1
            case "content-length": hasContentLength = true
            case protocolHeader: continue
            default: break
            }
            fields.append((name, value))
        }
        guard let method else { throw .malformed("no :method") }
        if method == "CONNECT" && extendedProtocol == nil {
            // Plain CONNECT (RFC 9113 8.5) would open a TCP tunnel; Apus does not.
            throw .malformed("CONNECT without :protocol")
        }
        if extendedProtocol != nil && method != "CONNECT" { throw .malformed(":protocol on \(method)") }
        guard let path, !path.isEmpty else { throw .malformed("no :path") }
        guard scheme != nil else { throw .malformed("no :scheme") }
        if let cookie { fields[cookieIndex].1 = cookie }
        if let authority {
            fields.insert(("host", authority), at: 0)
        } else if hosts != 1 {
            throw .malformed(hosts == 0 ? "neither :authority nor host" : "more than one host")
        }
        if let extendedProtocol { fields.append((protocolHeader, extendedProtocol)) }
        let httpMethod = HTTPMethod(rawValue: method)
        switch httpMethod {
        case .GET, .HEAD, .DELETE, .CONNECT, .TRACE:
            break  // no body expected; a Content-Length the client sent stays
        default:
            if !hasContentLength {
                fields.append(endStream ? ("content-length", "0") : ("transfer-encoding", "chunked"))
            }
        }
        return HTTPRequestHead(
            version: .init(major: 2, minor: 0), method: httpMethod, uri: path, headers: HTTPHeaders(fields))
    }

    /// A request's trailers: regular fields only.
    static func trailers(_ block: HPACKHeaders) throws(HTTP2StreamError) -> HTTPHeaders {
        var fields: [(String, String)] = []
        fields.reserveCapacity(block.count)
        for (name, value, _) in block {
            guard name.utf8.first != UInt8(ascii: ":") else { throw .malformed("pseudo-header \(name) in trailers") }
            try checkRegularField(name, value)
            fields.append((name, value))
        }
        return HTTPHeaders(fields)
    }

    private static func set(_ slot: inout String?, to value: String, _ name: String) throws(HTTP2StreamError) {
        guard slot == nil else { throw .malformed("two \(name) pseudo-headers") }
        slot = value
    }

    /// RFC 9113 8.2: lowercase token names, no NUL, CR or LF in values, no
    /// connection-specific fields, `te` only as "trailers".
    private static func checkRegularField(_ name: String, _ value: String) throws(HTTP2StreamError) {
        guard !name.isEmpty, name.utf8.allSatisfy(isLowercaseTokenByte) else {
            throw .malformed("invalid field name")
        }
        guard !value.utf8.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) else {
            throw .malformed("invalid \(name) value")
        }
        if isConnectionSpecific(name) { throw .malformed("connection-specific field \(name)") }
        if name == "te" && value != "trailers" { throw .malformed("te other than trailers") }
    }

    /// RFC 9113 8.2.2: the HTTP/1 fields that have no place in HTTP/2, refused in
    /// requests and left out of responses. `name` is lowercase.
    static func isConnectionSpecific(_ name: String) -> Bool {
        switch name.utf8.count {
        case 7: name == "upgrade"
        case 10: name == "connection" || name == "keep-alive"
        case 16: name == "proxy-connection"
        case 17: name == "transfer-encoding"
        default: false
        }
    }

    private static func isLowercaseTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x21, 0x23...0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x30...0x39, 0x5E...0x7A, 0x7C, 0x7E: true
        default: false
        }
    }

    private static func isPseudoHeaderValue(_ value: String) -> Bool {
        !value.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F })
    }

    // MARK: responses

    /// HTTP/1 response fields as HTTP/2 ones: names lowercased (only when they are
    /// not already), connection-specific fields (RFC 9113 8.2.2) left out, each
    /// with its HPACK indexing. The fields a `Connection` header names never get
    /// here: `makeDownstreamHead` strips them from backend responses, and a native
    /// handler's `Connection` header is the gateway's to write, so it is dropped.
    static func appendResponseFields(_ headers: HTTPHeaders, to block: inout HPACKHeaders) {
        for (name, value) in headers {
            let lowercased = name.utf8.contains(where: { $0 &- UInt8(ascii: "A") < 26 }) ? name.lowercased() : name
            if isConnectionSpecific(lowercased) { continue }
            block.add(name: lowercased, value: value, indexing: indexing(of: lowercased))
        }
    }

    /// How a response field is sent. Only names whose values repeat from
    /// response to response on a connection are indexed: a value that changes
    /// every time (`x-request-id`, `content-length`) would only push the useful
    /// entries out of the table. `date` changes once a second, so on a busy
    /// connection it repeats: indexed, it is a one-byte reference instead of 29
    /// Huffman-coded bytes (NIOHPACK codes every literal; about 4,000
    /// instructions), for one table entry a second. (Matched by length first:
    /// most names then need no comparison at all.)
    static func indexing(of name: String) -> HPACKIndexing {
        switch name.utf8.count {
        case 4: if name == "vary" || name == "date" { return .indexable }
        case 6: if name == "server" { return .indexable }
        case 10: if name == "set-cookie" { return .neverIndexed }  // RFC 7541 7.1.3
        case 12: if name == "content-type" { return .indexable }
        case 13: if name == "cache-control" { return .indexable }
        case 15: if name == "x-frame-options" || name == "referrer-policy" { return .indexable }
        case 16: if name == "content-encoding" || name == "content-language" { return .indexable }
        case 22: if name == "x-content-type-options" { return .indexable }
        case 25: if name == "strict-transport-security" { return .indexable }
        case 27: if name == "access-control-allow-origin" { return .indexable }
        case 32: if name == "access-control-allow-credentials" { return .indexable }
        default: break
        }
        return .nonIndexable
    }
}

/// Why an HTTP/2 request header block could not become a request.
enum HTTP2StreamError: Error, CustomStringConvertible {
    /// The block breaks RFC 9113's rules; the reason names the rule.
    case malformed(String)

    var description: String {
        switch self {
        case .malformed(let reason): "malformed HTTP/2 request: \(reason)"
        }
    }
}
