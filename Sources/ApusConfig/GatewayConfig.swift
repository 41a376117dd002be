/// The whole gateway configuration, read from a TOML file by `GatewayConfig.load`.
/// Every relative path in it has been resolved against the file's folder.
public struct GatewayConfig: Sendable {
    /// The file this configuration came from.
    public var file: String
    /// Public listeners and connection behaviour.
    public var server: Server
    /// The Python service everything unmatched goes to.
    public var backend: Backend
    /// Native handler sources and their build cache.
    public var handlers: Handlers
    /// Native routes, in file order.
    public var routes: [Route]
    /// The operator listener.
    public var admin: Admin = Admin()

    /// `[admin]`: metrics, health and the route table, never on a public listener.
    public struct Admin: Sendable {
        /// `host:port` or `unix:/path`; nil turns the admin listener off.
        public var listen: String?
    }

    /// `[server]`.
    public struct Server: Sendable {
        /// Plain HTTP/1.1 listeners, `host:port`.
        public var listen: [SocketAddressSpec] = [SocketAddressSpec(host: "127.0.0.1", port: 8080)]
        /// Event loops; 0 means one per core.
        public var workers: Int = 0
        /// Seconds in-flight requests get to finish after SIGTERM.
        public var shutdownTimeout: Double = 30
        /// Seconds an idle client keep-alive connection is kept open; also how long a
        /// request head, or a body a native handler waits for, may go without a byte.
        public var keepAliveTimeout: Double = 75
        /// Peers (CIDR) whose `X-Forwarded-*` headers are kept and appended to.
        public var trustedProxies: [CIDR] = []
        /// Access log format.
        public var accessLog: AccessLogFormat = .plain
        /// Largest request head (request line plus headers) in bytes.
        public var maxHeaderBytes: Int = 64 * 1024
        /// Default largest body a native handler receives (413 beyond).
        public var maxBodyBytes: Int = 1 << 20
        /// Threads for `blocking` native handlers.
        public var blockingThreads: Int = 8
        /// Whether plain listeners also accept HTTP/2 with prior knowledge (h2c).
        public var h2c: Bool = true
        /// Most concurrent HTTP/2 streams per connection.
        public var maxConcurrentStreams: Int = 100
        /// TLS listeners.
        public var tls: [TLSListener] = []
        /// Plain listeners that only redirect to HTTPS (308).
        public var redirectHTTPS: [SocketAddressSpec] = []
        /// `Strict-Transport-Security` value added to responses over TLS, if set.
        public var hsts: String?
        /// Whether requests without a valid W3C `traceparent` get one before going to the backend.
        public var startTraces: Bool = true
        /// `Upgrade` tokens tunnelled to the backend; any other upgrade is stripped.
        public var upgradeProtocols: [String] = ["websocket"]
        /// Most WebSocket tunnels open at once (503 past it).
        public var maxWebSockets: Int = 10_000
        /// Seconds a tunnel may go without a byte either way.
        public var webSocketIdleTimeout: Double = 3600
    }

    /// One `[[server.tls]]` listener.
    public struct TLSListener: Sendable {
        /// Where it listens.
        public var listen: SocketAddressSpec
        /// The default certificate chain (PEM) and its key, used when no SNI name matches.
        public var certificate: String
        public var privateKey: String
        /// More certificates, chosen by the client's SNI name.
        public var sni: [SNICertificate] = []
        /// CA bundle (PEM) that client certificates must chain to (mTLS), if set.
        public var clientCA: String?
        /// Whether a client certificate is required (true) or only checked when sent (false).
        public var requireClientCertificate: Bool = true
        /// The line of the listener in the file, for messages.
        public var line: Int?
    }

    /// A certificate served for some SNI names (`*.example.com` matches one label).
    public struct SNICertificate: Sendable {
        public var serverNames: [String]
        public var certificate: String
        public var privateKey: String
    }

    /// `[backend]`.
    public struct Backend: Sendable {
        /// Where the backend listens.
        public var address: BackendAddress = .unix("/tmp/apus-backend.sock")
        /// The argv that starts the backend; `nil` when it is started elsewhere.
        public var command: [String]?
        /// The folder the command runs in (default: the config file's folder).
        public var workingDirectory: String = "."
        /// Extra environment for the command.
        public var environment: [String: String] = [:]
        /// Seconds to wait for a connection to the backend.
        public var connectTimeout: Double = 5
        /// Seconds to wait for the response head once the request is sent; also how
        /// long an async or blocking native handler may take to answer.
        public var responseTimeout: Double = 60
        /// Seconds a body may go without a byte in either direction.
        public var idleTimeout: Double = 60
        /// Upper bound on backend connections per event loop.
        public var maxConnectionsPerWorker: Int = 256
        /// Seconds an unused pooled connection is kept.
        public var poolIdleTimeout: Double = 30
        /// Seconds to wait for a supervised backend to accept connections.
        public var readyTimeout: Double = 60
        /// Seconds a supervised backend gets between SIGTERM and SIGKILL.
        public var stopTimeout: Double = 10
    }

