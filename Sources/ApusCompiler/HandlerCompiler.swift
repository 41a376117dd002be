import Crypto
import Foundation
import Logging

/// A handler library ready to load.
public struct CompiledHandler: Sendable {
    /// The handler's name (its file name without `.swift`).
    public let name: String
    /// The source file.
    public let source: String
    /// The compiled library; a new build always gets a new file name, so a
    /// hot swap never asks `dlopen` for a path it has already loaded.
    public let libraryPath: String
    /// The cache key: a hash of the source, the SDK, the compiler and the flags.
    public let hash: String
    /// Whether the library came from the cache.
    public let fromCache: Bool
    /// Seconds spent (compiling, or checking the cache).
    public let duration: Double
}

/// Compiles single-file handlers with the toolchain's `swiftc`, together with the
/// SDK, into a cache keyed by a hash of everything that goes into the build.
/// No Package.swift, no manual step; an unchanged handler is never recompiled.
public actor HandlerCompiler {
    /// Build settings.
    public struct Configuration: Sendable {
        /// Where libraries are cached.
        public var cacheDirectory: String
        /// `-O` when true, `-Onone` (faster builds) when false.
        public var optimize: Bool
        /// The compiler; looked up on PATH when nil.
        public var swiftc: String?

        public init(cacheDirectory: String, optimize: Bool = true, swiftc: String? = nil) {
            self.cacheDirectory = cacheDirectory
            self.optimize = optimize
            self.swiftc = swiftc
        }
    }

    private let configuration: Configuration
    private let sdk: HandlerSDK
    private let logger: Logger
    private var toolchain: (path: String, version: String)?

    public init(configuration: Configuration, sdk: HandlerSDK, logger: Logger = Logger(label: "apus.compiler")) {
        self.configuration = configuration
        self.sdk = sdk
        self.logger = logger
    }

    /// The compiler's path and `--version` line, found once.
    private func resolveToolchain() async throws(CompileError) -> (path: String, version: String) {
        if let toolchain { return toolchain }
        let path: String
        if let configured = configuration.swiftc {
            path = configured.contains("/") ? configured : (findOnPath(configured) ?? configured)
        } else if let found = findOnPath("swiftc") {
            path = found
        } else {
            throw .noCompiler("swiftc is not on PATH")
        }
        guard FileManager.default.isExecutableFile(atPath: path) else { throw .noCompiler("\(path) is not executable") }
        let result: ProcessResult
        do {
            result = try await runProcess(path, ["--version"])
        } catch {
            throw .noCompiler("\(path) --version failed: \(error)")
        }
        guard result.status == 0 else { throw .noCompiler("\(path) --version exited \(result.status)") }
        let found = (path, result.output.split(separator: "\n").first.map(String.init) ?? "unknown")
        toolchain = found
        return found
    }

    private var flags: [String] {
        ["-emit-library", "-parse-as-library", "-swift-version", "6", configuration.optimize ? "-O" : "-Onone"]
    }

    /// The cache key for a handler source as it is now.
    public func cacheKey(source: String) async throws(CompileError) -> String {
        let toolchain = try await resolveToolchain()
        var hasher = SHA256()
        hasher.update(data: Data(toolchain.version.utf8))
        hasher.update(data: Data(flags.joined(separator: " ").utf8))
        for file in sdk.swiftSources + ["\(sdk.abiIncludeDirectory)/apus_abi.h", "\(sdk.abiIncludeDirectory)/module.modulemap"] {
            guard let contents = FileManager.default.contents(atPath: file) else { throw .io("cannot read SDK file \(file)") }
            hasher.update(data: Data(URL(fileURLWithPath: file).lastPathComponent.utf8))
            hasher.update(data: contents)
        }
        guard let contents = FileManager.default.contents(atPath: source) else { throw .io("cannot read handler source \(source)") }
        hasher.update(data: contents)
        return hasher.finalize().prefix(12).map { String(format: "%02x", $0) }.joined()
    }

    /// Builds a handler, or returns the cached library when nothing changed.
    public func compile(name: String, source: String) async throws(CompileError) -> CompiledHandler {
        let started = ContinuousClock.now
        let toolchain = try await resolveToolchain()
        let hash = try await cacheKey(source: source)
        let library = "\(configuration.cacheDirectory)/\(name)-\(hash).so"
        func elapsed() -> Double {
            let duration = ContinuousClock.now - started
            return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        if FileManager.default.fileExists(atPath: library) {
            return CompiledHandler(name: name, source: source, libraryPath: library, hash: hash, fromCache: true, duration: elapsed())
        }
        do {
            try FileManager.default.createDirectory(atPath: configuration.cacheDirectory, withIntermediateDirectories: true)
        } catch {
            throw .io("cannot create handler cache \(configuration.cacheDirectory): \(error.localizedDescription)")
        }
        // Build under a temporary name and rename, so a crash never leaves a half-written library in the cache.
        let temporary = "\(configuration.cacheDirectory)/.\(name)-\(hash)-\(UUID().uuidString.prefix(8)).so"
        let moduleName = "apus_handler_" + name.replacingOccurrences(of: "-", with: "_")
        let arguments =
            flags + ["-module-name", moduleName, "-I", sdk.abiIncludeDirectory] + sdk.swiftSources + [source, "-o", temporary]
        logger.info("compiling handler", metadata: ["handler.name": "\(name)", "handler.source": "\(source)"])
        let result: ProcessResult
        do {
            result = try await runProcess(toolchain.path, arguments)
        } catch {
            throw .noCompiler("cannot run \(toolchain.path): \(error)")
        }
        guard result.status == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw .failed(handler: name, source: source, output: result.output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        do {
            try FileManager.default.moveItem(atPath: temporary, toPath: library)
        } catch {
            // Another apus built the same hash at the same time: theirs is as good as ours.
            try? FileManager.default.removeItem(atPath: temporary)
            guard FileManager.default.fileExists(atPath: library) else {
                throw .io("cannot store \(library): \(error.localizedDescription)")
            }
        }
        let compiled = CompiledHandler(name: name, source: source, libraryPath: library, hash: hash, fromCache: false, duration: elapsed())
        logger.info(
            "compiled handler",
            metadata: ["handler.name": "\(name)", "handler.seconds": "\(String(format: "%.2f", compiled.duration))"]
        )
        return compiled
    }
}
