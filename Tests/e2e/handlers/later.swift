// An async handler: awaits, then completes from another thread.
let handler = Handler.async { request in
    let millis = Int(request.queryParameter("ms") ?? "50") ?? 50
    try await Task.sleep(for: .milliseconds(millis))
    return .json(["waited_ms": .int(millis), "kind": "async"], status: 201)
}
