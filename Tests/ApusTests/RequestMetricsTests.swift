import Testing

@testable import ApusServer

@Suite("Request metrics")
struct RequestMetricsTests {
    func render(_ loops: [LoopRequestStats]) -> [String] {
        var buffer: [UInt8] = []
        RequestMetricsText.render(loops, into: &buffer)
        return String(decoding: buffer, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Each loop counts on its own; a scrape adds them up into one series per label set.
    @Test func loopsAreSummedPerLabelSet() {
        let first = LoopRequestStats()
        let second = LoopRequestStats()
        let one = RequestMetrics(stats: first)
        let two = RequestMetrics(stats: second)
        one.record(
            route: "GET /quote/{symbol}", method: "GET", status: 200, kind: "native", nanoseconds: 1_000_000, upstreamNanoseconds: nil,
            bytesIn: 0, bytesOut: 10)
        two.record(
            route: "GET /quote/{symbol}", method: "GET", status: 204, kind: "native", nanoseconds: 30_000_000, upstreamNanoseconds: nil,
            bytesIn: 0, bytesOut: 5)
        two.record(
            route: "(backend)", method: "BREW", status: 502, kind: "proxy", nanoseconds: 20_000_000_000, upstreamNanoseconds: 7_000_000,
            bytesIn: 3, bytesOut: 0)
        let lines = render([first, second])

        #expect(lines.contains(#"apus_requests_total{route="GET /quote/{symbol}",method="GET",status="2xx",kind="native"} 2"#))
        #expect(lines.contains(#"apus_requests_total{route="(backend)",method="OTHER",status="5xx",kind="proxy"} 1"#))
        let native = #"route="GET /quote/{symbol}",kind="native""#
        #expect(lines.contains("apus_request_duration_seconds_bucket{\(native),le=\"0.005\"} 1"))
        #expect(lines.contains("apus_request_duration_seconds_bucket{\(native),le=\"0.025\"} 1"))
        #expect(lines.contains("apus_request_duration_seconds_bucket{\(native),le=\"0.05\"} 2"))
        #expect(lines.contains("apus_request_duration_seconds_bucket{\(native),le=\"10.0\"} 2"))
        #expect(lines.contains("apus_request_duration_seconds_bucket{\(native),le=\"+Inf\"} 2"))
        #expect(lines.contains("apus_request_duration_seconds_sum{\(native)} 0.031"))
        #expect(lines.contains("apus_request_duration_seconds_count{\(native)} 2"))
        // Past the last bound: only in +Inf.
        #expect(lines.contains(#"apus_request_duration_seconds_bucket{route="(backend)",kind="proxy",le="10.0"} 0"#))
        #expect(lines.contains(#"apus_request_duration_seconds_bucket{route="(backend)",kind="proxy",le="+Inf"} 1"#))
        #expect(lines.contains(#"apus_request_duration_seconds_sum{route="(backend)",kind="proxy"} 20.0"#))
        #expect(lines.contains(#"apus_upstream_duration_seconds_count{route="(backend)"} 1"#))
        #expect(lines.contains(#"apus_sent_bytes_total{kind="native"} 15"#))
        #expect(lines.contains(#"apus_received_bytes_total{kind="proxy"} 3"#))
        #expect(!lines.contains { $0.hasPrefix("apus_received_bytes_total{kind=\"native\"}") })
        #expect(lines.filter { $0 == "# TYPE apus_requests_total counter" }.count == 1)
        #expect(first.requestsFinished + second.requestsFinished == 3)
    }

    @Test func labelValuesAreEscaped() {
        let stats = LoopRequestStats()
        RequestMetrics(stats: stats).record(
            route: "GET /a\"b\\c", method: "GET", status: 200, kind: "native", nanoseconds: 1, upstreamNanoseconds: nil, bytesIn: 0,
            bytesOut: 0)
        #expect(render([stats]).contains(#"apus_requests_total{route="GET /a\"b\\c",method="GET",status="2xx",kind="native"} 1"#))
    }

    @Test func nothingRecordedRendersNothing() {
        #expect(render([LoopRequestStats()]).isEmpty)
    }
}
