import NIOCore
import NIOHTTP1

/// Hop-by-hop rules shared by requests and responses crossing the proxy.
public enum HopByHop {
    /// Whether `name` is a hop-by-hop field (RFC 9110 7.6.1) or a legacy one proxies still see.
    static func isHopByHop(_ name: String) -> Bool {
        withBytes(name) { isHopByHop($0, 0..<$0.count) }
    }

    /// Whether a field stops at this hop: hop-by-hop, or among the names the
    /// message's `Connection` headers list (`named`, from `connectionNamed`).
    static func stopsHere(_ name: String, named: [Substring]) -> Bool {
        isHopByHop(name) || named.contains { equalsIgnoringCase(name, $0) }
    }

    /// `isHopByHop` for a name in received bytes (the one list of names).
    /// Decided by length first, so most names cost one comparison of their length.
    static func isHopByHop(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>) -> Bool {
        switch name.count {
        case 2: return HTTPSyntax.equalsLowercase(bytes, name, "te")
        case 7: return HTTPSyntax.equalsLowercase(bytes, name, "upgrade") || HTTPSyntax.equalsLowercase(bytes, name, "trailer")
        case 10: return HTTPSyntax.equalsLowercase(bytes, name, "connection") || HTTPSyntax.equalsLowercase(bytes, name, "keep-alive")
        case 16: return HTTPSyntax.equalsLowercase(bytes, name, "proxy-connection")
        case 17: return HTTPSyntax.equalsLowercase(bytes, name, "transfer-encoding")
        case 18: return HTTPSyntax.equalsLowercase(bytes, name, "proxy-authenticate")
        case 19: return HTTPSyntax.equalsLowercase(bytes, name, "proxy-authorization")
        default: return false
        }
    }

    /// `stopsHere` for a name in received bytes; `named` from `connectionNamed(_:_:)`.
    static func stopsHere(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>, named: [Range<Int>]) -> Bool {
        isHopByHop(bytes, name) || named.contains { HTTPSyntax.equalsIgnoringCase(bytes, name, $0) }
    }

    /// `connectionNamed` for fields in received bytes: the names, as ranges of `bytes`.
    static func connectionNamed(_ bytes: UnsafeRawBufferPointer, _ fields: [HTTPSyntax.Field]) -> [Range<Int>] {
        var named: [Range<Int>] = []
        for field in fields where HTTPSyntax.equalsLowercase(bytes, field.name, "connection") {
            named += HTTPSyntax.tokens(bytes, field.value)
        }
        return named
    }

    /// The field names a message's `Connection` headers list (they are hop-by-hop too),
    /// split as `HTTPSyntax.tokens` splits them.
    static func connectionNamed(_ headers: HTTPHeaders) -> [Substring] {
        var named: [Substring] = []
        for (name, value) in headers where equalsIgnoringCase(name, "connection") {
            let utf8 = value.utf8
            for token in withBytes(value, { HTTPSyntax.tokens($0, 0..<$0.count) }) {
                named.append(Substring(utf8[utf8.index(utf8.startIndex, offsetBy: token.lowerBound)..<utf8.index(utf8.startIndex, offsetBy: token.upperBound)]))
            }
        }
        return named
    }

    /// `text`'s UTF-8 bytes, without copying a native string.
    private static func withBytes<Result>(_ text: String, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        if let result = text.utf8.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) { return result }
        var text = text
        return text.withUTF8 { body(UnsafeRawBufferPointer($0)) }
    }
}

/// ASCII case-insensitive equality of a header name with another name.
@inline(__always)
func equalsIgnoringCase(_ name: String, _ other: some StringProtocol) -> Bool {
    let a = name.utf8, b = other.utf8
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x != y {
        guard x | 0x20 == y | 0x20, (x | 0x20) >= 0x61, (x | 0x20) <= 0x7A else { return false }
    }
    return true
}

