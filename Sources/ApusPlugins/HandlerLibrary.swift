import CApusABI
import CoreMetrics
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a native handler runs; mirrors `apus_type_handler_kind`.
public enum HandlerKind: String, Sendable {
    /// On the event loop, for fast code that never blocks.
    case inline
    /// On the gateway's thread pool.
    case blocking
    /// Started on the event loop, completed later from any thread.
    case async
}

/// A request handed to a native handler, as plain values (no HTTP types).
public struct NativeRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String
    public var requestID: String
    public var remoteAddress: String
    public var headers: [(name: String, value: String)]
    public var parameters: [(name: String, value: String)]

    public init(
        method: String, path: String, query: String, requestID: String, remoteAddress: String,
        headers: [(name: String, value: String)], parameters: [(name: String, value: String)]
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.requestID = requestID
        self.remoteAddress = remoteAddress
        self.headers = headers
        self.parameters = parameters
    }
}

/// A response from a native handler, copied out of the module's memory.
public struct NativeResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// The host side of one in-flight native call. Its address is the module's
/// `apus_type_responder *`; completion is accepted once, from any thread.
public final class NativeResponder: Sendable {
    let handlerName: String
    let logger: Logger
    /// `pending`, then `answered` or `timedOut`, once.
    private let state = Atomic<UInt8>(NativeResponder.pending)
    private static let pending: UInt8 = 0
    private static let answered: UInt8 = 1
    private static let timedOut: UInt8 = 2
    private let completion: Completion

    /// Where the module's answer goes: copied into Swift values, or lent as it is.
    private enum Completion: Sendable {
        case copied(@Sendable (NativeResponse) -> Void)
        case borrowed(@Sendable (UnsafePointer<apus_type_response>) -> Void)
    }

    /// Creates a responder that calls `completion` once with the module's answer.
    public init(handlerName: String, logger: Logger, completion: @escaping @Sendable (NativeResponse) -> Void) {
        self.handlerName = handlerName
        self.logger = logger
        self.completion = .copied(completion)
    }

    /// Creates a responder that lends the module's answer to `completion`, once,
    /// for the duration of that call: the data path writes it out without copying
    /// it into Swift values first.
    public init(
        handlerName: String, logger: Logger, borrowing completion: @escaping @Sendable (UnsafePointer<apus_type_response>) -> Void
    ) {
        self.handlerName = handlerName
        self.logger = logger
        self.completion = .borrowed(completion)
    }

    /// Completes the call with a gateway-made JSON error, e.g. when the handler never ran.
    public func fail(status: Int, message: String) {
        complete(Self.errorResponse(status: status, message: message))
    }

    /// A gateway-made JSON error: `{"error":"…"}`.
    private static func errorResponse(status: Int, message: String) -> NativeResponse {
        NativeResponse(status: status, headers: [("content-type", "application/json")], body: Array("{\"error\":\"\(message)\"}".utf8))
    }

    /// Gives up on a handler that has not answered in `seconds` (an async or
    /// blocking one: an inline handler answers before its call returns): the call
    /// completes with a 504, and the handler's own answer, if it ever comes, is
    /// dropped and logged. Counted in `apus_handler_errors_total`.
    public func timeOut(afterSeconds seconds: Double) {
        guard state.compareExchange(expected: Self.pending, desired: Self.timedOut, ordering: .acquiringAndReleasing).exchanged
        else { return }
        let limit = seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
        logger.error(
            "handler did not answer in time; answered 504",
            metadata: ["handler.name": "\(handlerName)", "timeout.seconds": "\(limit)"])
        Counter(label: "apus_handler_errors_total", dimensions: [("handler", handlerName)]).increment()
        let message = "handler \(handlerName) did not answer within \(limit) s (backend.response_timeout)"
        deliver(Self.errorResponse(status: 504, message: message))
    }

    /// Completes the call; a second completion is a module bug, logged and dropped.
    func complete(_ response: NativeResponse) {
        guard claim() else { return }
        deliver(response)
    }

    private func deliver(_ response: NativeResponse) {
        switch completion {
        case .copied(let deliver): deliver(response)
        case .borrowed(let deliver): response.withCResponse { deliver($0) }
        }
    }

    /// Completes the call with the module's own response, borrowed for this call.
    func complete(borrowing response: UnsafePointer<apus_type_response>) {
        guard claim() else { return }
        switch completion {
        case .copied(let deliver): deliver(copyResponse(response.pointee))
        case .borrowed(let deliver): deliver(response)
        }
    }

