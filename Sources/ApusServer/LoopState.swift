import ApusPlugins
import ApusProxy
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Everything one event loop owns: its backend pool, its view of the routes, a
/// request-id generator, a cached `Date` header and its request metrics. Touched
/// only on its loop, so none of it needs a lock (the metrics' cells are also read
/// by scrapes, see `RequestSeries`).
final class LoopState {
    let eventLoop: any EventLoop
    let pool: UpstreamPool
    var router: Router
    /// This loop's request metrics.
    let metrics: RequestMetrics
    private var random: SplitMix64
    private var cachedDate: (second: Int, value: String) = (-1, "")

    init(eventLoop: any EventLoop, pool: UpstreamPool, router: Router, stats: LoopRequestStats) {
        self.eventLoop = eventLoop
        self.pool = pool
        self.router = router
        self.metrics = RequestMetrics(stats: stats)
        var seed = SystemRandomNumberGenerator()
        random = SplitMix64(seed: seed.next())
    }

    /// Gives an async or blocking handler until `backend.response_timeout` to answer,
    /// then answers for it (`NativeResponder.timeOut`); cancel the task once it has.
    func scheduleAnswerTimeout(for responder: NativeResponder) -> Scheduled<Void> {
        let timeout = pool.settings.responseTimeout
        return eventLoop.scheduleTask(in: timeout) { responder.timeOut(afterSeconds: Double(timeout.nanoseconds) / 1e9) }
    }

    /// A fresh request id: 32 hex digits from a per-loop generator (no syscall per request).
    func makeRequestID() -> String {
        let high = random.next()
        let low = random.next()
        // Digits by arithmetic: a table here was an array allocated per request.
        func digit(_ value: UInt64, _ index: Int) -> UInt8 {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt64(60 - index * 4)) & 0xF
            return nibble < 10 ? 0x30 + nibble : 0x57 + nibble
        }
        return String(unsafeUninitializedCapacity: 32) { buffer in
            for index in 0..<16 {
                buffer[index] = digit(high, index)
                buffer[16 + index] = digit(low, index)
            }
            return 32
        }
    }

    /// A new W3C trace context: version 00, random trace and span ids, sampled.
    func makeTraceparent() -> String {
        func hex(_ value: UInt64) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }
        return "00-\(hex(random.next()))\(hex(random.next() | 1))-\(hex(random.next() | 1))-01"
    }

    /// The IMF-fixdate for now, formatted at most once a second.
    func dateHeader() -> String {
        var now = time(nil)
        if now == cachedDate.second { return cachedDate.value }
        var parts = tm()
        gmtime_r(&now, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let value =
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        cachedDate = (now, value)
        return value
    }
}

/// Sebastiano Vigna's SplitMix64: fast, good enough for request ids (not for secrets).
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Whether a client-supplied `X-Request-ID` is safe to keep: 1–128 visible
/// characters from a conservative set, so it can go into logs and headers as is.
func isValidRequestID(_ value: String) -> Bool {
    let utf8 = value.utf8
    guard !utf8.isEmpty, utf8.count <= 128 else { return false }
    return utf8.allSatisfy { byte in
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "+"),
            UInt8(ascii: "/"), UInt8(ascii: "="), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