/// The client-side facts the forwarding headers are built from.
public struct ClientFacts: Sendable {
    /// The peer's address as text (`127.0.0.1`), empty when unknown (Unix socket clients).
    public var peerAddress: String
    /// Whether the peer is a configured trusted proxy, whose `X-Forwarded-*` are kept.
    public var peerIsTrusted: Bool
    /// `http` or `https`, as the request arrived here.
    public var scheme: String
    /// The gateway's own address as the client reached it: the `Host` of a request
    /// that names none (HTTP/1.0 allows that; the backend gets HTTP/1.1, which
    /// requires it). Kept as the address and made text only for such a request.
    public var localAddress: SocketAddress?

    public init(peerAddress: String, peerIsTrusted: Bool, scheme: String, localAddress: SocketAddress? = nil) {
        self.peerAddress = peerAddress
        self.peerIsTrusted = peerIsTrusted
        self.scheme = scheme
        self.localAddress = localAddress
    }

    /// `localAddress` as a `Host` value (`10.0.0.5:8080`, `[::1]:8080`), `nil` when unknown.
    var localAuthority: String? {
        guard let localAddress, let ip = localAddress.ipAddress else { return nil }
        let host = ip.contains(":") ? "[\(ip)]" : ip
        return localAddress.port.map { "\(host):\($0)" } ?? host
    }
}

/// Builds the request head sent to the backend: hop-by-hop fields removed,
/// framing made explicit, `X-Forwarded-For/-Proto/-Host` and `X-Request-ID` set.
/// Client-supplied `X-Forwarded-*` survive only from trusted peers; from anyone
/// else they are replaced, so a client cannot forge its address. The target is
/// expected in origin form (the gateway rewrites absolute form first:
/// `HTTPRequestHead.useOriginForm`).
public func makeUpstreamHead(_ head: HTTPRequestHead, requestID: String, client: ClientFacts) -> HTTPRequestHead {
    // One pass over the client's fields, deciding each by name; the gateway's own follow.
    let named = HopByHop.connectionNamed(head.headers)
    let chunked = head.headers.contains { field in
        equalsIgnoringCase(field.name, "transfer-encoding")
            && field.value.split(separator: ",").contains { equalsIgnoringCase("chunked", $0.filter { $0 != " " && $0 != "\t" }) }
    }
    // Collected as pairs and made `HTTPHeaders` once: `HTTPHeaders.add` re-checks every
    // name (ASCII, `connection`), and these names were checked where they entered.
    var headers: [(String, String)] = []
    headers.reserveCapacity(head.headers.count + 5)
    var priorFor: [String] = []
    var host: String?
    var keptProto = false
    var keptHost = false
    for (name, value) in head.headers {
        if HopByHop.stopsHere(name, named: named) { continue }
        switch name.utf8.count {
        case 4 where equalsIgnoringCase(name, "host"):
            host = host ?? value
        case 6 where equalsIgnoringCase(name, "expect"):
            continue  // the gateway answers 100-continue itself
        case 14 where chunked && equalsIgnoringCase(name, "content-length"):
            continue
        case 15 where equalsIgnoringCase(name, "x-forwarded-for"):
            priorFor.append(value)
            continue
        case 17 where equalsIgnoringCase(name, "x-forwarded-proto"):
            guard client.peerIsTrusted else { continue }
            keptProto = true
        case 16 where equalsIgnoringCase(name, "x-forwarded-host"):
            guard client.peerIsTrusted else { continue }
            keptHost = true
        case 12 where equalsIgnoringCase(name, "x-request-id"):
            continue
        default:
            break
        }
        headers.append((name, value))
    }
    if host == nil, let authority = client.localAuthority {
        // No Host (an HTTP/1.0 request, say a load balancer's health check): HTTP/1.1
        // requires one, and servers such as uvicorn answer 400 without it. The
        // gateway's own address stands in (nginx's `$host` falls back to its server name).
        headers.insert(("host", authority), at: 0)
    }
    if chunked { headers.append(("transfer-encoding", "chunked")) }
    let prior = priorFor.joined(separator: ", ")
    if client.peerIsTrusted && !prior.isEmpty {
        headers.append(("x-forwarded-for", client.peerAddress.isEmpty ? prior : "\(prior), \(client.peerAddress)"))
    } else if !client.peerAddress.isEmpty {
        headers.append(("x-forwarded-for", client.peerAddress))
    }
    if !keptProto { headers.append(("x-forwarded-proto", client.scheme)) }
    if !keptHost, let host { headers.append(("x-forwarded-host", host)) }
    headers.append(("x-request-id", requestID))
    return HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: HTTPHeaders(headers))
}

