// The C side of a Swift handler module. The gateway compiles this file together
// with the SDK and the user's handler file (which defines `let handler = Handler…`),
// so that a handler file holds only the user's code. Everything here is prefixed
// `_apus` to stay out of the user's namespace.

import CApusABI

/// The host's callback table, set once in `apus_on_module_init` before any request.
nonisolated(unsafe) private var _apusHost: UnsafePointer<apus_type_host>?

/// The module description handed to the host; allocated once, never freed.
nonisolated(unsafe) private var _apusModule: UnsafeMutablePointer<apus_type_module>?

/// The host's per-request handle, carried across threads. The host makes it safe
/// to complete from any thread; the module only passes it back.
private struct _ApusResponder: @unchecked Sendable {
    let pointer: OpaquePointer?
}

@_cdecl("apus_on_abi_version")
public func apus_on_abi_version() -> UInt32 {
    UInt32(APUS_ABI_VERSION)
}

@_cdecl("apus_on_module_init")
public func apus_on_module_init(_ host: UnsafePointer<apus_type_host>?) -> UnsafePointer<apus_type_module>? {
    guard let host,
        host.pointee.struct_size == UInt32(MemoryLayout<apus_type_host>.size),
        host.pointee.abi_version == UInt32(APUS_ABI_VERSION)
    else { return nil }
    if let module = _apusModule { return UnsafePointer(module) }
    _apusHost = host
    let module = UnsafeMutablePointer<apus_type_module>.allocate(capacity: 1)
    module.initialize(
        to: apus_type_module(
            struct_size: UInt32(MemoryLayout<apus_type_module>.size),
            abi_version: UInt32(APUS_ABI_VERSION),
            kind: handler.kind.rawValue,
            on_request: { request, responder in _apusHandle(request, _ApusResponder(pointer: responder)) }
        )
    )
    _apusModule = module
    return UnsafePointer(module)
}

private func _apusHandle(_ cRequest: UnsafePointer<apus_type_request>?, _ responder: _ApusResponder) {
    guard let cRequest, cRequest.pointee.struct_size == UInt32(MemoryLayout<apus_type_request>.size) else {
        _apusRespond(responder, .json(status: 500) { $0.object { $0.field("error", "request ABI mismatch") } })
        return
    }
    let request = _apusRequest(cRequest.pointee)
    switch handler.body {
    case .sync(let run):
        let response: Response
        do {
            response = try run(request)
        } catch {
            response = _apusFailure(error, responder)
        }
        _apusRespond(responder, response)
    case .async(let run):
        Task {
            let response: Response
            do {
                response = try await run(request)
            } catch {
                response = _apusFailure(error, responder)
            }
            _apusRespond(responder, response)
        }
    }
}

private func _apusFailure(_ error: any Error, _ responder: _ApusResponder) -> Response {
    if !(error is HTTPError) {
        _apusLog(responder, level: 3, "handler threw: \(error)")
    }
    return Response.failure(error)
}

private func _apusLog(_ responder: _ApusResponder, level: UInt32, _ message: String) {
    guard let host = _apusHost else { return }
    var message = message
    message.withUTF8 { utf8 in
        utf8.withMemoryRebound(to: CChar.self) { chars in
            host.pointee.callback_log(responder.pointer, level, apus_type_str(data: chars.baseAddress, length: chars.count))
        }
    }
}

private func _apusString(_ value: apus_type_str) -> String {
    guard let data = value.data, value.length > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: data, count: value.length), as: UTF8.self)
}

private func _apusRequest(_ c: apus_type_request) -> Request {
    var headers: [(name: String, value: String)] = []
    headers.reserveCapacity(c.header_count)
    for index in 0..<c.header_count {
        let field = c.headers[index]
        headers.append((_apusString(field.name), _apusString(field.value)))
    }
    var parameters: [String: String] = [:]
    for index in 0..<c.param_count {
        let field = c.params[index]
        parameters[_apusString(field.name)] = _apusString(field.value)
    }
    let body: [UInt8] =
        c.body_length > 0 && c.body != nil ? Array(UnsafeBufferPointer(start: c.body, count: c.body_length)) : []
    return Request(
        method: _apusString(c.method), path: _apusString(c.path), query: _apusString(c.query),
        requestID: _apusString(c.request_id), remoteAddress: _apusString(c.remote_address),
        headers: Headers(headers), pathParameters: parameters, body: body
    )
}

/// Hands the response to the host. All strings go into one arena so that the
/// header array can point into it for the duration of the call.
private func _apusRespond(_ responder: _ApusResponder, _ response: Response) {
    guard let host = _apusHost else { return }
    var arena: [UInt8] = []
    var spans: [(Int, Int, Int, Int)] = []
    spans.reserveCapacity(response.headers.fields.count)
    for field in response.headers.fields {
        let nameStart = arena.count
        arena.append(contentsOf: field.name.utf8)
        let valueStart = arena.count
        arena.append(contentsOf: field.value.utf8)
        spans.append((nameStart, valueStart - nameStart, valueStart, arena.count - valueStart))
    }
    let status = UInt16(clamping: response.status)
    arena.withUnsafeBufferPointer { arenaBytes in
        let base = UnsafeRawPointer(arenaBytes.baseAddress)?.assumingMemoryBound(to: CChar.self)
        let headers = spans.map { span in
            apus_type_header(
                name: apus_type_str(data: base.map { $0 + span.0 }, length: span.1),
                value: apus_type_str(data: base.map { $0 + span.2 }, length: span.3)
            )
        }
        headers.withUnsafeBufferPointer { headerBuffer in
            response.body.withUnsafeBufferPointer { body in
                var cResponse = apus_type_response(
                    struct_size: UInt32(MemoryLayout<apus_type_response>.size),
                    status: status,
                    headers: headerBuffer.baseAddress,
                    header_count: headerBuffer.count,
                    body: body.baseAddress,
                    body_length: body.count
                )
                host.pointee.callback_respond(responder.pointer, &cResponse)
            }
        }
    }
}
