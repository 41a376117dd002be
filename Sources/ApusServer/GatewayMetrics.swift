import CoreMetrics
import NIOCore

/// Request metrics through swift-metrics (the executable bootstraps the
/// Prometheus backend). Metric objects are looked up once per label set and
/// cached per event loop, so recording a request is a dictionary hit and two
/// atomic adds, with no lock.
///
/// - `apus_requests_total{route,method,status,kind}`: requests answered; `status` is the class (2xx…), `kind` native or proxy.
/// - `apus_request_duration_seconds{route,kind}`: histogram of total time; native and proxied side by side.
/// - `apus_upstream_duration_seconds{route}`: histogram of time to the backend's response head.
/// - `apus_received_bytes_total{kind}`, `apus_sent_bytes_total{kind}`: body bytes in and out.
/// - `apus_inflight_requests`: requests being served now.
final class RequestMetrics {
    private struct CounterKey: Hashable {
        let route: String
        let method: String
        let statusClass: Int
        let kind: String
    }
    private struct TimerKey: Hashable {
        let route: String
        let kind: String
    }

    private var counters: [CounterKey: Counter] = [:]
    private var timers: [TimerKey: Timer] = [:]
    private var upstreamTimers: [String: Timer] = [:]
    private var received: [String: Counter] = [:]
    private var sent: [String: Counter] = [:]
    /// The last label sets used: a run of requests to one route skips hashing
    /// (comparing strings that share storage is a pointer compare).
    private var lastCounter: (key: CounterKey, metric: Counter)?
    private var lastTimer: (key: TimerKey, metric: Timer)?

    /// Requests being served now, across loops.
    static let inFlight = Meter(label: "apus_inflight_requests")

    /// Methods outside the standard set share one label, so a client cannot blow up the series count.
    private static func methodLabel(_ method: String) -> String {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE": return method
        default: return "OTHER"
        }
    }

    /// Records one finished request.
    func record(
        route: String, method: String, status: Int, kind: String, nanoseconds: Int64, upstreamNanoseconds: Int64?,
        bytesIn: Int, bytesOut: Int
    ) {
        let methodLabel = Self.methodLabel(method)
        let counterKey = CounterKey(route: route, method: methodLabel, statusClass: status / 100, kind: kind)
        Self.cached(counterKey, last: &lastCounter, in: &counters) {
            Counter(
                label: "apus_requests_total",
                dimensions: [("route", route), ("method", methodLabel), ("status", "\(status / 100)xx"), ("kind", kind)])
        }.increment()
        Self.cached(TimerKey(route: route, kind: kind), last: &lastTimer, in: &timers) {
            Timer(label: "apus_request_duration_seconds", dimensions: [("route", route), ("kind", kind)])
        }.recordNanoseconds(nanoseconds)
        if let upstreamNanoseconds {
            let upstream =
                upstreamTimers[route]
                ?? {
                    let made = Timer(label: "apus_upstream_duration_seconds", dimensions: [("route", route)])
                    upstreamTimers[route] = made
                    return made
                }()
            upstream.recordNanoseconds(upstreamNanoseconds)
        }
        if bytesIn > 0 { bytes(&received, "apus_received_bytes_total", kind).increment(by: bytesIn) }
        if bytesOut > 0 { bytes(&sent, "apus_sent_bytes_total", kind).increment(by: bytesOut) }
    }

    /// The metric object for `key`: the last one used if it is the same, else
    /// the cache's, else a new one.
    private static func cached<Key: Hashable, Metric>(
        _ key: Key, last: inout (key: Key, metric: Metric)?, in cache: inout [Key: Metric], make: () -> Metric
    ) -> Metric {
        if let last, last.key == key { return last.metric }
        let metric: Metric
        if let found = cache[key] {
            metric = found
        } else {
            metric = make()
            cache[key] = metric
        }
        last = (key, metric)
        return metric
    }

    private func bytes(_ cache: inout [String: Counter], _ label: String, _ kind: String) -> Counter {
        if let counter = cache[kind] { return counter }
        let made = Counter(label: label, dimensions: [("kind", kind)])
        cache[kind] = made
        return made
    }
}

/// Counts open client connections by protocol (`apus_open_connections{protocol}`):
/// added to a connection's pipeline once its protocol is known, so it counts from
/// being added until the connection goes away.
final class ConnectionMetricsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private static let http1 = Meter(label: "apus_open_connections", dimensions: [("protocol", "http1")])
    private static let http2 = Meter(label: "apus_open_connections", dimensions: [("protocol", "h2")])
    private let meter: Meter
    private var counted = false

    init(http2: Bool) { meter = http2 ? Self.http2 : Self.http1 }

    func handlerAdded(context: ChannelHandlerContext) {
        counted = true
        meter.increment()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if counted { meter.decrement() }
        counted = false
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { meter.decrement() }
        counted = false
        context.fireChannelInactive()
    }
}
