import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// Why a file or system call failed, as a user reads it: `No such file or directory`
/// rather than FoundationEssentials' `CocoaError(code: …, userInfo: …)`. Callers name
/// the file themselves.
public func describe(_ error: any Error) -> String {
    if let error = error as? CocoaError {
        if let posix = error.underlying as? POSIXError { return systemErrorText(posix.code.rawValue) }
        if let underlying = error.underlying { return "\(underlying)" }
        return "file error \(error.code.rawValue)"
    }
    if let error = error as? POSIXError { return systemErrorText(error.code.rawValue) }
    return "\(error)"
}

/// The C library's text for an `errno` value: `No such file or directory` for `ENOENT`.
public func systemErrorText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

extension Double {
    /// The value with exactly `places` decimals, rounded half away from zero: `1.50`
    /// for `formatted(places: 2)` (what `String(format: "%.2f")` wrote).
    public func formatted(places: Int) -> String {
        guard isFinite else { return "\(self)" }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = (magnitude * scale).rounded()
        guard scaled < 9e15 else { return "\(self)" }
        let units = Int(scaled)
        let divisor = Int(scale)
        let whole = "\(sign == .minus && units != 0 ? "-" : "")\(units / divisor)"
        guard places > 0 else { return whole }
        let fraction = String(units % divisor)
        return whole + "." + String(repeating: "0", count: places - fraction.count) + fraction
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs and line breaks.
    public var trimmed: String { trimming(" \t\n\r") }

    /// The text without leading and trailing characters found in `characters`.
    public func trimming(_ characters: String) -> String {
        var slice = self[...]
        while let first = slice.first, characters.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, characters.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}

/// Seconds since `start`, for the durations the gateway logs and reports.
public func seconds(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Writes all of `bytes` to `descriptor`, again after a signal interrupts; false if the
/// descriptor refused them (`errno` says why).
@discardableResult
public func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> Bool {
    var rest = bytes[...]
    while !rest.isEmpty {
        let written = rest.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return false }
        rest = rest.dropFirst(written)
    }
    return true
}

/// Writes `text` to standard error, unbuffered (the messages a command ends with).
public func writeStandardError(_ text: String) {
    writeAll(Array(text.utf8), to: 2)
}

/// Appends `text` to the file at `path`, which must exist.
public func appendText(_ text: String, toFile path: String) throws(SystemError) {
    let descriptor = open(path, O_WRONLY | O_APPEND)
    guard descriptor >= 0 else { throw SystemError(description: "\(path): \(systemErrorText(errno))") }
    defer { close(descriptor) }
    guard writeAll(Array(text.utf8), to: descriptor) else { throw SystemError(description: "\(path): \(systemErrorText(errno))") }
}
