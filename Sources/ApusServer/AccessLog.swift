import ApusConfig

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// One line per request on stdout, plain or JSON. Each line is a single
/// `write(2)`, so lines from different event loops never interleave.
public struct AccessLog: Sendable {
    /// A finished request, as logged.
    struct Entry {
        var client: String
        var method: String
        var path: String
        var version: String
        var status: Int
        var bytesOut: Int
        var seconds: Double
        var upstreamSeconds: Double?
        var kind: String
        var requestID: String
        var traceID: String = ""
    }

    let format: AccessLogFormat

    public init(format: AccessLogFormat) { self.format = format }

    var isEnabled: Bool { format != .off }

    func write(_ entry: Entry) {
        var line: String
        let millis = formatMillis(entry.seconds)
        switch format {
        case .off: return
        case .plain:
            line = "\(entry.client.isEmpty ? "-" : entry.client) \"\(entry.method) \(sanitized(entry.path)) \(entry.version)\" \(entry.status) \(entry.bytesOut) \(millis)ms \(entry.kind)"
            line += entry.upstreamSeconds.map { " upstream=\(formatMillis($0))ms" } ?? ""
            line += " id=\(entry.requestID)"
            line += entry.traceID.isEmpty ? "\n" : " trace=\(entry.traceID)\n"
        case .json:
            line = "{\"client\":\(quoted(entry.client)),\"method\":\(quoted(entry.method)),\"path\":\(quoted(entry.path)),"
            line += "\"version\":\(quoted(entry.version)),\"status\":\(entry.status),\"bytes_out\":\(entry.bytesOut),"
            line += "\"duration_ms\":\(millis),\"kind\":\(quoted(entry.kind)),"
            if let upstream = entry.upstreamSeconds { line += "\"upstream_ms\":\(formatMillis(upstream))," }
            if !entry.traceID.isEmpty { line += "\"trace_id\":\(quoted(entry.traceID))," }
            line += "\"request_id\":\(quoted(entry.requestID))}\n"
        }
        var bytes = line
        bytes.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(1, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }

    private func formatMillis(_ seconds: Double) -> String {
        let micros = Int((seconds * 1_000_000).rounded())
        let fraction = micros % 1000
        return "\(micros / 1000).\(fraction < 10 ? "00" : fraction < 100 ? "0" : "")\(fraction)"
    }

    /// Paths go into a space-separated line; control bytes and quotes must not break it.
    private func sanitized(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 < 0x21 || $0 == UInt8(ascii: "\"") || $0 == 0x7F }) else { return text }
        return String(text.unicodeScalars.map { $0.value < 0x21 || $0 == "\"" || $0.value == 0x7F ? "?" : Character($0) })
    }

    private func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
