/// Why a handler library could not be loaded. The message names the file and,
/// for version problems, both versions.
public struct PluginError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable { case open, notAModule, version, layout }
    private let code: Code
    /// What went wrong, for the user.
    public let description: String

    static func open(_ path: String, _ reason: String) -> PluginError {
        PluginError(code: .open, description: "cannot load handler library \(path): \(reason)")
    }
    static func notAModule(_ path: String, missing symbol: String) -> PluginError {
        PluginError(
            code: .notAModule,
            description: "\(path) is not an Apus handler library: it does not export \(symbol)"
        )
    }
    static func version(_ path: String, module: UInt32, host: UInt32) -> PluginError {
        PluginError(
            code: .version,
            description: "\(path) was built for Apus handler ABI version \(module), but this gateway speaks version \(host); rebuild the handler"
        )
    }
    static func layout(_ path: String, _ detail: String) -> PluginError {
        PluginError(code: .layout, description: "\(path) does not match this gateway's handler ABI: \(detail); rebuild the handler")
    }
}
