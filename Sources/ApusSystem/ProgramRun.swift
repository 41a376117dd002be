import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// The result of running a program to completion.
public struct ProgramResult: Sendable {
    /// The exit status (128 + the signal number if a signal ended it).
    public let status: Int32
    /// stdout and stderr, interleaved as written.
    public let output: String
}

/// Runs a program to completion without blocking a Swift concurrency thread while
/// it runs. Output goes to a temporary file, so a chatty compiler can never fill a
/// pipe and stall.
public func runProgram(_ executable: String, _ arguments: [String], workingDirectory: String? = nil) async throws(SystemError) -> ProgramResult {
    var template = Array("\(FileManager.default.temporaryDirectory.path)/apus-run-XXXXXX".utf8CString)
    let output = mkstemp(&template)
    guard output >= 0 else { throw SystemError(description: "cannot create a file for \(executable)'s output: \(systemErrorText(errno))") }
    let outputPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    _ = fcntl(output, F_SETFD, FD_CLOEXEC)  // only the child's dup2'ed copies cross into it
    defer {
        close(output)
        unlink(outputPath)
    }
    let child = try ChildProcess.spawn(
        executable: executable, arguments: arguments, directory: workingDirectory ?? FileManager.default.currentDirectoryPath,
        environment: ProcessInfo.processInfo.environment, stdout: output, stderr: output)
    let status = await child.wait()
    let text = FileManager.default.contents(atPath: outputPath).map { String(decoding: $0, as: UTF8.self) } ?? ""
    return ProgramResult(status: status, output: text)
}

/// Finds an executable by name on `searchPath` (this process's PATH unless given);
/// relative entries count from `directory` (the working directory unless given).
public func findOnPath(_ name: String, searchPath: String? = nil, relativeTo directory: String? = nil) -> String? {
    let path = searchPath ?? ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for entry in path.split(separator: ":") {
        let candidate = entry.hasPrefix("/") || directory == nil ? "\(entry)/\(name)" : "\(directory!)/\(entry)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