extension HTTPRequestHead {
    /// Puts the target in origin form (`/path?query`), once, in the gateway before
    /// routing, so native routes, their handlers and the backend all see one form:
    /// - absolute form (`http://host:8080/p?q`, the scheme in any case) becomes
    ///   `/p?q` (`/` when the path is empty) with `Host` set to its authority. RFC
    ///   9112 3.2.2 has the server ignore the request's own `Host` then, as nginx
    ///   does; application servers route on the path and would not find the
    ///   absolute form;
    /// - a fragment (`#…`) is dropped: origin form has none, clients do not send one
    ///   (RFC 9110 4.2.5), and NIO's decoder lets it through, where it would end up
    ///   in a route's last parameter or the query.
    ///
    /// `*` and targets that are not http(s) URIs stay as they are. Returns whether
    /// the head changed.
    @discardableResult
    public mutating func useOriginForm() -> Bool {
        var changed = false
        if let hash = uri.utf8.firstIndex(of: UInt8(ascii: "#")) {
            uri = String(uri[..<hash])
            changed = true
        }
        let utf8 = uri.utf8
        guard utf8.first != UInt8(ascii: "/"), let colon = utf8.firstIndex(of: UInt8(ascii: ":")),
            equalsIgnoringCase(String(uri[..<colon]), "http") || equalsIgnoringCase(String(uri[..<colon]), "https"),
            uri[colon...].hasPrefix("://")
        else { return changed }
        let afterScheme = uri[uri.index(colon, offsetBy: 3)...]
        let pathStart = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? afterScheme.endIndex
        let rest = afterScheme[pathStart...]
        let authority = afterScheme[..<pathStart]
        // Userinfo (`user@host`) is not sent on (RFC 9110 4.2.4 deprecates it in http URIs).
        let host = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
        if !host.isEmpty { headers.replaceOrAdd(name: "host", value: String(host)) }
        uri = rest.first == "/" ? String(rest) : "/" + rest
        return true
    }
}

/// Prepares a backend response head for the client: hop-by-hop fields removed
/// (the client connection's own framing is the encoder's job) and the request id
/// set, in one pass over the backend's fields.
public func makeDownstreamHead(
    _ head: HTTPResponseHead, version: HTTPVersion, requestID: String, keepAlive: Bool
) -> HTTPResponseHead {
    let named = HopByHop.connectionNamed(head.headers)
    var headers: [(String, String)] = []
    headers.reserveCapacity(head.headers.count + 2)
    for (name, value) in head.headers {
        if HopByHop.stopsHere(name, named: named) { continue }
        if name.utf8.count == 12 && equalsIgnoringCase(name, "x-request-id") { continue }
        headers.append((name, value))
    }
    headers.append(("x-request-id", requestID))
    if let field = connectionField(version: version, keepAlive: keepAlive) { headers.append(field) }
    return HTTPResponseHead(version: version, status: head.status, headers: HTTPHeaders(headers))
}

/// The `Connection` field an HTTP/1 response needs: `close` when the connection
/// ends after it; `keep-alive` when an HTTP/1.0 client asked to keep it (HTTP/1.0
/// connections close by default, so such a client waits for the close unless told,
/// as ApacheBench's `-k` does); none otherwise.
public func connectionField(version: HTTPVersion, keepAlive: Bool) -> (String, String)? {
    guard version.major == 1 else { return nil }
    if !keepAlive { return ("connection", "close") }
    return version.minor == 0 ? ("connection", "keep-alive") : nil
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is well formed.
public func traceIDIfValid(_ value: String) -> String? {
    let parts = value.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count >= 4, parts[0].count == 2, parts[0] != "ff", parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
        parts.allSatisfy({ $0.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } }),
        parts[1] != String(repeating: "0", count: 32), parts[2] != String(repeating: "0", count: 16)
    else { return nil }
    return String(parts[1])
}
