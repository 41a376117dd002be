// Answers with a response shaped by `?kind=`: headers and statuses a handler
// must not be able to send as they are, so tests can check what the gateway makes of them.
let handler = Handler.inline { request in
    switch request.queryParameter("kind") {
    case "crlf":
        return Response(headers: Headers([("x-evil", "a\r\nx-injected: 1")]), body: Array("smuggled".utf8))
    case "name":
        return Response(headers: Headers([("bad name", "v")]), body: Array("bad".utf8))
    case "status":
        return Response(status: 99, body: Array("too low".utf8))
    case "framing":
        return Response(
            headers: Headers([
                ("Content-Length", "999"), ("Connection", "close"), ("Transfer-Encoding", "chunked"), ("Date", "yesterday"),
                ("Keep-Alive", "timeout=1"), ("X-Custom", "kept"),
            ]),
            body: Array("framed by the gateway".utf8))
    case "nocontent":
        return Response(status: 204, body: Array("ignored".utf8))
    default:
        return .text("plain")
    }
}
