/// A problem with a config file, naming the file, the line (where it can be
/// found) and the key, with a message the user can act on.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    /// The config file.
    public let file: String
    /// The 1-based line, when known.
    public let line: Int?
    /// The dotted key, e.g. `server.listen` or `route[2].handler`; empty for syntax errors.
    public let key: String
    /// What is wrong and, where possible, what would be right.
    public let message: String

    public init(file: String, line: Int?, key: String, message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    public var description: String {
        let place = line.map { "\(file):\($0)" } ?? file
        return key.isEmpty ? "\(place): \(message)" : "\(place): \(key): \(message)"
    }
}
