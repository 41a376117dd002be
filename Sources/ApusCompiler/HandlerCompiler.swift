import ApusSystem
import CoreMetrics
import Crypto
import FoundationEssentials
import Logging

/// A handler library ready to load.
public struct CompiledHandler: Sendable {
    /// The handler's name (its file name without `.swift`).
    public let name: String
    /// The source file.
    public let source: String
    /// The compiled library; a new build always gets a new file name (and a new
    /// module name), so a hot swap never asks `dlopen` for a path it has already
    /// loaded and two generations never share type names.
    public let libraryPath: String
    /// The cache key: a hash of the source, the SDK, the compiler and the flags.
    public let hash: String
    /// Whether the library came from the cache.
    public let fromCache: Bool
    /// Seconds spent (compiling, or checking the cache).
    public let duration: Double
    /// The SDK library folder the handler links against (`$ORIGIN/sdk-<key>`).
    public let sdkDirectory: String

    /// Describes a built handler (the compiler and `PrebuiltHandlers` make these).
    public init(
        name: String, source: String, libraryPath: String, hash: String, fromCache: Bool, duration: Double, sdkDirectory: String
    ) {
        self.name = name
        self.source = source
        self.libraryPath = libraryPath
        self.hash = hash
        self.fromCache = fromCache
        self.duration = duration
        self.sdkDirectory = sdkDirectory
    }
}

