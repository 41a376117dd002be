import CoreMetrics
import NIOCore

/// Request metrics through swift-metrics (the executable bootstraps the
/// Prometheus backend). Metric objects are looked up once per label set and
/// cached per event loop, so recording a request is a dictionary hit and two
/// atomic adds, with no lock.
///
/// - `apus_requests_total{route,method,status,kind}`: requests answered; `status` is the class (2xx…), `kind` native, proxy, websocket, or gateway (refused before routing: malformed, or a head the gateway does not accept; route `(none)`).
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

    private var counters = MetricCache<CounterKey, Counter>()
    private var timers = MetricCache<TimerKey, Timer>()
    private var upstreamTimers = MetricCache<String, Timer>()
    private var received = MetricCache<String, Counter>()
    private var sent = MetricCache<String, Counter>()

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
        counters.metric(for: CounterKey(route: route, method: methodLabel, statusClass: status / 100, kind: kind)) {
            Counter(
                label: "apus_requests_total",
                dimensions: [("route", route), ("method", methodLabel), ("status", "\(status / 100)xx"), ("kind", kind)])
        }.increment()
        timers.metric(for: TimerKey(route: route, kind: kind)) {
            Timer(label: "apus_request_duration_seconds", dimensions: [("route", route), ("kind", kind)])
        }.recordNanoseconds(nanoseconds)
        if let upstreamNanoseconds {
            upstreamTimers.metric(for: route) {
                Timer(label: "apus_upstream_duration_seconds", dimensions: [("route", route)])
            }.recordNanoseconds(upstreamNanoseconds)
        }
        if bytesIn > 0 {
            received.metric(for: kind) { Counter(label: "apus_received_bytes_total", dimensions: [("kind", kind)]) }
                .increment(by: bytesIn)
        }
        if bytesOut > 0 {
            sent.metric(for: kind) { Counter(label: "apus_sent_bytes_total", dimensions: [("kind", kind)]) }.increment(by: bytesOut)
        }
    }
}

/// Metric objects by label set, made on first use. The last one used is kept
/// beside the dictionary: a run of requests to one route skips hashing
/// (comparing strings that share storage is a pointer compare).
private struct MetricCache<Key: Hashable, Metric> {
    private var byKey: [Key: Metric] = [:]
    private var last: (key: Key, metric: Metric)?

    mutating func metric(for key: Key, make: () -> Metric) -> Metric {
        if let last, last.key == key { return last.metric }
        let metric: Metric
        if let found = byKey[key] {
            metric = found
        } else {
            metric = make()
            byKey[key] = metric
        }
        last = (key, metric)
        return metric
    }
}

/// Counts open client connections by protocol (`apus_open_connections{protocol}`):
/// added to a connection's pipeline once its protocol is known, so it counts from
/// being added until the connection goes away. It goes last in the pipeline: the
/// handlers before it consume every request, so no request passes through it.
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
