/// Why a handler could not be built. `description` carries the compiler's own
/// messages, with `file:line:column` for each problem.
public struct CompileError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable { case noCompiler, noSDK, failed, io }
    private let code: Code
    public let description: String

    /// True when the toolchain (or the SDK) is missing rather than the code being wrong.
    public var isMissingToolchain: Bool { code == .noCompiler || code == .noSDK }

    static func noCompiler(_ detail: String) -> CompileError {
        CompileError(code: .noCompiler, description: "no Swift compiler found (\(detail)); install a Swift toolchain or set [handlers] swiftc")
    }
    static func noSDK(_ searched: [String]) -> CompileError {
        CompileError(
            code: .noSDK,
            description: "cannot find the Apus handler SDK (looked in \(searched.joined(separator: ", "))); set APUS_SDK_DIR"
        )
    }
    static func failed(handler: String, source: String, output: String) -> CompileError {
        CompileError(code: .failed, description: "handler \"\(handler)\" (\(source)) failed to compile:\n\(output)")
    }
    static func noPythonHeaders(_ folder: String) -> CompileError {
        CompileError(
            code: .noCompiler,
            description: "no Python.h in \(folder): install the interpreter's development headers (Debian: apt-get install python3-dev)")
    }
    static func failed(pythonModule: String, source: String, output: String) -> CompileError {
        CompileError(code: .failed, description: "\(source) failed to compile as Python module \(pythonModule):\n\(output)")
    }
    public static func invalid(_ detail: String) -> CompileError {
        CompileError(code: .failed, description: detail)
    }
    public static func io(_ detail: String) -> CompileError {
        CompileError(code: .io, description: detail)
    }
}
