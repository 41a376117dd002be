import FoundationEssentials

/// Where the handler SDK sources live, so `apus` can compile handlers from any
/// working directory. The layout is the same in a checkout (`<repo>/Sources`)
/// and in an install (`<prefix>/share/apus/sdk`):
///
///     ApusSDK/*.swift               the SDK, built once into a cached library
///     ApusSDK/Entry/Exports.swift   the two C entry points, compiled with each handler
///     CApusABI/include/apus_abi.h   the ABI header and its module map
public struct HandlerSDK: Sendable {
    /// The folder holding `ApusSDK/` and `CApusABI/`.
    public let root: String

    /// The environment variable that points at an SDK folder explicitly.
    public static let environmentKey = "APUS_SDK_DIR"

    /// The SDK library's Swift sources, sorted for a stable hash.
    public var swiftSources: [String] {
        let sdk = "\(root)/ApusSDK"
        return ((try? FileManager.default.contentsOfDirectory(atPath: sdk)) ?? [])
            .filter { $0.hasSuffix(".swift") }.sorted().map { "\(sdk)/\($0)" }
    }

    /// The entry-point file compiled together with each handler.
    public var entrySource: String { "\(root)/ApusSDK/Entry/Exports.swift" }

    /// The CPython bridge (module `ApusPython`), built once per SDK and Python version.
    public var pythonBridgeSources: [String] {
        let folder = "\(root)/ApusSDK/Python"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
            .filter { $0.hasSuffix(".swift") }.sorted().map { "\(folder)/\($0)" }
    }

    /// The folder holding the CPython shim header and its module map (`import CApusPython`).
    public var pythonShimDirectory: String { "\(root)/ApusSDK/Python/CApusPython" }

    /// The ABI header and module map, part of every cache key.
    public var abiFiles: [String] { ["\(abiIncludeDirectory)/apus_abi.h", "\(abiIncludeDirectory)/module.modulemap"] }

    /// The folder passed to the compiler with `-I` for `import CApusABI`.
    public var abiIncludeDirectory: String { "\(root)/CApusABI/include" }

    /// Creates an SDK handle for a known folder.
    public init(root: String) { self.root = root }

    /// Finds the SDK: `$APUS_SDK_DIR`, then upwards from the executable's folder
    /// (a checkout's `Sources/`, an install's `share/apus/sdk`).
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws(CompileError) -> HandlerSDK {
        var searched: [String] = []
        if let explicit = environment[environmentKey] {
            if isSDK(explicit) { return HandlerSDK(root: explicit) }
            searched.append(explicit)
        }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let fromProc = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")).map(URL.init(fileURLWithPath:))
        for start in [fromProc, executable].compactMap({ $0?.deletingLastPathComponent() }) {
            var directory = start
            while directory.path != "/" {
                for candidate in ["\(directory.path)/Sources", "\(directory.path)/share/apus/sdk"] {
                    if isSDK(candidate) { return HandlerSDK(root: candidate) }
                }
                searched.append(directory.path)
                directory = directory.deletingLastPathComponent()
            }
        }
        throw .noSDK(Array(Set(searched)).sorted().prefix(4).map { $0 })
    }

    private static func isSDK(_ root: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(root)/ApusSDK/Entry/Exports.swift")
            && FileManager.default.fileExists(atPath: "\(root)/CApusABI/include/apus_abi.h")
    }
}