    private func claim() -> Bool {
        let (claimed, previous) = state.compareExchange(
            expected: Self.pending, desired: Self.answered, ordering: .acquiringAndReleasing)
        if claimed { return true }
        if previous == Self.timedOut,
            state.compareExchange(expected: Self.timedOut, desired: Self.answered, ordering: .acquiringAndReleasing).exchanged
        {
            logger.warning("handler answered after it timed out; answer dropped", metadata: ["handler.name": "\(handlerName)"])
        } else {
            logger.error("handler responded twice; second response dropped", metadata: ["handler.name": "\(handlerName)"])
        }
        return false
    }
}

/// Lends name/value pairs (headers, path parameters) as a C header array for the
/// duration of `body`: every string is copied into one arena the array points into.
public func withCHeaders<Result>(
    _ pairs: [(name: String, value: String)], _ body: (UnsafeBufferPointer<apus_type_header>) -> Result
) -> Result {
    guard !pairs.isEmpty else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
    var arena: [UInt8] = []
    var spans: [(name: Range<Int>, value: Range<Int>)] = []
    spans.reserveCapacity(pairs.count)
    for (name, value) in pairs {
        let nameStart = arena.count
        arena.append(contentsOf: name.utf8)
        let valueStart = arena.count
        arena.append(contentsOf: value.utf8)
        spans.append((nameStart..<valueStart, valueStart..<arena.count))
    }
    return arena.withUnsafeBufferPointer { bytes in
        let base = UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self)
        func str(_ range: Range<Int>) -> apus_type_str { apus_type_str(data: base.map { $0 + range.lowerBound }, length: range.count) }
        let headers = spans.map { apus_type_header(name: str($0.name), value: str($0.value)) }
        return headers.withUnsafeBufferPointer(body)
    }
}

extension NativeResponse {
    /// Lends this response in its C form for the duration of `body`.
    fileprivate func withCResponse<Result>(_ body: (UnsafePointer<apus_type_response>) -> Result) -> Result {
        withCHeaders(headers) { headerBuffer in
            self.body.withUnsafeBufferPointer { bodyBuffer in
                var response = apus_type_response(
                    struct_size: UInt32(MemoryLayout<apus_type_response>.size), status: UInt16(clamping: status),
                    headers: headerBuffer.baseAddress, header_count: headerBuffer.count,
                    body: bodyBuffer.baseAddress, body_length: bodyBuffer.count)
                return body(&response)
            }
        }
    }
}

/// A loaded native handler module. Libraries are opened with `RTLD_NODELETE` and
/// never closed: unloading a Swift library leaves its type metadata registered
/// and crashes the process later.
public final class HandlerLibrary: Sendable {
    /// The handler's name, as routes name it.
    public let name: String
    /// The file it was loaded from.
    public let path: String
    /// Where the handler runs.
    public let kind: HandlerKind
    private let module: ModulePointer

    private struct ModulePointer: @unchecked Sendable {
        // Points at the module's immutable description, valid for the process's life.
        let pointer: UnsafePointer<apus_type_module>
    }

    /// Loads and checks a handler library: ABI version first, then the module's
    /// struct sizes, before any handler code runs.
    public static func load(path: String, name: String) throws(PluginError) -> HandlerLibrary {
        // dlopen hands back the same image for the same path; initialise it once.
        if let loaded = loadedLibraries.withLock({ $0[path] }) { return loaded }
        let library = try open(path: path, name: name)
        loadedLibraries.withLock { $0[path] = library }
        Counter(label: "apus_handler_loads_total", dimensions: [("handler", name)]).increment()
        return library
    }

    private static let loadedLibraries = Mutex<[String: HandlerLibrary]>([:])

