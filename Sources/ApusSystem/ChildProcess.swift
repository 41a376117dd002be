#if canImport(Glibc)
    import Glibc
#endif

/// A child started with posix_spawn, with every signal unblocked and at its
/// default disposition. Foundation's `Process` passes on the spawning thread's
/// signal mask, and the gateway's threads block SIGTERM/SIGINT (ServiceLifecycle
/// handles them): a backend started that way never sees the SIGTERM meant to
/// stop it.
public struct ChildProcess: Sendable {
    /// The child's process id.
    public let pid: pid_t

    /// Starts `argv[0]` (an absolute path) in `directory` with `environment`,
    /// writing its stdout and stderr into the given descriptors.
    public static func spawn(
        executable: String, arguments: [String], directory: String, environment: [String: String], stdout: Int32, stderr: Int32
    ) throws(SystemError) -> ChildProcess {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        // glibc has had posix_spawn_file_actions_addchdir_np since 2.29; Swift's Glibc module does not show it.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else {
            throw SystemError(description: "this C library cannot set a child's working directory (glibc 2.29 or newer needed)")
        }
        typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
        _ = unsafeBitCast(symbol, to: AddChdir.self)(&actions, directory)
        // Not every descriptor the gateway opens is close-on-exec (listening sockets among them):
        // a backend must not inherit them, or it would keep our ports bound after we exit.
        if let closeFrom = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
            _ = unsafeBitCast(closeFrom, to: AddCloseFrom.self)(&actions, 3)
        }

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid = pid_t()
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw SystemError(description: "cannot start \(executable): \(systemErrorText(result))")
        }
        return ChildProcess(pid: pid)
    }

    /// Waits for the child to exit, on a thread of its own; returns the exit status
    /// (or 128 + the signal number, as shells report it).
    public func wait() async -> Int32 {
        await withCheckedContinuation { continuation in
            let pid = self.pid
            detachThread {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let signal = status & 0x7F
                continuation.resume(returning: signal == 0 ? (status >> 8) & 0xFF : 128 + signal)
            }
        }
    }

    /// Whether the child is still running (not yet reaped).
    public var isRunning: Bool { kill(pid, 0) == 0 }
}

/// A system call that failed (a program that could not be started, a file that could
/// not be written), with what and why.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, for the user.
    public let description: String
}

/// Runs `body` on a new detached thread: for the few blocking loops that must not hold
/// an event loop or a Swift concurrency thread (waiting for a child, reading its output,
/// watching files).
public func detachThread(_ body: @escaping @Sendable () -> Void) {
    final class Work {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let work = Unmanaged.passRetained(Work(body)).toOpaque()
    let result = pthread_create(&thread, nil, { raw in
        Unmanaged<Work>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, work)
    precondition(result == 0, "cannot start a thread: \(systemErrorText(result))")
    pthread_detach(thread)
}
