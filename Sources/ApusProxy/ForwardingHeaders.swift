import NIOCore
import NIOHTTP1

/// Header rules shared by requests and responses crossing the proxy.
public enum HopByHop {
    /// Whether `name` is a hop-by-hop field (RFC 9110 7.6.1) or a legacy one proxies still see.
    /// Decided by length first, so most names cost one comparison of their length.
    static func isHopByHop(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: return equalsIgnoringCase(name, "te")
        case 7: return equalsIgnoringCase(name, "upgrade") || equalsIgnoringCase(name, "trailer")
        case 10: return equalsIgnoringCase(name, "connection") || equalsIgnoringCase(name, "keep-alive")
        case 16: return equalsIgnoringCase(name, "proxy-connection")
        case 17: return equalsIgnoringCase(name, "transfer-encoding")
        case 18: return equalsIgnoringCase(name, "proxy-authenticate")
        case 19: return equalsIgnoringCase(name, "proxy-authorization")
        default: return false
        }
    }

    /// The field names a message's `Connection` headers list (they are hop-by-hop too).
    static func connectionNamed(_ headers: HTTPHeaders) -> [Substring] {
        var named: [Substring] = []
        for (name, value) in headers where equalsIgnoringCase(name, "connection") {
            for var token in value.split(separator: ",") {
                while let first = token.first, first == " " || first == "\t" { token.removeFirst() }
                while let last = token.last, last == " " || last == "\t" { token.removeLast() }
                if !token.isEmpty { named.append(token) }
            }
        }
        return named
    }

    /// Removes hop-by-hop fields and every field named in `Connection`.
    public static func strip(_ headers: inout HTTPHeaders) {
        guard headers.contains(where: { isHopByHop($0.name) }) else { return }
        let named = connectionNamed(headers)
        headers = HTTPHeaders(headers.filter { field in
            !isHopByHop(field.name) && !named.contains { equalsIgnoringCase(field.name, $0) }
        })
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

    public init(peerAddress: String, peerIsTrusted: Bool, scheme: String) {
        self.peerAddress = peerAddress
        self.peerIsTrusted = peerIsTrusted
        self.scheme = scheme
    }
}

/// Builds the request head sent to the backend: hop-by-hop fields removed,
/// framing made explicit, `X-Forwarded-For/-Proto/-Host` and `X-Request-ID` set.
/// Client-supplied `X-Forwarded-*` survive only from trusted peers; from anyone
/// else they are replaced, so a client cannot forge its address.
public func makeUpstreamHead(_ head: HTTPRequestHead, requestID: String, client: ClientFacts) -> HTTPRequestHead {
    // One pass over the client's fields, deciding each by name; the gateway's own follow.
    let named = HopByHop.connectionNamed(head.headers)
    let chunked = head.headers.contains { field in
        equalsIgnoringCase(field.name, "transfer-encoding")
            && field.value.split(separator: ",").contains { equalsIgnoringCase("chunked", $0.filter { $0 != " " && $0 != "\t" }) }
    }
    var headers = HTTPHeaders()
    headers.reserveCapacity(head.headers.count + 4)
    var priorFor: [String] = []
    var host: String?
    var keptProto = false
    var keptHost = false
    for (name, value) in head.headers {
        if HopByHop.isHopByHop(name) || named.contains(where: { equalsIgnoringCase(name, $0) }) { continue }
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
        headers.add(name: name, value: value)
    }
    if chunked { headers.add(name: "transfer-encoding", value: "chunked") }
    let prior = priorFor.joined(separator: ", ")
    if client.peerIsTrusted && !prior.isEmpty {
        headers.add(name: "x-forwarded-for", value: client.peerAddress.isEmpty ? prior : "\(prior), \(client.peerAddress)")
    } else if !client.peerAddress.isEmpty {
        headers.add(name: "x-forwarded-for", value: client.peerAddress)
    }
    if !keptProto { headers.add(name: "x-forwarded-proto", value: client.scheme) }
    if !keptHost, let host { headers.add(name: "x-forwarded-host", value: host) }
    headers.add(name: "x-request-id", value: requestID)
    return HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: headers)
}

/// Prepares a backend response head for the client: hop-by-hop fields removed
/// (the client connection's own framing is the encoder's job) and the request id added.
public func makeDownstreamHead(
    _ head: HTTPResponseHead, version: HTTPVersion, requestID: String, keepAlive: Bool
) -> HTTPResponseHead {
    var headers = head.headers
    HopByHop.strip(&headers)
    headers.replaceOrAdd(name: "x-request-id", value: requestID)
    if !keepAlive { headers.add(name: "connection", value: "close") }
    return HTTPResponseHead(version: version, status: head.status, headers: headers)
}