    private static func open(path: String, name: String) throws(PluginError) -> HandlerLibrary {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            throw .open(path, dlerror().map { String(cString: $0) } ?? "unknown dlopen error")
        }
        guard let versionSymbol = dlsym(handle, APUS_ON_ABI_VERSION_SYMBOL) else {
            throw .notAModule(path, missing: APUS_ON_ABI_VERSION_SYMBOL)
        }
        let moduleVersion = unsafeBitCast(versionSymbol, to: apus_on_abi_version_fn.self)()
        guard moduleVersion == UInt32(APUS_ABI_VERSION) else {
            throw .version(path, module: moduleVersion, host: UInt32(APUS_ABI_VERSION))
        }
        guard let initSymbol = dlsym(handle, APUS_ON_MODULE_INIT_SYMBOL) else {
            throw .notAModule(path, missing: APUS_ON_MODULE_INIT_SYMBOL)
        }
        let initialize = unsafeBitCast(initSymbol, to: apus_on_module_init_fn.self)
        guard let module = initialize(HostTable.shared.pointer) else {
            throw .layout(path, "apus_on_module_init refused the host (struct size or version)")
        }
        guard module.pointee.struct_size == UInt32(MemoryLayout<apus_type_module>.size) else {
            throw .layout(
                path,
                "module struct is \(module.pointee.struct_size) bytes, host expects \(MemoryLayout<apus_type_module>.size)"
            )
        }
        guard module.pointee.abi_version == UInt32(APUS_ABI_VERSION) else {
            throw .version(path, module: module.pointee.abi_version, host: UInt32(APUS_ABI_VERSION))
        }
        guard module.pointee.on_request != nil else { throw .layout(path, "module has no on_request") }
        let kind: HandlerKind
        switch module.pointee.kind {
        case UInt32(APUS_HANDLER_INLINE.rawValue): kind = .inline
        case UInt32(APUS_HANDLER_BLOCKING.rawValue): kind = .blocking
        case UInt32(APUS_HANDLER_ASYNC.rawValue): kind = .async
        default: throw .layout(path, "unknown handler kind \(module.pointee.kind)")
        }
        return HandlerLibrary(name: name, path: path, kind: kind, module: ModulePointer(pointer: module))
    }

    private init(name: String, path: String, kind: HandlerKind, module: ModulePointer) {
        self.name = name
        self.path = path
        self.kind = kind
        self.module = module
    }

    /// Calls the handler with a request the caller has laid out in C form; it and
    /// everything it points to are borrowed for the call only. The data path uses
    /// this to hand over header bytes where they were received.
    public func invoke(borrowing request: UnsafePointer<apus_type_request>, responder: NativeResponder) {
        let opaqueResponder = OpaquePointer(Unmanaged.passRetained(responder).toOpaque())
        module.pointer.pointee.on_request!(module.pointer.pointee.context, request, opaqueResponder)
    }

    /// Calls the handler. `request` and `body` are borrowed for the call only;
    /// the module answers through `responder`, now or later, from any thread.
    public func invoke(_ request: NativeRequest, body: UnsafeRawBufferPointer, responder: NativeResponder) {
        // Every string is copied into one arena that the C structs point into. The arena and
        // the field array are temporary allocations, on the stack when small (a request's
        // usually are), so lending a request allocates nothing.
        var byteCount =
            request.method.utf8.count + request.path.utf8.count + request.query.utf8.count + request.requestID.utf8.count
            + request.remoteAddress.utf8.count
        for field in request.headers { byteCount += field.name.utf8.count + field.value.utf8.count }
        for field in request.parameters { byteCount += field.name.utf8.count + field.value.utf8.count }
        let fieldCount = request.headers.count + request.parameters.count
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(byteCount, 1)) { arena in
            withUnsafeTemporaryAllocation(of: apus_type_header.self, capacity: max(fieldCount, 1)) { fields in
                var offset = 0
                let method = Self.copy(request.method, into: arena, at: &offset)
                let path = Self.copy(request.path, into: arena, at: &offset)
                let query = Self.copy(request.query, into: arena, at: &offset)
                let requestID = Self.copy(request.requestID, into: arena, at: &offset)
                let remote = Self.copy(request.remoteAddress, into: arena, at: &offset)
                // Headers first, then the path parameters, in the one array.
                let parameters = fields.baseAddress! + request.headers.count
                Self.copy(request.headers, to: fields.baseAddress!, arena: arena, at: &offset)
                Self.copy(request.parameters, to: parameters, arena: arena, at: &offset)
                var cRequest = apus_type_request(
                    struct_size: UInt32(MemoryLayout<apus_type_request>.size),
                    method: method, path: path, query: query, request_id: requestID, remote_address: remote,
                    headers: fields.baseAddress, header_count: request.headers.count,
                    params: parameters, param_count: request.parameters.count,
                    body: body.baseAddress?.assumingMemoryBound(to: UInt8.self), body_length: body.count
                )
                invoke(borrowing: &cRequest, responder: responder)
            }
        }
    }

    /// Copies name-value pairs into `arena` at `offset` (moved past them) and lays out
    /// C fields pointing at the copies from `destination` on.
    private static func copy(
        _ pairs: [(name: String, value: String)], to destination: UnsafeMutablePointer<apus_type_header>,
        arena: UnsafeMutableBufferPointer<UInt8>, at offset: inout Int
    ) {
        for (index, pair) in pairs.enumerated() {
            let name = copy(pair.name, into: arena, at: &offset)
            (destination + index).initialize(to: apus_type_header(name: name, value: copy(pair.value, into: arena, at: &offset)))
        }
    }

    /// Copies `text` into `arena` at `offset` (moved past it) and points a C string at the copy.
    private static func copy(_ text: String, into arena: UnsafeMutableBufferPointer<UInt8>, at offset: inout Int) -> apus_type_str {
        var text = text  // `withUTF8` wants it mutable; a native string is not copied
        let start = offset
        offset += text.withUTF8 { utf8 in
            let destination = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(arena)[start...])
            destination.copyMemory(from: UnsafeRawBufferPointer(utf8))
            return utf8.count
        }
        return apus_type_str(data: UnsafeRawPointer(arena.baseAddress! + start).assumingMemoryBound(to: CChar.self), length: offset - start)
    }
}