    /// `[handlers]`.
    public struct Handlers: Sendable {
        /// Handler source files by handler name (the file name without `.swift`).
        public var sources: [String: String] = [:]
        /// The folders named in `sources` (where `apus new handler` writes, what `--dev` watches).
        public var sourceDirectories: [String] = []
        /// A folder of handlers built by `apus build`; when set, nothing is compiled.
        public var prebuilt: String?
        /// Where compiled handlers are cached.
        public var cacheDirectory: String = ".apus-cache"
        /// Compile with `-O` (true) or `-Onone` (false, faster to build).
        public var optimize: Bool = true
        /// The Swift compiler to use; found on PATH (or next to `swift`) when `nil`.
        public var swiftc: String?
    }

    /// One `[[route]]`.
    public struct Route: Sendable {
        /// `"GET /quote/{symbol}"`.
        public var match: String
        /// The native handler's name.
        public var handler: String
        /// Largest body this route's handler receives.
        public var maxBodyBytes: Int
        /// The line of the route in the file, for messages.
        public var line: Int?
    }
}

/// Where the backend listens.
public enum BackendAddress: Sendable, Equatable, CustomStringConvertible {
    case unix(String)
    case tcp(host: String, port: Int)

    /// Parses `unix:/path` or `host:port`.
    public init?(parsing text: String) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { return nil }
            self = .unix(path)
        } else if let spec = SocketAddressSpec(parsing: text) {
            self = .tcp(host: spec.host, port: spec.port)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// A `host:port` listen address; IPv6 hosts in brackets: `[::1]:8080`.
public struct SocketAddressSpec: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6]:port`; port 0 asks the OS for a free one.
    public init?(parsing text: String) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard !hostPart.isEmpty, let port = Int(portPart), (0...65535).contains(port) else { return nil }
        self.host = String(hostPart)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How access-log lines are written.
public enum AccessLogFormat: String, Sendable {
    case plain, json, off
}

/// An IPv4 or IPv6 network, `10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128.
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    /// The network address in bytes (4 or 16).
    public let network: [UInt8]
    /// The prefix length.
    public let prefixLength: Int
    public let description: String

    public init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let bytes = Self.parseAddress(String(first)) else { return nil }
        let maxBits = bytes.count * 8
        let bits = parts.count == 2 ? Int(parts[1]) : maxBits
        guard let bits, (0...maxBits).contains(bits) else { return nil }
        network = bytes
        prefixLength = bits
        description = text
    }

    /// Whether `address` (4 or 16 bytes) is inside this network.
    public func contains(_ address: [UInt8]) -> Bool {
        var address = address
        // An IPv4-mapped IPv6 address matches IPv4 networks.
        if network.count == 4, address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xFF, address[11] == 0xFF {
            address = Array(address[12...])
        }
        guard address.count == network.count else { return false }
        var remaining = prefixLength
        for index in 0..<network.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if address[index] & mask != network[index] & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// Parses a dotted IPv4 or a textual IPv6 address into its bytes.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        if !text.contains(":") {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            var bytes: [UInt8] = []
            for part in parts {
                guard let value = UInt8(part) else { return nil }
                bytes.append(value)
            }
            return bytes
        }
        var text = text
        // An embedded IPv4 tail (`::ffff:10.1.2.3`) becomes two hex groups.
        if let lastColon = text.lastIndex(of: ":"), text[lastColon...].contains("."),
            let v4 = parseAddress(String(text[text.index(after: lastColon)...])), v4.count == 4
        {
            text = text[...lastColon] + String(UInt16(v4[0]) << 8 | UInt16(v4[1]), radix: 16) + ":"
                + String(UInt16(v4[2]) << 8 | UInt16(v4[3]), radix: 16)
        }
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard let value = UInt16(group, radix: 16), group.count <= 4 else { return nil }
                result.append(value)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}

extension String {
    fileprivate func components(separatedBy separator: String) -> [String] {
        var result: [String] = []
        var rest = self[...]
        while let range = rest.firstRange(of: separator) {
            result.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        result.append(String(rest))
        return result
    }
}
