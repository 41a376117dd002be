import CoreMetrics
import NIOCore
import Synchronization

/// Request metrics, kept per event loop and added up when `/metrics` is read:
///
/// - `apus_requests_total{route,method,status,kind}`: requests answered; `status` is the class (2xx…), `kind` native, proxy, websocket, or gateway (refused before routing: malformed, or a head the gateway does not accept; route `(none)`).
/// - `apus_request_duration_seconds{route,kind}`: histogram of total time; native and proxied side by side.
/// - `apus_upstream_duration_seconds{route}`: histogram of time to the backend's response head.
/// - `apus_received_bytes_total{kind}`, `apus_sent_bytes_total{kind}`: body bytes in and out.
///
/// Why not swift-metrics objects, as before: every loop recorded into the same
/// Prometheus histogram for a route, which takes a lock and compares the time with
/// each bucket's bound as a 128-bit `Duration`, and its counters are atomic adds
/// on cache lines all loops share; with the label lookups, recording a request
/// cost more instructions than routing it. Here each loop counts in its own cells
/// (as Envoy's workers keep thread-local stats), a store with no lock and no
/// shared cache line, and a scrape sums the loops. The gauges (`apus_inflight_requests`,
/// `apus_open_connections`) stay swift-metrics objects in the registry.
final class RequestMetrics {
    private let stats: LoopRequestStats
    private var byLabels: [SeriesLabels: RequestSeries] = [:]
    /// The series used last: a run of requests to one route skips hashing (comparing
    /// strings that share storage is a pointer compare).
    private var last: RequestSeries?

    /// Requests being served now, across loops.
    static let inFlight = Meter(label: "apus_inflight_requests")

    init(stats: LoopRequestStats) { self.stats = stats }

    /// Records one finished request.
    func record(
        route: String, method: String, status: Int, kind: String, nanoseconds: Int64, upstreamNanoseconds: Int64?,
        bytesIn: Int, bytesOut: Int
    ) {
        let series: RequestSeries
        if let last, last.labels.route == route, last.labels.kind == kind {
            series = last
        } else {
            let labels = SeriesLabels(route: route, kind: kind)
            if let found = byLabels[labels] {
                series = found
            } else {
                series = RequestSeries(labels: labels)
                byLabels[labels] = series
                stats.add(series)
            }
            last = series
        }
        series.record(
            method: RequestSeries.methodIndex(method), status: status, nanoseconds: nanoseconds, upstreamNanoseconds: upstreamNanoseconds,
            bytesIn: bytesIn, bytesOut: bytesOut)
        stats.requestFinished()
    }
}

/// The labels a request series is kept under.
struct SeriesLabels: Hashable, Sendable {
    let route: String
    let kind: String
}

/// One loop's request series: written by that loop only, read by scrapes and by
/// the server's idle check from any thread.
final class LoopRequestStats: Sendable {
    private let series = Mutex<[RequestSeries]>([])
    private let finished = Atomic<Int>(0)

    /// How many requests this loop has finished.
    var requestsFinished: Int { finished.load(ordering: .relaxed) }