/// The callback table every module receives; one for the process.
private final class HostTable: Sendable {
    static let shared = HostTable()
    private struct TablePointer: @unchecked Sendable { let pointer: UnsafeMutablePointer<apus_type_host> }
    private let table: TablePointer
    var pointer: UnsafePointer<apus_type_host> { UnsafePointer(table.pointer) }

    private init() {
        let table = UnsafeMutablePointer<apus_type_host>.allocate(capacity: 1)
        table.initialize(
            to: apus_type_host(
                struct_size: UInt32(MemoryLayout<apus_type_host>.size),
                abi_version: UInt32(APUS_ABI_VERSION),
                callback_respond: { responderPointer, response in
                    guard let responderPointer else { return }
                    // Consumes the reference `invoke` passed to the module.
                    let responder = Unmanaged<NativeResponder>.fromOpaque(UnsafeRawPointer(responderPointer))
                        .takeRetainedValue()
                    guard let response, response.pointee.struct_size == UInt32(MemoryLayout<apus_type_response>.size)
                    else {
                        responder.complete(NativeResponse(status: 500, headers: [], body: Array("handler response ABI mismatch".utf8)))
                        return
                    }
                    responder.complete(borrowing: response)
                },
                callback_log: { responderPointer, level, message in
                    let text = string(message)
                    guard let responderPointer else {
                        Logger(label: "apus.handler").log(level: logLevel(level), "\(text)")
                        return
                    }
                    let responder = Unmanaged<NativeResponder>.fromOpaque(UnsafeRawPointer(responderPointer))
                        .takeUnretainedValue()
                    let level = logLevel(level)
                    responder.logger.log(level: level, "\(text)", metadata: ["handler.name": "\(responder.handlerName)"])
                    if level >= .error {
                        // The SDK logs every error a handler throws (before answering 500) at error level.
                        Counter(label: "apus_handler_errors_total", dimensions: [("handler", responder.handlerName)]).increment()
                    }
                }
            )
        )
        self.table = TablePointer(pointer: table)
    }
}

private func logLevel(_ level: UInt32) -> Logger.Level {
    switch level {
    case UInt32(APUS_LOG_DEBUG.rawValue): return .debug
    case UInt32(APUS_LOG_INFO.rawValue): return .info
    case UInt32(APUS_LOG_WARNING.rawValue): return .warning
    default: return .error
    }
}

private func string(_ value: apus_type_str) -> String {
    guard let data = value.data, value.length > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: data, count: value.length), as: UTF8.self)
}

private func copyResponse(_ c: apus_type_response) -> NativeResponse {
    var headers: [(name: String, value: String)] = []
    headers.reserveCapacity(c.header_count)
    for index in 0..<c.header_count {
        headers.append((string(c.headers[index].name), string(c.headers[index].value)))
    }
    let body: [UInt8] = c.body_length > 0 && c.body != nil ? Array(UnsafeBufferPointer(start: c.body, count: c.body_length)) : []
    return NativeResponse(status: Int(c.status), headers: headers, body: body)
}
