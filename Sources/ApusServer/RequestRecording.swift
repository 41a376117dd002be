import NIOCore
import NIOHTTP1

extension GatewayShared {
    /// Records one finished request in the metrics and the access log; the same
    /// for every path a request can take (native from the front handler, native or
    /// proxied through the gateway handler, an upgrade).
    func recordRequest(
        loop: LoopState, client: String, method: String, target: String, version: HTTPVersion, status: Int, kind: String,
        route: String, requestID: String, traceID: String, started: NIODeadline, upstreamSeconds: Double?, bytesIn: Int,
        bytesOut: Int
    ) {
        let elapsed = NIODeadline.now() - started
        loop.metrics.record(
            route: route, method: method, status: status, kind: kind, nanoseconds: elapsed.nanoseconds,
            upstreamNanoseconds: upstreamSeconds.map { Int64($0 * 1e9) }, bytesIn: bytesIn, bytesOut: bytesOut)
        guard accessLog.isEnabled else { return }
        accessLog.write(
            .init(
                client: client, method: method, path: target, version: "HTTP/\(version.major).\(version.minor)", status: status,
                bytesOut: bytesOut, seconds: Double(elapsed.nanoseconds) / 1e9, upstreamSeconds: upstreamSeconds, kind: kind,
                requestID: requestID, traceID: traceID))
    }
}
