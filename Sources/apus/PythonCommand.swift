import ApusCompiler
import ApusSystem
import ArgumentParser
import FoundationEssentials

/// `apus python …`: what the `apus` Python package calls to turn a Swift file into an extension module.
struct PythonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "python",
        abstract: "Build Swift files into Python extension modules (used by the `apus` Python package).",
        subcommands: [PythonBuild.self]
    )
}

struct PythonBuild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Compile a Swift file that declares `let python = PythonExports { … }` into a CPython extension module.",
        discussion: """
            Prints one JSON line: {"path": …, "cached": …, "seconds": …}. The build is cached by the hash of the \
            source, the SDK, the compiler and the Python headers; it links the same cached SDK library as the \
            gateway's handlers. Exit status 1: the file does not compile (the compiler's messages, with file:line, \
            on stderr); 3: no Swift compiler, SDK or Python headers.
            """
    )

    @Argument(help: "The Swift file.")
    var file: String

    @Option(help: "The folder holding the interpreter's Python.h (sysconfig.get_paths()['include']).")
    var pythonInclude: String

    @Option(help: "The interpreter's extension suffix (sysconfig.get_config_var('EXT_SUFFIX')).")
    var extensionSuffix: String

    @Option(help: "The build cache (shared with the gateway's `[handlers] cache`).")
    var cache: String

    @Flag(help: "Compile with -Onone: faster builds, slower code.")
    var debug = false

    func run() async throws {
        let logger = bootstrapLogging("warning")
        let source = URL(fileURLWithPath: file).standardizedFileURL.path
        do {
            try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
            let compiler = HandlerCompiler(
                configuration: .init(cacheDirectory: URL(fileURLWithPath: cache).standardizedFileURL.path, optimize: !debug),
                sdk: try HandlerSDK.locate(), logger: logger)
            let module = try await compiler.compilePythonModule(
                source: source, target: PythonTarget(includeDirectory: pythonInclude, extensionSuffix: extensionSuffix))
            struct Reply: Encodable {
                let path: String, cached: Bool, seconds: Double, hash: String
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let json = try encoder.encode(Reply(path: module.path, cached: module.fromCache, seconds: module.duration, hash: module.hash))
            print(String(decoding: json, as: UTF8.self))
        } catch let error as CompileError {
            writeStandardError("\(error.description)\n")
            throw ExitCode(error.isMissingToolchain ? 3 : 1)
        } catch {
            throw fail(error)
        }
    }
}
