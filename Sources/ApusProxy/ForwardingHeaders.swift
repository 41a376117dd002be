import NIOCore
import NIOHTTP1

/// Header rules shared by requests and responses crossing the proxy.
public enum HopByHop {
    /// Hop-by-hop fields (RFC 9110 7.6.1), plus the legacy ones proxies still see.
    static let fields: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
        "proxy-authenticate", "proxy-authorization",
    ]

    /// Removes hop-by-hop fields and every field named in `Connection`.
    public static func strip(_ headers: inout HTTPHeaders) {
        var named: [String] = []
        for value in headers[canonicalForm: "connection"] {
            named.append(value.lowercased())
        }
        if named.isEmpty && !headers.contains(where: { fields.contains($0.name.lowercased()) }) { return }
        headers = HTTPHeaders(headers.filter { field in
            let name = field.name.lowercased()
            return !fields.contains(name) && !named.contains(name)
        })
    }
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
    var headers = head.headers
    let chunked = headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
    HopByHop.strip(&headers)
    headers.remove(name: "expect")  // the gateway answers 100-continue itself
    if chunked {
        headers.remove(name: "content-length")
        headers.add(name: "transfer-encoding", value: "chunked")
    }

    let priorFor = headers["x-forwarded-for"].joined(separator: ", ")
    headers.remove(name: "x-forwarded-for")
    if client.peerIsTrusted && !priorFor.isEmpty {
        headers.add(name: "x-forwarded-for", value: client.peerAddress.isEmpty ? priorFor : "\(priorFor), \(client.peerAddress)")
    } else if !client.peerAddress.isEmpty {
        headers.add(name: "x-forwarded-for", value: client.peerAddress)
    }
    if !(client.peerIsTrusted && headers.contains(name: "x-forwarded-proto")) {
        headers.replaceOrAdd(name: "x-forwarded-proto", value: client.scheme)
    }
    if !(client.peerIsTrusted && headers.contains(name: "x-forwarded-host")) {
        if let host = headers.first(name: "host") {
            headers.replaceOrAdd(name: "x-forwarded-host", value: host)
        } else {
            headers.remove(name: "x-forwarded-host")
        }
    }
    headers.replaceOrAdd(name: "x-request-id", value: requestID)
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
