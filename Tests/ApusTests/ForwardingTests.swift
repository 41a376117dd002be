import ApusProxy
import NIOCore
import NIOHTTP1
import Testing

@Suite("Forwarding headers")
struct ForwardingTests {
    func head(_ headers: [(String, String)]) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .POST, uri: "/x?y", headers: HTTPHeaders(headers))
    }

    @Test func hopByHopAndConnectionNamedFieldsAreRemoved() {
        let upstream = makeUpstreamHead(
            head([("Host", "h"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"),
                ("TE", "trailers"), ("Upgrade", "h2c"), ("Proxy-Connection", "x"), ("X-Public", "2"), ("Expect", "100-continue")]),
            requestID: "r1", client: ClientFacts(peerAddress: "10.0.0.1", peerIsTrusted: false, scheme: "http"))
        let names = Set(upstream.headers.map { $0.name.lowercased() })
        #expect(names.isDisjoint(with: ["connection", "x-private", "keep-alive", "te", "upgrade", "proxy-connection", "expect"]))
        #expect(upstream.headers["x-public"] == ["2"])
        #expect(upstream.uri == "/x?y")
        #expect(upstream.version == .http1_1)
    }

    @Test func untrustedPeersCannotForgeForwardedHeaders() {
        let upstream = makeUpstreamHead(
            head([("Host", "api.example"), ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil")]),
            requestID: "r1", client: ClientFacts(peerAddress: "10.0.0.1", peerIsTrusted: false, scheme: "http"))
        #expect(upstream.headers["x-forwarded-for"] == ["10.0.0.1"])
        #expect(upstream.headers["x-forwarded-proto"] == ["http"])
        #expect(upstream.headers["x-forwarded-host"] == ["api.example"])
        #expect(upstream.headers["x-request-id"] == ["r1"])
    }

    @Test func trustedPeersAreAppendedTo() {
        let upstream = makeUpstreamHead(
            head([("Host", "h"), ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8"), ("X-Forwarded-Proto", "https")]),
            requestID: "r1", client: ClientFacts(peerAddress: "10.0.0.1", peerIsTrusted: true, scheme: "http"))
        #expect(upstream.headers["x-forwarded-for"] == ["1.2.3.4, 5.6.7.8, 10.0.0.1"])
        #expect(upstream.headers["x-forwarded-proto"] == ["https"])
    }

    @Test func chunkedRequestsStayChunkedAndLengthIsKept() {
        let chunked = makeUpstreamHead(
            head([("Transfer-Encoding", "chunked"), ("Content-Length", "5")]), requestID: "r",
            client: ClientFacts(peerAddress: "", peerIsTrusted: false, scheme: "http"))
        #expect(chunked.headers["transfer-encoding"] == ["chunked"])
        #expect(chunked.headers["content-length"].isEmpty)
        let sized = makeUpstreamHead(
            head([("Content-Length", "5")]), requestID: "r", client: ClientFacts(peerAddress: "", peerIsTrusted: false, scheme: "http"))
        #expect(sized.headers["content-length"] == ["5"])
    }

    @Test func absoluteFormTargetsAreSentInOriginFormWithTheirHost() {
        let facts = ClientFacts(peerAddress: "10.0.0.1", peerIsTrusted: false, scheme: "http")
        func upstream(_ uri: String) -> HTTPRequestHead {
            var head = HTTPRequestHead(
                version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders([("Host", "client.example"), ("Accept", "*/*")]))
            head.useOriginForm()  // what the gateway does before routing
            return makeUpstreamHead(head, requestID: "r", client: facts)
        }
        let absolute = upstream("http://api.example:8080/orders/7?full=1")
        #expect(absolute.uri == "/orders/7?full=1")
        #expect(absolute.headers["host"] == ["api.example:8080"])
        #expect(absolute.headers["x-forwarded-host"] == ["api.example:8080"])
        #expect(absolute.headers["accept"] == ["*/*"])
        #expect(upstream("HTTPS://user@api.example").uri == "/")
        #expect(upstream("HTTPS://user@api.example").headers["host"] == ["api.example"])
        #expect(upstream("http://api.example?q=1").uri == "/?q=1")
        // A fragment never reaches the backend, in either form.
        #expect(upstream("/orders/7?full=1#top").uri == "/orders/7?full=1")
        #expect(upstream("http://api.example/p#f?x").uri == "/p")
        // Origin form, `*` and anything that is not an http(s) URI pass unchanged, with the client's Host.
        for target in ["/orders/7?next=http://x/", "*", "ftp://files.example/a", "api.example:443"] {
            let kept = upstream(target)
            #expect(kept.uri == target)
            #expect(kept.headers["host"] == ["client.example"])
        }
    }

    @Test func aRequestWithoutHostGetsTheGatewaysAddress() throws {
        let facts = ClientFacts(
            peerAddress: "10.0.0.1", peerIsTrusted: false, scheme: "http", localAddress: try SocketAddress(ipAddress: "10.0.0.5", port: 8080))
        let hostless = makeUpstreamHead(
            HTTPRequestHead(version: .http1_0, method: .GET, uri: "/health", headers: HTTPHeaders([("Accept", "*/*")])),
            requestID: "r", client: facts)
        #expect(hostless.version == .http1_1)
        #expect(hostless.headers["host"] == ["10.0.0.5:8080"])
        #expect(hostless.headers["x-forwarded-host"].isEmpty)  // the client named no host
        let named = makeUpstreamHead(
            HTTPRequestHead(version: .http1_0, method: .GET, uri: "/health", headers: HTTPHeaders([("host", "api.example")])),
            requestID: "r", client: facts)
        #expect(named.headers["host"] == ["api.example"])
        let overIPv6 = ClientFacts(peerAddress: "::1", peerIsTrusted: false, scheme: "http", localAddress: try SocketAddress(ipAddress: "::1", port: 8080))
        let bracketed = makeUpstreamHead(
            HTTPRequestHead(version: .http1_0, method: .GET, uri: "/health", headers: HTTPHeaders()), requestID: "r", client: overIPv6)
        #expect(bracketed.headers["host"] == ["[::1]:8080"])
    }

    @Test func responseHeadsLoseHopByHopAndGainTheRequestID() {
        let response = HTTPResponseHead(
            version: .http1_1, status: .ok,
            headers: HTTPHeaders([("Connection", "close, X-Internal"), ("X-Internal", "1"), ("Transfer-Encoding", "chunked"), ("Content-Type", "a/b")]))
        let out = makeDownstreamHead(response, version: .http1_1, requestID: "rid", keepAlive: true)
        #expect(out.headers["x-internal"].isEmpty && out.headers["transfer-encoding"].isEmpty && out.headers["connection"].isEmpty)
        #expect(out.headers["x-request-id"] == ["rid"])
        #expect(out.headers["content-type"] == ["a/b"])
        // `Connection` is this hop's: close when the connection ends, keep-alive for an HTTP/1.0 client kept.
        #expect(makeDownstreamHead(response, version: .http1_1, requestID: "r", keepAlive: false).headers["connection"] == ["close"])
        #expect(makeDownstreamHead(response, version: .http1_0, requestID: "r", keepAlive: true).headers["connection"] == ["keep-alive"])
        #expect(makeDownstreamHead(response, version: .http1_0, requestID: "r", keepAlive: false).headers["connection"] == ["close"])
    }
}