/// Compiles single-file handlers with the toolchain's `swiftc` into a cache keyed
/// by a hash of everything that goes into the build. No Package.swift, no manual
/// step; an unchanged handler is never recompiled.
///
/// The SDK is built once per toolchain and SDK version into a shared library in
/// the cache (`sdk-<hash>/libApusSDK_<hash>.so`, always optimised); a handler
/// build then compiles only the user's file and the two entry points against
/// it, which takes a fraction of a second. The hot JSON writer is `@inlinable`,
/// so handlers still get it specialised.
public actor HandlerCompiler {
    /// Build settings.
    public struct Configuration: Sendable {
        /// Where libraries are cached.
        public var cacheDirectory: String
        /// `-O` when true, `-Onone` (faster builds) when false, for handler code.
        public var optimize: Bool
        /// The compiler; looked up on PATH when nil.
        public var swiftc: String?

        public init(cacheDirectory: String, optimize: Bool = true, swiftc: String? = nil) {
            self.cacheDirectory = cacheDirectory
            self.optimize = optimize
            self.swiftc = swiftc
        }
    }

    /// The prebuilt SDK library and module handlers link against.
    struct SDKBuild: Sendable {
        let key: String
        let directory: String
        var libraryName: String { "ApusSDK_\(key)" }
    }

    let configuration: Configuration
    let sdk: HandlerSDK
    let logger: Logger
    private var toolchain: (path: String, version: String)?
    private var sdkBuild: Task<SDKBuild, any Error>?

    public init(configuration: Configuration, sdk: HandlerSDK, logger: Logger = Logger(label: "apus.compiler")) {
        self.configuration = configuration
        self.sdk = sdk
        self.logger = logger
    }

    /// The compiler's path and `--version` line, found once.
    func resolveToolchain() async throws(CompileError) -> (path: String, version: String) {
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
        // `swiftc --version` costs a process start on every gateway start; the answer only changes
        // with the binary, so it is kept in the cache next to the binary's identity.
        let attributes = try? FileManager.default.attributesOfItem(atPath: URL(fileURLWithPath: path).resolvingSymlinksInPath().path)
        let identity = "\(path)|\((attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)|\(attributes?[.size] ?? 0)"
        let remembered = "\(configuration.cacheDirectory)/toolchain.txt"
        if let text = try? String(contentsOfFile: remembered, encoding: .utf8) {
            let lines = text.split(separator: "\n", maxSplits: 1).map(String.init)
            if lines.count == 2, lines[0] == identity {
                toolchain = (path, lines[1])
                return (path, lines[1])
            }
        }
        let result: ProgramResult
        do {
            result = try await runProgram(path, ["--version"])
        } catch {
            throw .noCompiler("\(path) --version failed: \(error)")
        }
        guard result.status == 0 else { throw .noCompiler("\(path) --version exited \(result.status)") }
        let found = (path, result.output.split(separator: "\n").first.map(String.init) ?? "unknown")
        toolchain = found
        try? FileManager.default.createDirectory(atPath: configuration.cacheDirectory, withIntermediateDirectories: true)
        try? "\(identity)\n\(found.1)".write(toFile: remembered, atomically: true, encoding: .utf8)
        return found
    }

    static let commonFlags = ["-emit-library", "-parse-as-library", "-swift-version", "6"]

    var handlerFlags: [String] { Self.commonFlags + [configuration.optimize ? "-O" : "-Onone"] }

    func hash(_ parts: [Data], files: [String]) throws(CompileError) -> String {
        var hasher = SHA256()
        for part in parts { hasher.update(data: part) }
        for file in files {
            guard let contents = FileManager.default.contents(atPath: file) else { throw .io("cannot read \(file)") }
            hasher.update(data: Data(URL(fileURLWithPath: file).lastPathComponent.utf8))
            hasher.update(data: contents)
        }
        return hasher.finalize().prefix(12).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// Builds the SDK library once (per toolchain and SDK contents); concurrent callers share the build.
    func sdkLibrary() async throws(CompileError) -> SDKBuild {
        if let sdkBuild {
            do {
                return try await sdkBuild.value
            } catch {
                throw error as? CompileError ?? .io("\(error)")
            }
        }
        let task = Task { () async throws -> SDKBuild in try await self.buildSDK() }
        sdkBuild = task
        do {
            return try await task.value
        } catch {
            sdkBuild = nil
            throw error as? CompileError ?? .io("\(error)")
        }
    }

    private func buildSDK() async throws(CompileError) -> SDKBuild {
        let toolchain = try await resolveToolchain()
        let key = try hash([Data(toolchain.version.utf8), Data(Self.commonFlags.joined().utf8)], files: sdk.swiftSources + sdk.abiFiles)
        let build = SDKBuild(key: key, directory: "\(configuration.cacheDirectory)/sdk-\(key)")
        let library = "\(build.directory)/lib\(build.libraryName).so"
        if FileManager.default.fileExists(atPath: library) { return build }
        logger.info("building the handler SDK (once per toolchain)", metadata: ["sdk.key": "\(key)"])
        let started = ContinuousClock.now
        try await storeBuild(in: build.directory, product: library) { staging throws(CompileError) in
            let arguments =
                Self.commonFlags + [
                    "-O", "-module-name", "ApusSDK", "-emit-module", "-emit-module-path", "\(staging)/ApusSDK.swiftmodule",
                    "-I", sdk.abiIncludeDirectory, "-Xlinker", "-soname=lib\(build.libraryName).so",
                ] + sdk.swiftSources + ["-o", "\(staging)/lib\(build.libraryName).so"]
            let result = try await runCompiler(toolchain, arguments)
            guard result.status == 0 else { throw .failed(handler: "ApusSDK", source: sdk.root, output: result.output) }
        }
        logger.info("built the handler SDK", metadata: ["sdk.seconds": "\(seconds(since: started).formatted(places: 2))"])
        return build
    }

    /// Runs the compiler; one that cannot be started at all is a missing toolchain.
    func runCompiler(_ toolchain: (path: String, version: String), _ arguments: [String]) async throws(CompileError) -> ProgramResult {
        do {
            return try await runProgram(toolchain.path, arguments)
        } catch {
            throw .noCompiler("cannot run \(toolchain.path): \(error)")
        }
    }

    /// Builds into a fresh staging folder beside `directory`, then renames it into place, so
    /// a crash never leaves a half-built folder in the cache. When another apus stored the
    /// same build first (the rename fails but `product` is there), theirs is as good as ours.
    func storeBuild(
        in directory: String, product: String, _ build: (_ staging: String) async throws(CompileError) -> Void
    ) async throws(CompileError) {
        let folder = URL(fileURLWithPath: directory)
        let staging = folder.deletingLastPathComponent().appendingPathComponent(".\(folder.lastPathComponent)-\(UUID().uuidString.prefix(8))").path
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        } catch {
            throw .io("cannot create handler cache \(configuration.cacheDirectory): \(describe(error))")
        }
        do {
            try await build(staging)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        do {
            try FileManager.default.moveItem(atPath: staging, toPath: directory)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            guard FileManager.default.fileExists(atPath: product) else {
                throw .io("cannot store \(directory): \(describe(error))")
            }
        }
    }

    /// The cache key for a handler source as it is now.
    public func cacheKey(source: String) async throws(CompileError) -> String {
        let toolchain = try await resolveToolchain()
        let sdkBuild = try await sdkLibrary()
        return try hash(
            [Data(toolchain.version.utf8), Data(handlerFlags.joined(separator: " ").utf8), Data(sdkBuild.key.utf8)],
            files: [sdk.entrySource, source])
    }

    /// Builds a handler, or returns the cached library when nothing changed.
    /// `source` is a single `.swift` file or a package handler's folder.
    public func compile(name: String, source: String) async throws(CompileError) -> CompiledHandler {
        if !source.hasSuffix(".swift") { return try await compilePackage(name: name, directory: source) }
        let started = ContinuousClock.now
        let toolchain = try await resolveToolchain()
        let sdkBuild = try await sdkLibrary()
        let hash = try await cacheKey(source: source)
        let library = "\(configuration.cacheDirectory)/\(name)-\(hash).so"
        if FileManager.default.fileExists(atPath: library) {
            return CompiledHandler(
                name: name, source: source, libraryPath: library, hash: hash, fromCache: true, duration: seconds(since: started),
                sdkDirectory: sdkBuild.directory)
        }
        // Build under a temporary name and rename, so a crash never leaves a half-written library in the cache.
        let temporary = "\(configuration.cacheDirectory)/.\(name)-\(hash)-\(UUID().uuidString.prefix(8)).so"
        // A module name per build: two generations of one handler never share type names.
        let moduleName = "apus_handler_\(name.replacing("-", with: "_"))_\(hash)"
        let arguments =
            handlerFlags + [
                "-module-name", moduleName, "-I", sdkBuild.directory, "-I", sdk.abiIncludeDirectory,
                "-L", sdkBuild.directory, "-l\(sdkBuild.libraryName)",
                "-Xlinker", "-rpath", "-Xlinker", "$ORIGIN/sdk-\(sdkBuild.key)",
                // The handler file needs no `import ApusSDK`: it holds only the user's code.
                "-Xfrontend", "-import-module", "-Xfrontend", "ApusSDK",
                sdk.entrySource, source, "-o", temporary,
            ]
        logger.info("compiling handler", metadata: ["handler.name": "\(name)", "handler.source": "\(source)"])
        let result = try await runCompiler(toolchain, arguments)
        Timer(label: "apus_handler_compile_seconds", dimensions: [("handler", name)]).recordSeconds(seconds(since: started))
        guard result.status == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            Counter(label: "apus_handler_compile_failures_total", dimensions: [("handler", name)]).increment()
            throw .failed(handler: name, source: source, output: result.output.trimmed)
        }
        do {
            try FileManager.default.moveItem(atPath: temporary, toPath: library)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            guard FileManager.default.fileExists(atPath: library) else {
                throw .io("cannot store \(library): \(describe(error))")
            }
        }
        let compiled = CompiledHandler(
            name: name, source: source, libraryPath: library, hash: hash, fromCache: false, duration: seconds(since: started),
            sdkDirectory: sdkBuild.directory)
        logger.info(
            "compiled handler",
            metadata: ["handler.name": "\(name)", "handler.seconds": "\(compiled.duration.formatted(places: 2))"])
        return compiled
    }
}

