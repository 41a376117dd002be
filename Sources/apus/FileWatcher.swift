import ApusSystem
import FoundationEssentials
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Watches folders with inotify and reports changed files in debounced batches:
/// editors save through temporary files and renames, so a batch is what a save is.
/// Runs its blocking read on a thread of its own, never on an event loop.
final class FileWatcher: Sendable {
    /// Paths that changed together, and when the first of them changed.
    struct Batch: Sendable {
        var paths: Set<String> = []
        var firstChange = ContinuousClock.now
    }

    private let descriptor: Int32
    private let folders: Mutex<[Int32: String]> = Mutex([:])

    /// Folders never watched when walking a tree.
    static let skippedFolders: Set<String> = [".git", ".venv", "venv", "__pycache__", "node_modules", ".apus-cache", ".build", ".mypy_cache", ".pytest_cache"]

    init() throws {
        descriptor = inotify_init1(Int32(IN_CLOEXEC))
        guard descriptor >= 0 else { throw WatchError(description: "inotify_init1 failed: \(systemErrorText(errno))") }
    }

    /// Watches one folder (not its subfolders).
    func watch(folder: String) {
        let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM)
        let watch = inotify_add_watch(descriptor, folder, mask)
        guard watch >= 0 else { return }
        folders.withLock { $0[watch] = folder }
    }

    /// Watches a folder and its subfolders, up to `limit` folders, skipping caches and virtualenvs.
    func watch(tree root: String, limit: Int = 2000) {
        var pending = [root]
        var count = 0
        while let folder = pending.popLast(), count < limit {
            watch(folder: folder)
            count += 1
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            for name in names where !Self.skippedFolders.contains(name) && !name.hasPrefix(".") {
                var isDirectory = false
                let path = "\(folder)/\(name)"
                if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory {
                    pending.append(path)
                }
            }
        }
    }

    /// Batches of changed paths; a batch closes once the folders have been quiet
    /// for `quietMilliseconds` (the debounce), measured with poll(2) on the watcher's own thread.
    func changes(quietMilliseconds: Int32 = 40) -> AsyncStream<Batch> {
        let (batches, continuation) = AsyncStream<Batch>.makeStream()
        let descriptor = self.descriptor
        detachThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var pending = Batch()
            while true {
                var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, pending.paths.isEmpty ? -1 : quietMilliseconds)
                if ready < 0 {
                    if errno == EINTR { continue }
                    break
                }
                if ready == 0 {
                    continuation.yield(pending)
                    pending = Batch()
                    continue
                }
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                var offset = 0
                while offset + MemoryLayout<inotify_event>.size <= count {
                    let (watch, length) = buffer.withUnsafeBytes { raw -> (Int32, Int) in
                        let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                        return (event.wd, Int(event.len))
                    }
                    let nameStart = offset + MemoryLayout<inotify_event>.size
                    let nameBytes = buffer[nameStart..<(nameStart + length)].prefix { $0 != 0 }
                    if let folder = self.folders.withLock({ $0[watch] }), !nameBytes.isEmpty {
                        if pending.paths.isEmpty { pending.firstChange = .now }
                        pending.paths.insert("\(folder)/\(String(decoding: nameBytes, as: UTF8.self))")
                    }
                    offset = nameStart + length
                }
            }
            continuation.finish()
        }
        return batches
    }
}

/// inotify could not be set up.
struct WatchError: Error, CustomStringConvertible {
    let description: String
}