    fileprivate func requestFinished() {
        // One writer: a load and a store, not a locked add.
        finished.store(finished.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// A label set seen for the first time (the lock is taken then and by scrapes only).
    fileprivate func add(_ series: RequestSeries) {
        self.series.withLock { $0.append(series) }
    }

    /// The series so far.
    var allSeries: [RequestSeries] { series.withLock { $0 } }
}

/// The counts of one route and kind on one loop. Each cell has one writer (the
/// loop), so a count is a relaxed load and store, no locked instruction; a scrape
/// may read a histogram mid-update, which at worst shows one request in its
/// bucket before its count.
final class RequestSeries: Sendable {
    let labels: SeriesLabels

    /// The method labels; others count as `OTHER`, so a client cannot blow up the series count.
    static let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER"]
    /// The histograms' bucket bounds (those of swift-prometheus' timers before): 5 ms to 10 s.
    static let bucketBounds: [Int64] = [
        5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000,
        5_000_000_000, 10_000_000_000,
    ]
    /// `bucketBounds.count` (checked when a series is made).
    static let bucketCount = 11
    /// The layout of `cells`: requests by method and status class (first digit 0–9),
    /// then the total and upstream histograms (a count per bucket, the sum in
    /// nanoseconds, the count), then body bytes in and out.
    static let durationCells = methods.count * 10
    static let upstreamCells = durationCells + bucketCount + 2
    static let bytesInCell = upstreamCells + bucketCount + 2
    static let bytesOutCell = bytesInCell + 1
    static let cellCount = bytesOutCell + 1

    private let cells: InlineArray<128, Atomic<Int>>

    init(labels: SeriesLabels) {
        precondition(Self.cellCount <= 128 && Self.bucketBounds.count == Self.bucketCount)
        self.labels = labels
        cells = InlineArray { _ in Atomic(0) }
    }

    static func methodIndex(_ method: String) -> Int {
        switch method {
        case "GET": return 0
        case "HEAD": return 1
        case "POST": return 2
        case "PUT": return 3
        case "PATCH": return 4
        case "DELETE": return 5
        case "OPTIONS": return 6
        case "CONNECT": return 7
        case "TRACE": return 8
        default: return 9
        }
    }

    fileprivate func record(method: Int, status: Int, nanoseconds: Int64, upstreamNanoseconds: Int64?, bytesIn: Int, bytesOut: Int) {
        add(method * 10 + min(max(status / 100, 0), 9), 1)
        recordDuration(nanoseconds, at: Self.durationCells)
        if let upstreamNanoseconds { recordDuration(upstreamNanoseconds, at: Self.upstreamCells) }
        if bytesIn > 0 { add(Self.bytesInCell, bytesIn) }
        if bytesOut > 0 { add(Self.bytesOutCell, bytesOut) }
    }

    private func recordDuration(_ nanoseconds: Int64, at base: Int) {
        // Most requests fall in the first bucket: the search is one compare for them.
        var bucket = 0
        while bucket < Self.bucketCount, nanoseconds > Self.bucketBounds[bucket] { bucket += 1 }
        if bucket < Self.bucketCount { add(base + bucket, 1) }
        add(base + Self.bucketCount, Int(nanoseconds))
        add(base + Self.bucketCount + 1, 1)
    }

    private func add(_ cell: Int, _ amount: Int) {
        cells[cell].store(cells[cell].load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    func value(_ cell: Int) -> Int { cells[cell].load(ordering: .relaxed) }
}

/// Renders the loops' request series, summed across loops, as Prometheus text.
enum RequestMetricsText {
    static func render(_ loops: [LoopRequestStats], into buffer: inout [UInt8]) {
        var requests: [[String]: Int] = [:]
        var durations: [[String]: [Int]] = [:]
        var upstream: [[String]: [Int]] = [:]
        var received: [String: Int] = [:]
        var sent: [String: Int] = [:]
        let histogramCells = RequestSeries.bucketCount + 2
        func sum(_ series: RequestSeries, from base: Int, into totals: inout [Int]?) {
            var values = totals ?? Array(repeating: 0, count: histogramCells)
            for offset in 0..<histogramCells { values[offset] += series.value(base + offset) }
            totals = values
        }
        for series in loops.flatMap(\.allSeries) {
            let (route, kind) = (series.labels.route, series.labels.kind)
            for (methodIndex, method) in RequestSeries.methods.enumerated() {
                for statusClass in 0..<10 {
                    let count = series.value(methodIndex * 10 + statusClass)
                    if count > 0 { requests[[route, method, "\(statusClass)xx", kind], default: 0] += count }
                }
            }
            if series.value(RequestSeries.durationCells + histogramCells - 1) > 0 {
                sum(series, from: RequestSeries.durationCells, into: &durations[[route, kind]])
            }
            if series.value(RequestSeries.upstreamCells + histogramCells - 1) > 0 {
                sum(series, from: RequestSeries.upstreamCells, into: &upstream[[route]])
            }
            received[kind, default: 0] += series.value(RequestSeries.bytesInCell)
            sent[kind, default: 0] += series.value(RequestSeries.bytesOutCell)
        }

        func line(_ name: String, _ labels: [(String, String)], _ value: String) {
            buffer += name.utf8
            if !labels.isEmpty {
                buffer.append(UInt8(ascii: "{"))
                for (index, (label, text)) in labels.enumerated() {
                    if index > 0 { buffer.append(UInt8(ascii: ",")) }
                    buffer += label.utf8
                    buffer += #"=""#.utf8
                    for byte in text.utf8 {
                        switch byte {
                        case UInt8(ascii: "\\"): buffer += #"\\"#.utf8
                        case UInt8(ascii: "\""): buffer += #"\""#.utf8
                        case UInt8(ascii: "\n"): buffer += #"\n"#.utf8
                        default: buffer.append(byte)
                        }
                    }
                    buffer.append(UInt8(ascii: "\""))
                }
                buffer.append(UInt8(ascii: "}"))
            }
            buffer.append(UInt8(ascii: " "))
            buffer += value.utf8
            buffer.append(UInt8(ascii: "\n"))
        }
        func header(_ name: String, _ type: String, _ help: String) {
            buffer += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n".utf8
        }
        func histogram(_ name: String, _ labels: [(String, String)], _ values: [Int]) {
            var cumulative = 0
            for bucket in 0..<RequestSeries.bucketCount {
                cumulative += values[bucket]
                line("\(name)_bucket", labels + [("le", seconds(RequestSeries.bucketBounds[bucket]))], "\(cumulative)")
            }
            // A scrape may have read a bucket updated after the count: +Inf is never below the buckets.
            let count = max(values[RequestSeries.bucketCount + 1], cumulative)
            line("\(name)_bucket", labels + [("le", "+Inf")], "\(count)")
            line("\(name)_sum", labels, seconds(Int64(values[RequestSeries.bucketCount])))
            line("\(name)_count", labels, "\(count)")
        }
        func byKey<Value>(_ values: [[String]: Value]) -> [([String], Value)] {
            values.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { ($0.key, $0.value) }
        }

        if !requests.isEmpty {
            header("apus_requests_total", "counter", "Requests answered, by route, method, status class and kind.")
            for (key, count) in byKey(requests) {
                line("apus_requests_total", [("route", key[0]), ("method", key[1]), ("status", key[2]), ("kind", key[3])], "\(count)")
            }
        }
        if !durations.isEmpty {
            header("apus_request_duration_seconds", "histogram", "Time from a request's head to the end of its answer.")
            for (key, values) in byKey(durations) {
                histogram("apus_request_duration_seconds", [("route", key[0]), ("kind", key[1])], values)
            }
        }
        if !upstream.isEmpty {
            header("apus_upstream_duration_seconds", "histogram", "Time from forwarding a request to the backend's response head.")
            for (key, values) in byKey(upstream) { histogram("apus_upstream_duration_seconds", [("route", key[0])], values) }
        }
        for (name, values, help) in [
            ("apus_received_bytes_total", received, "Request body bytes received, by kind."),
            ("apus_sent_bytes_total", sent, "Response body bytes sent, by kind."),
        ] {
            let counted = values.filter { $0.value > 0 }.sorted { $0.key < $1.key }
            guard !counted.isEmpty else { continue }
            header(name, "counter", help)
            for (kind, bytes) in counted { line(name, [("kind", kind)], "\(bytes)") }
        }
    }

    /// Nanoseconds as decimal seconds without a float's rounding: 5000000 → `0.005`.
    static func seconds(_ nanoseconds: Int64) -> String {
        let whole = nanoseconds / 1_000_000_000
        var fraction = String(nanoseconds % 1_000_000_000)
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.count > 1, fraction.last == "0" { fraction.removeLast() }
        return "\(whole).\(fraction)"
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
