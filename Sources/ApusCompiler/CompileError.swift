/// Why a handler could not be built. `description` carries the compiler's own
/// messages, with `file:line:column` for each problem.
public struct CompileError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable { case noCompiler, noSDK, failed, io }
    private let code: Code
    public let description: String

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
    public static func io(_ detail: String) -> CompileError {
        CompileError(code: .io, description: detail)
    }
}
