import CApusABI

/// The C side of a Swift handler module, shared by every handler: the gateway
/// builds the SDK once into a library, and each handler's two entry points
/// (`Entry/Exports.swift`, compiled with the handler file) hand their `handler`
/// to `describe`. Everything crossing the boundary is C; a thrown error becomes a
/// 500, never a crash.
@_spi(ApusEntry)
public enum ApusModule {
    /// The ABI version this SDK speaks.
    public static var abiVersion: UInt32 { UInt32(APUS_ABI_VERSION) }

    /// Describes `handler` to the host, or refuses a host of another ABI.
    public static func describe(_ handler: Handler, host: UnsafePointer<apus_type_host>?) -> UnsafePointer<apus_type_module>? {
        guard let host,
            host.pointee.struct_size == UInt32(MemoryLayout<apus_type_host>.size),
            host.pointee.abi_version == UInt32(APUS_ABI_VERSION)
        else { return nil }
        let box = HandlerBox(handler: handler, host: host)
        let module = UnsafeMutablePointer<apus_type_module>.allocate(capacity: 1)
        module.initialize(
            to: apus_type_module(
                struct_size: UInt32(MemoryLayout<apus_type_module>.size),
                abi_version: UInt32(APUS_ABI_VERSION),
                kind: handler.kind.rawValue,
                // The module lives for the process: the box is never released.
                context: Unmanaged.passRetained(box).toOpaque(),
                on_request: { context, request, responder in
                    guard let context else { return }
                    Unmanaged<HandlerBox>.fromOpaque(context).takeUnretainedValue()
                        .handle(request, Responder(pointer: responder))
                }
            )
        )
        return UnsafePointer(module)
    }
}

/// The host's per-request handle, carried across threads. The host makes it safe
/// to complete from any thread; the SDK only passes it back, once.
private struct Responder: @unchecked Sendable {
    let pointer: OpaquePointer?
}

/// One handler and the host it answers through.
private final class HandlerBox: @unchecked Sendable {
    // Both immutable after init; the host table lives for the process.
    let handler: Handler
    let host: UnsafePointer<apus_type_host>

    init(handler: Handler, host: UnsafePointer<apus_type_host>) {
        self.handler = handler
        self.host = host
    }

    func handle(_ cRequest: UnsafePointer<apus_type_request>?, _ responder: Responder) {
        guard let cRequest, cRequest.pointee.struct_size == UInt32(MemoryLayout<apus_type_request>.size) else {
            respond(responder, .json(status: 500) { $0.object { $0.field("error", "request ABI mismatch") } })
            return
        }
        let request = Request(cRequest.pointee)
        switch handler.body {
        case .sync(let run):
            let response: Response
            do {
                response = try run(request)
            } catch {
                response = failure(error, responder)
            }
            respond(responder, response)
        case .async(let run):
            Task {
                let response: Response
                do {
                    response = try await run(request)
                } catch {
                    response = self.failure(error, responder)
                }
                self.respond(responder, response)
            }
        }
    }

    private func failure(_ error: any Error, _ responder: Responder) -> Response {
        if !(error is HTTPError) {
            log(responder, level: UInt32(APUS_LOG_ERROR.rawValue), "handler threw: \(error)")
        }
        return Response.failure(error)
    }

    private func log(_ responder: Responder, level: UInt32, _ message: String) {
        var message = message
        message.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { chars in
                host.pointee.callback_log(responder.pointer, level, apus_type_str(data: chars.baseAddress, length: chars.count))
            }
        }
    }

    /// Hands the response to the host. Header strings are copied into one arena
    /// and the C header array points into it; both are temporary allocations,
    /// on the stack when small (a response's headers usually are), so answering
    /// usually allocates nothing.
    private func respond(_ responder: Responder, _ response: Response) {
        let fields = response.headers.fields
        var byteCount = 0
        for field in fields { byteCount += field.name.utf8.count + field.value.utf8.count }
        let status = UInt16(clamping: response.status)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(byteCount, 1)) { arena in
            withUnsafeTemporaryAllocation(of: apus_type_header.self, capacity: max(fields.count, 1)) { headers in
                var offset = 0
                for (index, field) in fields.enumerated() {
                    let name = Self.copy(field.name, into: arena, at: &offset)
                    let value = Self.copy(field.value, into: arena, at: &offset)
                    (headers.baseAddress! + index).initialize(to: apus_type_header(name: name, value: value))
                }
                response.body.withUnsafeBufferPointer { body in
                    var cResponse = apus_type_response(
                        struct_size: UInt32(MemoryLayout<apus_type_response>.size),
                        status: status,
                        headers: headers.baseAddress,
                        header_count: fields.count,
                        body: body.baseAddress,
                        body_length: body.count
                    )
                    host.pointee.callback_respond(responder.pointer, &cResponse)
                }
            }
        }
    }

    /// Copies `text` into `arena` at `offset` (moved past it) and points a C string at the copy.
    /// (A function of its own with an `inout` offset, not a closure over a variable: the
    /// compiler then proves the accesses exclusive instead of checking them at run time.)
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

extension Request {
    /// Copies a borrowed C request: its text and header fields into one
    /// allocation (`ReceivedBytes`, decoded when read), path parameters into a
    /// dictionary and the body into an array.
    fileprivate init(_ c: apus_type_request) {
        var total = c.method.length + c.path.length + c.query.length + c.request_id.length + c.remote_address.length
        for index in 0..<c.header_count { total += c.headers[index].name.length + c.headers[index].value.length }
        let received = ReceivedBytes(fieldCount: c.header_count, textCount: total) { fields, text in
            var offset = 0
            var parts = ReceivedBytes.Parts(fieldCount: c.header_count)
            parts.method = Self.copy(c.method, into: text, at: &offset)
            parts.path = Self.copy(c.path, into: text, at: &offset)
            parts.query = Self.copy(c.query, into: text, at: &offset)
            parts.requestID = Self.copy(c.request_id, into: text, at: &offset)
            parts.remoteAddress = Self.copy(c.remote_address, into: text, at: &offset)
            for index in 0..<c.header_count {
                let name = Self.copy(c.headers[index].name, into: text, at: &offset)
                ReceivedBytes.setField(index, name: name, value: Self.copy(c.headers[index].value, into: text, at: &offset), in: fields)
            }
            return parts
        }
        func string(_ value: apus_type_str) -> String {
            guard let data = value.data, value.length > 0 else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: data, count: value.length), as: UTF8.self)
        }
        var parameters: [String: String] = [:]
        for index in 0..<c.param_count {
            parameters[string(c.params[index].name)] = string(c.params[index].value)
        }
        let body: [UInt8] =
            c.body_length > 0 && c.body != nil ? Array(UnsafeBufferPointer(start: c.body, count: c.body_length)) : []
        self.init(received: received, headers: Headers(received: received), pathParameters: parameters, body: body)
    }

    /// Copies a borrowed C string's bytes into `text` at `offset` (moved past them) and says where they lie.
    private static func copy(_ value: apus_type_str, into text: UnsafeMutablePointer<UInt8>, at offset: inout Int) -> Range<Int> {
        let start = offset
        if let data = value.data, value.length > 0 {
            UnsafeMutableRawPointer(text + start).copyMemory(from: data, byteCount: value.length)
            offset += value.length
        }
        return start..<offset
    }
}
