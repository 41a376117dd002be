import ApusSystem
import CoreMetrics
import FoundationEssentials
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where the supervised backend is expected to accept connections.
public enum ReadinessProbe: Sendable {
    case unix(path: String)
    case tcp(host: String, port: Int)
}

/// Starts the Python backend from its argv, says when its socket accepts
/// connections, restarts it with backoff when it dies, forwards its output with
/// a `[backend]` prefix, and stops it (SIGTERM, then SIGKILL after a deadline)
/// on graceful shutdown. Runs as a ServiceLifecycle service, listed before the
/// server so that it stops after the server has drained.
public final class BackendSupervisor: Service, Sendable {
    /// What to run and how to watch it.
    public struct Configuration: Sendable {
        public var command: [String]
        public var directory: String
        public var environment: [String: String]
        public var probe: ReadinessProbe
        public var readyTimeout: Double
        public var stopTimeout: Double

        public init(command: [String], directory: String, environment: [String: String], probe: ReadinessProbe, readyTimeout: Double, stopTimeout: Double) {
            self.command = command
            self.directory = directory
            self.environment = environment
            self.probe = probe
            self.readyTimeout = readyTimeout
            self.stopTimeout = stopTimeout
        }
    }

    private let configuration: Configuration
    private let logger: Logger
    private let readinessChanged: @Sendable (Bool) -> Void
    /// `apus_backend_restarts_total` and `apus_backend_up` (1 while it accepts connections).
    private let restarts = Counter(label: "apus_backend_restarts_total")
    private let up = Gauge(label: "apus_backend_up")
    /// The running process (for restarts on request) and whether a restart was asked for.
    private let current = Mutex<(pid: Int32?, restartRequested: Bool)>((nil, false))

    /// Restarts the backend now (dev mode does this when Python files change):
    /// SIGTERM to the running process, then an immediate start without backoff.
    public func restart() {
        let pid = current.withLock { state -> Int32? in
            state.restartRequested = true
            return state.pid
        }
        if let pid {
            logger.info("restarting backend: source files changed", metadata: ["backend.pid": "\(pid)"])
            kill(pid, SIGTERM)
        }
    }

    /// `readinessChanged` is called with true when the backend accepts connections,
    /// false when it exits.
    public init(configuration: Configuration, logger: Logger, readinessChanged: @escaping @Sendable (Bool) -> Void) {
        self.configuration = configuration
        self.logger = logger
        let up = self.up
        self.readinessChanged = { ready in
            up.record(ready ? 1 : 0)
            readinessChanged(ready)
        }
    }

