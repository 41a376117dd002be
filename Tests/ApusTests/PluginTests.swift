import ApusCompiler
import ApusPlugins
import Foundation
import Logging
import Synchronization
import Testing

/// Compiles real handlers with the toolchain's swiftc and loads them with dlopen.
@Suite("Compiler and plugins", .serialized)
struct PluginTests {
    static let repoSources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources").path

    static func scratch() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("apus-plugin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    /// One cache for the suite, so the SDK library is built once.
    static let cache = FileManager.default.temporaryDirectory.appendingPathComponent("apus-plugin-cache-\(UUID().uuidString)").path

    static func compiler(_ folder: URL) -> HandlerCompiler {
        HandlerCompiler(configuration: .init(cacheDirectory: cache, optimize: false), sdk: HandlerSDK(root: repoSources))
    }

    static func write(_ text: String, to file: URL) throws {
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    /// Calls a handler and waits for its answer.
    static func call(_ library: HandlerLibrary, _ request: NativeRequest, body: [UInt8] = []) async -> NativeResponse {
        await withCheckedContinuation { continuation in
            let responder = NativeResponder(handlerName: library.name, logger: .init(label: "test")) {
                continuation.resume(returning: $0)
            }
            body.withUnsafeBytes { library.invoke(request, body: $0, responder: responder) }
        }
    }

    static func request(path: String, parameters: [(String, String)] = []) -> NativeRequest {
        NativeRequest(
            method: "POST", path: path, query: "x=1", requestID: "rid", remoteAddress: "127.0.0.1:1",
            headers: [("x-test", "yes")], parameters: parameters.map { (name: $0.0, value: $0.1) })
    }

    @Test func compilesLoadsAndCallsAHandlerAndCachesIt() async throws {
        let folder = try Self.scratch()
        let source = folder.appendingPathComponent("greet.swift")
        try Self.write(
            """
            let handler = Handler.inline { request in
                .json(["hello": .string(request.pathParameters["name"] ?? "?"), "body": .string(request.text),
                       "header": .string(request.headers["X-Test"] ?? ""), "x": .string(request.queryParameter("x") ?? "")],
                      status: 201)
            }
            """, to: source)
        let compiler = Self.compiler(folder)
        let first = try await compiler.compile(name: "greet", source: source.path)
        #expect(!first.fromCache)
        let second = try await compiler.compile(name: "greet", source: source.path)
        #expect(second.fromCache)
        #expect(second.libraryPath == first.libraryPath)

        let library = try HandlerLibrary.load(path: first.libraryPath, name: "greet")
        #expect(library.kind == .inline)
        let response = await Self.call(library, Self.request(path: "/greet/ada", parameters: [("name", "ada")]), body: Array("hi".utf8))
        #expect(response.status == 201)
        #expect(String(decoding: response.body, as: UTF8.self) == #"{"hello":"ada","body":"hi","header":"yes","x":"1"}"#)
        #expect(response.headers.first { $0.name == "content-type" }?.value == "application/json")

        // An edit changes the hash, so the new build gets a new file (dlopen never sees a reused path).
        try Self.write(try String(contentsOf: source, encoding: .utf8) + "\n// edit\n", to: source)
        let edited = try await compiler.compile(name: "greet", source: source.path)
        #expect(!edited.fromCache)
        #expect(edited.hash != first.hash && edited.libraryPath != first.libraryPath)
    }

    /// The SDK copies a request as bytes and decodes each part when it is read:
    /// every part must read back as the host sent it, and headers must behave as a list.
    @Test func handlerReadsEveryPartOfTheRequest() async throws {
        let folder = try Self.scratch()
        let source = folder.appendingPathComponent("parts.swift")
        try Self.write(
            """
            let handler = Handler.inline { request in
                var headers = request.headers
                headers.add("x-added", "1")
                let names = headers.fields.map { $0.name + "=" + $0.value }.joined(separator: ",")
                let parts = [request.method, request.path, request.query, request.requestID, request.remoteAddress,
                             request.headers["ACCEPT"] ?? "nil", request.headers["x-missing"] ?? "nil",
                             headers["X-Added"] ?? "nil", names, String(request.headers.fields.count),
                             request.pathParameters["id"] ?? "nil", request.text]
                return .text(parts.joined(separator: "|"))
            }
            """, to: source)
        let built = try await Self.compiler(folder).compile(name: "parts", source: source.path)
        let library = try HandlerLibrary.load(path: built.libraryPath, name: "parts")
        let request = NativeRequest(
            method: "PUT", path: "/items/ünï", query: "a=1&b=2", requestID: "0123456789abcdef-rid", remoteAddress: "[::1]:4000",
            headers: [("host", "api.example"), ("accept", "text/plain"), ("accept", "second")],
            parameters: [(name: "id", value: "ünï")])
        let response = await Self.call(library, request, body: Array("body ✓".utf8))
        #expect(response.status == 200)
        #expect(
            String(decoding: response.body, as: UTF8.self)
                == "PUT|/items/ünï|a=1&b=2|0123456789abcdef-rid|[::1]:4000|text/plain|nil|1"
                + "|host=api.example,accept=text/plain,accept=second,x-added=1|3|ünï|body ✓")
    }

    @Test func compileErrorsCarryFileAndLine() async throws {
        let folder = try Self.scratch()
        let source = folder.appendingPathComponent("bad.swift")
        try Self.write("let handler = Handler.inline { request in\n    return nope\n}\n", to: source)
        do {
            _ = try await Self.compiler(folder).compile(name: "bad", source: source.path)
            Issue.record("a broken handler compiled")
        } catch {
            #expect(error.description.contains("bad.swift:2:"))
            #expect(error.description.contains("nope"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: Self.cache).allSatisfy { !$0.contains("bad-") })
    }

    @Test func thrownErrorsBecome500sAndAsyncHandlersComplete() async throws {
        let folder = try Self.scratch()
        let source = folder.appendingPathComponent("mixed.swift")
        try Self.write(
            """
            struct Oops: Error {}
            let handler = Handler.async { request in
                try await Task.sleep(for: .milliseconds(5))
                if request.path == "/throw" { throw Oops() }
                if request.path == "/teapot" { throw HTTPError(418, "short and stout") }
                return .text("done")
            }
            """, to: source)
        let compiled = try await Self.compiler(folder).compile(name: "mixed", source: source.path)
        let library = try HandlerLibrary.load(path: compiled.libraryPath, name: "mixed")
        #expect(library.kind == .async)
        #expect(String(decoding: await Self.call(library, Self.request(path: "/ok")).body, as: UTF8.self) == "done")
        let thrown = await Self.call(library, Self.request(path: "/throw"))
        #expect(thrown.status == 500)
        #expect(String(decoding: thrown.body, as: UTF8.self).contains("Oops"))
        let teapot = await Self.call(library, Self.request(path: "/teapot"))
        #expect(teapot.status == 418)
        #expect(String(decoding: teapot.body, as: UTF8.self) == #"{"error":"short and stout"}"#)
    }

    /// Builds a C library with the given exports, as a handler in another language would be.
    static func cLibrary(_ folder: URL, name: String, code: String) throws -> String {
        let source = folder.appendingPathComponent("\(name).c")
        let output = folder.appendingPathComponent("lib\(name).so")
        try Self.write(code, to: source)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["cc", "-shared", "-fPIC", "-I", "\(repoSources)/CApusABI/include", source.path, "-o", output.path]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return output.path
    }

    @Test func mismatchedAbiVersionIsRefusedWithBothVersions() throws {
        let folder = try Self.scratch()
        let path = try Self.cLibrary(
            folder, name: "old",
            code: """
                #include <apus_abi.h>
                static int called = 0;
                uint32_t apus_on_abi_version(void) { return 99; }
                const apus_type_module *apus_on_module_init(const apus_type_host *host) { called = 1; return 0; }
                """)
        do {
            _ = try HandlerLibrary.load(path: path, name: "old")
            Issue.record("an ABI 99 library was loaded")
        } catch {
            #expect(error.description.contains(path))
            #expect(error.description.contains("version 99"))
            #expect(error.description.contains("version 2"))
        }
    }

    @Test func wrongStructSizeAndMissingSymbolsAreRefused() throws {
        let folder = try Self.scratch()
        let wrongSize = try Self.cLibrary(
            folder, name: "wrongsize",
            code: """
                #include <apus_abi.h>
                static void on_request(void *c, const apus_type_request *r, apus_type_responder *p) {}
                static apus_type_module module = { sizeof(apus_type_module) + 8, APUS_ABI_VERSION, 0, 0, on_request };
                uint32_t apus_on_abi_version(void) { return APUS_ABI_VERSION; }
                const apus_type_module *apus_on_module_init(const apus_type_host *host) { return &module; }
                """)
        #expect(throws: PluginError.self) { try HandlerLibrary.load(path: wrongSize, name: "wrongsize") }
        let notAModule = try Self.cLibrary(folder, name: "plain", code: "int add(int a, int b) { return a + b; }\n")
        do {
            _ = try HandlerLibrary.load(path: notAModule, name: "plain")
            Issue.record("a library without the entry points was loaded")
        } catch {
            #expect(error.description.contains("not an Apus handler library"))
        }
        #expect(throws: PluginError.self) { try HandlerLibrary.load(path: folder.appendingPathComponent("missing.so").path, name: "m") }
    }

    @Test func aCHandlerWorksThroughTheSameABI() async throws {
        let folder = try Self.scratch()
        let path = try Self.cLibrary(
            folder, name: "chello",
            code: """
                #include <apus_abi.h>
                static const apus_type_host *host_table;
                static void on_request(void *c, const apus_type_request *r, apus_type_responder *p) {
                    apus_type_header h = { { "content-type", 12 }, { "text/plain", 10 } };
                    apus_type_response resp = { sizeof(apus_type_response), 202, &h, 1, (const uint8_t *)r->path.data, r->path.length };
                    host_table->callback_respond(p, &resp);
                }
                static apus_type_module module = { sizeof(apus_type_module), APUS_ABI_VERSION, APUS_HANDLER_INLINE, 0, on_request };
                uint32_t apus_on_abi_version(void) { return APUS_ABI_VERSION; }
                const apus_type_module *apus_on_module_init(const apus_type_host *host) { host_table = host; return &module; }
                """)
        let library = try HandlerLibrary.load(path: path, name: "chello")
        let response = await Self.call(library, Self.request(path: "/from/c"))
        #expect(response.status == 202)
        #expect(String(decoding: response.body, as: UTF8.self) == "/from/c")
    }
}
