// A blocking handler: runs on the thread pool, so it may sleep without stalling the event loop.
#if canImport(Glibc)
    import Glibc
#endif

let handler = Handler.blocking { request in
    let millis = Int(request.queryParameter("ms") ?? "200") ?? 200
    usleep(UInt32(millis * 1000))
    return .text("slept \(millis) ms\n")
}