    public func run() async throws {
        var backoff = 0.5
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = ContinuousClock.now
            let process: ChildProcess
            do {
                process = try launch()
            } catch {
                logger.error("cannot start backend: \(error)", metadata: ["backend.command": "\(configuration.command.joined(separator: " "))"])
                if !(await sleepUnlessShuttingDown(seconds: backoff)) { return }
                backoff = min(backoff * 2, 10)
                continue
            }
            current.withLock { $0 = (process.pid, false) }
            logger.info("backend started", metadata: ["backend.pid": "\(process.pid)"])

            let readiness = Task { [configuration, logger, readinessChanged] in
                var deadline = ContinuousClock.now + .milliseconds(Int(configuration.readyTimeout * 1000))
                while !Task.isCancelled {
                    if canConnect(configuration.probe) {
                        logger.info("backend is ready")
                        readinessChanged(true)
                        return
                    }
                    if ContinuousClock.now > deadline {
                        logger.warning("backend did not accept connections within ready_timeout; still waiting", metadata: ["backend.ready_timeout": "\(configuration.readyTimeout)"])
                        deadline = .now + .seconds(3600)
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }

            let status = await withGracefulShutdownHandler {
                await process.wait()
            } onGracefulShutdown: { [configuration, logger] in
                Self.stop(process, timeout: configuration.stopTimeout, logger: logger)
            }
            readiness.cancel()
            readinessChanged(false)
            if Task.isShuttingDownGracefully || Task.isCancelled {
                logger.info("backend stopped", metadata: ["backend.status": "\(status)"])
                return
            }
            let requested = current.withLock { state -> Bool in
                defer { state = (nil, false) }
                return state.restartRequested
            }
            restarts.increment()
            if requested {
                backoff = 0.5
                continue
            }
            // Reset the backoff after a run that lasted; keep growing it for crash loops.
            if ContinuousClock.now - started > .seconds(30) { backoff = 0.5 }
            logger.error("backend exited; restarting", metadata: ["backend.status": "\(status)", "backend.restart_in": "\(backoff)s"])
            if !(await sleepUnlessShuttingDown(seconds: backoff)) { return }
            backoff = min(backoff * 2, 10)
        }
    }

    private func sleepUnlessShuttingDown(seconds: Double) async -> Bool {
        await cancelWhenGracefulShutdown {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
        }
        return !Task.isShuttingDownGracefully && !Task.isCancelled
    }

    private func launch() throws -> ChildProcess {
        if case .unix(let path) = configuration.probe, FileManager.default.fileExists(atPath: path), !canConnect(configuration.probe) {
            // A socket file left by a backend that died: remove it, or the new one cannot bind.
            try? FileManager.default.removeItem(atPath: path)
        }
        let program = configuration.command[0]
        let executable = program.contains("/") ? (program.hasPrefix("/") ? program : "\(configuration.directory)/\(program)") : findExecutable(program)
        guard let executable, FileManager.default.isExecutableFile(atPath: executable) else {
            throw SupervisorError(description: "backend program \"\(program)\" not found on PATH or in a .venv/bin above \(configuration.directory); activate the project's virtualenv or give a full path in [backend] command")
        }
        // The backend's stdout and stderr come through pipes, so that each of its lines can be
        // marked "[backend]". Close-on-exec: only the child's dup2'ed copies cross into it.
        var stdout: [Int32] = [-1, -1]
        var stderr: [Int32] = [-1, -1]
        guard pipe(&stdout) == 0 else { throw SupervisorError(description: "cannot make a pipe for the backend's output: \(systemErrorText(errno))") }
        guard pipe(&stderr) == 0 else {
            let reason = systemErrorText(errno)
            stdout.forEach { close($0) }
            throw SupervisorError(description: "cannot make a pipe for the backend's output: \(reason)")
        }
        for descriptor in stdout + stderr { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        let process: ChildProcess
        do {
            process = try ChildProcess.spawn(
                executable: executable, arguments: Array(configuration.command.dropFirst()), directory: configuration.directory,
                environment: ProcessInfo.processInfo.environment.merging(configuration.environment) { $1 },
                stdout: stdout[1], stderr: stderr[1])
        } catch {
            stdout.forEach { close($0) }
            stderr.forEach { close($0) }
            throw SupervisorError(description: error.description)
        }
        // The child has its copies; closing ours lets the readers see end-of-file when it exits.
        close(stdout[1])
        close(stderr[1])
        forward(stdout[0], to: 1)
        forward(stderr[0], to: 2)
        return process
    }

    /// Finds the backend program: on PATH first, then in a `.venv/bin` in the
    /// backend's folder or any folder above it, where a Python project keeps uvicorn.
    private func findExecutable(_ name: String) -> String? {
        if let found = findOnPath(name, searchPath: configuration.environment["PATH"], relativeTo: configuration.directory) { return found }
        var folder = URL(fileURLWithPath: configuration.directory).standardizedFileURL
        while true {
            let candidate = folder.appendingPathComponent(".venv/bin/\(name)").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            let parent = folder.deletingLastPathComponent()
            if parent.path == folder.path { return nil }
            folder = parent
        }
    }

    /// Copies the backend's output, line by line with a prefix, on a thread of its own;
    /// closes `source` at its end.
    private func forward(_ source: Int32, to descriptor: Int32) {
        detachThread {
            let prefix = Array("[backend] ".utf8)
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            var pending: [UInt8] = []
            func emit(_ line: ArraySlice<UInt8>, addNewline: Bool) {
                writeAll(prefix + line + (addNewline ? [UInt8(ascii: "\n")] : []), to: descriptor)
            }
            while true {
                let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                pending += buffer[..<count]
                var lineStart = 0
                while let newline = pending[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
                    emit(pending[lineStart...newline], addNewline: false)
                    lineStart = newline + 1
                }
                pending.removeFirst(lineStart)
            }
            if !pending.isEmpty { emit(pending[...], addNewline: true) }
            close(source)
        }
    }

    /// SIGTERM, then SIGKILL if the process outlives `timeout`.
    private static func stop(_ process: ChildProcess, timeout: Double, logger: Logger) {
        guard process.isRunning else { return }
        let pid = process.pid
        logger.info("stopping backend", metadata: ["backend.pid": "\(pid)"])
        kill(pid, SIGTERM)
        detachThread {
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            while process.isRunning && ContinuousClock.now < deadline { usleep(50_000) }
            if process.isRunning {
                logger.warning("backend ignored SIGTERM; sending SIGKILL", metadata: ["backend.pid": "\(pid)"])
                kill(pid, SIGKILL)
            }
        }
    }
}

/// Whether something accepts connections at the probe address (a quick local connect).
public func canConnect(_ probe: ReadinessProbe) -> Bool {
    switch probe {
    case .unix(let path):
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    case .tcp(let host, let port):
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &results) == 0, let first = results else { return false }
        defer { freeaddrinfo(results) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0
    }
}

/// Why the backend could not be started.
public struct SupervisorError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
