import Foundation

/// The result of running a program to completion.
struct ProcessResult: Sendable {
    let status: Int32
    /// stdout and stderr, interleaved as written.
    let output: String
}

/// Runs a program without blocking a thread while it runs; output goes to a
/// temporary file so a chatty compiler can never fill a pipe and stall.
func runProcess(_ executable: String, _ arguments: [String], workingDirectory: String? = nil) async throws -> ProcessResult {
    let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("apus-\(UUID().uuidString).out")
    _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: outputURL) }
    let output = try FileHandle(forWritingTo: outputURL)
    defer { try? output.close() }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = output
    process.standardError = output
    process.standardInput = FileHandle.nullDevice
    if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: error)
        }
    }
    let text = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
    return ProcessResult(status: status, output: text)
}

/// Finds an executable by name on PATH.
func findOnPath(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