extension HandlerCompiler {
    /// A package handler: a folder with its own Package.swift (for dependencies),
    /// built with `swift build` into a dynamic library. Its Package.swift finds the
    /// SDK package through the `APUS_SDK_PACKAGE` environment variable, which
    /// points at a copy of the SDK sources the compiler keeps in the cache.
    func compilePackage(name: String, directory: String) async throws(CompileError) -> CompiledHandler {
        let started = ContinuousClock.now
        let toolchain = try await resolveToolchain()
        let sdkBuild = try await sdkLibrary()
        let files = Self.packageFiles(directory)
        let hash = try hash(
            [Data(toolchain.version.utf8), Data("package".utf8), Data(sdkBuild.key.utf8)] + files.map { Data($0.utf8) }, files: files)
        let library = "\(configuration.cacheDirectory)/\(name)-\(hash).so"
        if FileManager.default.fileExists(atPath: library) {
            return CompiledHandler(
                name: name, source: directory, libraryPath: library, hash: hash, fromCache: true, duration: seconds(since: started),
                sdkDirectory: sdkBuild.directory)
        }
        let sdkPackage = try sdkPackageFolder(key: sdkBuild.key)
        let swift = URL(fileURLWithPath: toolchain.path).deletingLastPathComponent().appendingPathComponent("swift").path
        let scratch = "\(configuration.cacheDirectory)/package-build-\(name)"
        let product = name.replacing("-", with: "_")
        logger.info("building package handler", metadata: ["handler.name": "\(name)", "handler.source": "\(directory)"])
        let result: ProgramResult
        do {
            result = try await runProgram(
                "/usr/bin/env",
                ["APUS_SDK_PACKAGE=\(sdkPackage)", swift, "build", "-c", configuration.optimize ? "release" : "debug",
                    "--product", product, "--package-path", directory, "--scratch-path", scratch])
        } catch {
            throw .noCompiler("cannot run \(swift) build: \(error)")
        }
        Timer(label: "apus_handler_compile_seconds", dimensions: [("handler", name)]).recordSeconds(seconds(since: started))
        guard result.status == 0 else {
            Counter(label: "apus_handler_compile_failures_total", dimensions: [("handler", name)]).increment()
            throw .failed(handler: name, source: directory, output: result.output.trimmed)
        }
        let built = "\(scratch)/\(configuration.optimize ? "release" : "debug")/lib\(product).so"
        do {
            let temporary = "\(configuration.cacheDirectory)/.\(name)-\(hash)-\(UUID().uuidString.prefix(8)).so"
            try FileManager.default.copyItem(atPath: built, toPath: temporary)
            try FileManager.default.moveItem(atPath: temporary, toPath: library)
        } catch {
            guard FileManager.default.fileExists(atPath: library) else {
                throw .io("package \(directory) built, but \(built) could not be stored: \(describe(error)) (does Package.swift declare .library(name: \"\(product)\", type: .dynamic, …)?)")
            }
        }
        let compiled = CompiledHandler(
            name: name, source: directory, libraryPath: library, hash: hash, fromCache: false, duration: seconds(since: started),
            sdkDirectory: sdkBuild.directory)
        logger.info("built package handler", metadata: ["handler.name": "\(name)", "handler.seconds": "\(compiled.duration.formatted(places: 2))"])
        return compiled
    }

