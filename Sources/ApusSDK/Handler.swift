/// A native handler: the function and where the gateway runs it.
///
/// A handler file defines one of these as a global named `handler`:
///
/// ```swift
/// let handler = Handler.inline { request in
///     .json(["symbol": .string(request.pathParameters["symbol"] ?? "")])
/// }
/// ```
public struct Handler: Sendable {
    /// Where the gateway runs the handler.
    public enum Kind: UInt32, Sendable {
        /// On the connection's event loop: for fast code that never blocks.
        case inline = 0
        /// On a thread pool: for code that blocks (files, databases, long CPU work).
        case blocking = 1
        /// As a Swift task: for code that awaits.
        case async = 2
    }

    @_spi(ApusEntry) public enum Body: Sendable {
        case sync(@Sendable (Request) throws -> Response)
        case async(@Sendable (Request) async throws -> Response)
    }

    /// Where this handler runs.
    public let kind: Kind
    @_spi(ApusEntry) public let body: Body

    /// A handler run on the event loop. It must be fast and must not block.
    public static func inline(_ body: @escaping @Sendable (Request) throws -> Response) -> Handler {
        Handler(kind: .inline, body: .sync(body))
    }

    /// A handler run on the gateway's thread pool; it may block.
    public static func blocking(_ body: @escaping @Sendable (Request) throws -> Response) -> Handler {
        Handler(kind: .blocking, body: .sync(body))
    }

    /// A handler run as a Swift task; it may `await`.
    public static func async(_ body: @escaping @Sendable (Request) async throws -> Response) -> Handler {
        Handler(kind: .async, body: .async(body))
    }

    /// Runs the handler the way the gateway would, turning a thrown error into
    /// an error response. For tests of handler code.
    public func respond(to request: Request) async -> Response {
        do {
            switch body {
            case .sync(let run): return try run(request)
            case .async(let run): return try await run(request)
            }
        } catch {
            return Response.failure(error)
        }
    }
}

extension Response {
    /// The response for an error a handler threw: its status for `HTTPError`,
    /// else a 500 that names the error without leaking more.
    static func failure(_ error: any Error) -> Response {
        if let error = error as? HTTPError {
            return .json(status: error.status) { $0.object { $0.field("error", error.message) } }
        }
        return .json(status: 500) { $0.object { $0.field("error", "handler error: \(error)") } }
    }
}
