#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The process's memory, as the kernel counts it and as the C allocator holds it.
public enum ProcessMemory {
    /// Resident set size in bytes (`/proc/self/statm`); nil where there is no procfs.
    public static func residentBytes() -> Int? {
        let descriptor = open("/proc/self/statm", O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        // "size resident shared text lib data dt", in pages.
        let fields = buffer[..<count].split(separator: UInt8(ascii: " "))
        guard fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// glibc's `malloc_trim`, looked up at run time: the Glibc module does not import
    /// `malloc.h`, and other C libraries (musl) have no such call.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()

    /// Hands back to the system the memory the C allocator keeps after frees: after a
    /// burst of load glibc holds freed chunks in each thread's arena for reuse, and an
    /// idle process need not. It takes the arenas' locks while it walks them, so call
    /// it when the process is quiet and not from an event loop. False where the C
    /// library has no such call.
    @discardableResult
    public static func releaseFreedMemory() -> Bool {
        guard let mallocTrim else { return false }
        _ = mallocTrim(0)
        return true
    }
}