    /// The files that make up a package's build, sorted; build products and hidden folders excluded.
    static func packageFiles(_ directory: String) -> [String] {
        var files: [String] = []
        var pending = [directory]
        while let folder = pending.popLast() {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where !name.hasPrefix(".") {
                let path = "\(folder)/\(name)"
                var isDirectory = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
                if isDirectory { pending.append(path) } else { files.append(path) }
            }
        }
        return files.sorted()
    }

    /// A package wrapping the SDK sources, for package handlers to depend on.
    private func sdkPackageFolder(key: String) throws(CompileError) -> String {
        let folder = "\(configuration.cacheDirectory)/sdk-package-\(key)"
        if FileManager.default.fileExists(atPath: "\(folder)/Package.swift") { return folder }
        let staging = "\(configuration.cacheDirectory)/.sdk-package-\(key)-\(UUID().uuidString.prefix(8))"
        do {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "\(sdk.root)/ApusSDK", toPath: "\(staging)/ApusSDK")
            try FileManager.default.copyItem(atPath: "\(sdk.root)/CApusABI", toPath: "\(staging)/CApusABI")
            let manifest = """
                // swift-tools-version:6.0
                // Generated by apus: the handler SDK, for package handlers to depend on.
                import PackageDescription

                let package = Package(
                    name: "apus-sdk",
                    products: [.library(name: "ApusSDK", targets: ["ApusSDK", "CApusABI"])],
                    targets: [
                        .target(name: "CApusABI", path: "CApusABI"),
                        .target(name: "ApusSDK", dependencies: ["CApusABI"], path: "ApusSDK", exclude: ["Entry", "Python"]),
                    ]
                )

                """
            try manifest.write(toFile: "\(staging)/Package.swift", atomically: true, encoding: .utf8)
            try FileManager.default.moveItem(atPath: staging, toPath: folder)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            guard FileManager.default.fileExists(atPath: "\(folder)/Package.swift") else {
                throw .io("cannot write the SDK package to \(folder): \(describe(error))")
            }
        }
        return folder
    }
}
