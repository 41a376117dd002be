import Foundation
import Testing

@testable import ApusConfig

@Suite("Config")
struct ConfigTests {
    /// A temporary folder with a handlers/ folder holding `quote.swift`.
    static func folder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("apus-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("handlers"), withIntermediateDirectories: true)
        try "let handler = Handler.inline { _ in .text(\"hi\") }\n".write(
            to: folder.appendingPathComponent("handlers/quote.swift"), atomically: true, encoding: .utf8)
        return folder
    }

    func parse(_ text: String, environment: [String: String] = [:]) throws -> GatewayConfig {
        let folder = try Self.folder()
        return try GatewayConfig.parse(text: text, file: folder.appendingPathComponent("g.conf").path, environment: environment)
    }

    func error(_ text: String) throws -> ConfigError {
        let folder = try Self.folder()
        do {
            _ = try GatewayConfig.parse(text: text, file: folder.appendingPathComponent("g.conf").path)
        } catch {
            return error
        }
        Issue.record("config was accepted:\n\(text)")
        throw CancellationError()
    }

    @Test func defaultsAndResolvedPaths() throws {
        let config = try parse("")
        #expect(config.server.listen == [SocketAddressSpec(host: "127.0.0.1", port: 8080)])
        #expect(config.backend.address == .unix("/tmp/apus-backend.sock"))
        #expect(config.handlers.cacheDirectory.hasSuffix("/.apus-cache"))
        let full = try parse(
            """
            [server]
            listen = ["0.0.0.0:80", "[::1]:8081"]
            trusted_proxies = ["10.0.0.0/8", "::1"]
            max_body_size = "2MiB"
            [backend]
            address = "127.0.0.1:8000"
            command = ["uvicorn", "app:app"]
            response_timeout = 1.5
            [handlers]
            sources = "handlers"
            [[route]]
            match = "GET /quote/{symbol}"
            handler = "quote"
            """)
        #expect(full.server.listen.map(\.description) == ["0.0.0.0:80", "[::1]:8081"])
        #expect(full.backend.address == .tcp(host: "127.0.0.1", port: 8000))
        #expect(full.backend.responseTimeout == 1.5)
        #expect(full.routes.first?.maxBodyBytes == 2 << 20)
        #expect(full.routes.first?.line == 12)
        #expect(full.handlers.sources["quote"]?.hasSuffix("/handlers/quote.swift") == true)
    }

    @Test func unknownKeyNamesFileLineAndKey() throws {
        let problem = try error("[server]\nlisten = [\"127.0.0.1:1\"]\n\nbogus = 1\n")
        #expect(problem.line == 4)
        #expect(problem.key == "server.bogus")
        #expect(problem.description.hasSuffix("g.conf:4: server.bogus: unknown key in [server]; known keys: access_log, blocking_threads, h2c, hsts, keepalive_timeout, listen, max_body_size, max_concurrent_streams, max_header_size, max_websockets, redirect_https, shutdown_timeout, start_traces, tls, trusted_proxies, upgrade_protocols, websocket_idle_timeout, workers"))
    }

    @Test func wrongTypesAndValues() throws {
        #expect(try error("[server]\nlisten = 12\n").message.contains("array of strings"))
        #expect(try error("[server]\nworkers = \"two\"\n").line == 2)
        #expect(try error("[backend]\n\nconnect_timeout = -1\n").line == 3)
        #expect(try error("[server]\nkeepalive_timeout = 0\n").message == "must be more than 0 and at most 604800 seconds (7 days)")
        #expect(try error("[backend]\naddress = \"unix:\"\n").key == "backend.address")
        #expect(try error("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").key == "server.trusted_proxies")
        #expect(try error("[server]\naccess_log = \"loud\"\n").message.contains("plain"))
        #expect(try error("[server]\nmax_body_size = \"lots\"\n").line == 2)
    }

    @Test func routesNeedAKnownHandler() throws {
        let problem = try error("[handlers]\nsources = \"handlers\"\n[[route]]\nmatch = \"GET /a\"\nhandler = \"nope\"\n")
        #expect(problem.line == 5)
        #expect(problem.key == "route[0].handler")
        #expect(problem.message.contains("known: quote"))
        #expect(try error("[[route]]\nhandler = \"quote\"\n").message.contains("missing key \"match\""))
    }

    @Test func syntaxErrorsCarryTheParsersLine() throws {
        let problem = try error("[server]\nlisten = [\"a\"\n[backend]\n")
        #expect(problem.line != nil)
        #expect(problem.message.contains("TOML syntax error"))
        #expect(try error("[server]\n[server]\n").line == 2)
    }

    @Test func environmentOverridesListenAndBackend() throws {
        let config = try parse(
            "[backend]\naddress = \"unix:/a.sock\"\n",
            environment: ["APUS_LISTEN": "0.0.0.0:9000, 127.0.0.1:9001", "APUS_BACKEND_ADDRESS": "unix:/b.sock"])
        #expect(config.server.listen.map(\.port) == [9000, 9001])
        #expect(config.backend.address == .unix("/b.sock"))
        #expect(throws: ConfigError.self) { try parse("", environment: ["APUS_LISTEN": "nope"]) }
    }

    @Test func cidrMatching() throws {
        let v4 = try #require(CIDR(parsing: "10.1.0.0/16"))
        #expect(v4.contains([10, 1, 200, 3]))
        #expect(!v4.contains([10, 2, 0, 1]))
        #expect(v4.contains(CIDR.parseAddress("::ffff:10.1.2.3")!))
        let v6 = try #require(CIDR(parsing: "fd00::/8"))
        #expect(v6.contains(CIDR.parseAddress("fd12::1")!))
        #expect(!v6.contains(CIDR.parseAddress("fe80::1")!))
        #expect(CIDR(parsing: "1.2.3") == nil)
        #expect(CIDR(parsing: "::1::2") == nil)
    }
}
