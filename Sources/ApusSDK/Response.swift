/// What a native handler answers.
public struct Response: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// Response headers. The gateway adds `content-length`, `date` and `x-request-id`.
    public var headers: Headers
    /// The whole response body.
    public var body: [UInt8]

    /// Creates a response from raw parts.
    public init(status: Int = 200, headers: Headers = Headers(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A `text/plain; charset=utf-8` response.
    public static func text(_ text: String, status: Int = 200) -> Response {
        Response(status: status, headers: Headers([("content-type", "text/plain; charset=utf-8")]), body: Array(text.utf8))
    }

    /// An `application/json` response from a `JSON` value.
    public static func json(_ value: JSON, status: Int = 200) -> Response {
        var writer = JSONWriter()
        writer.element(value)
        return .json(bytes: writer.bytes, status: status)
    }

    /// An `application/json` response built with the fast streaming writer:
    /// `.json { $0.object { o in o.field("ok", true) } }`.
    public static func json(status: Int = 200, _ build: (inout JSONWriter) throws -> Void) rethrows -> Response {
        var writer = JSONWriter()
        try build(&writer)
        return .json(bytes: writer.bytes, status: status)
    }

    /// An `application/json` response from bytes that already hold JSON.
    public static func json(bytes: [UInt8], status: Int = 200) -> Response {
        Response(status: status, headers: Headers([("content-type", "application/json")]), body: bytes)
    }
}

/// An error a handler may throw to answer with a given status and message
/// (any other thrown error becomes a 500).
public struct HTTPError: Error, Sendable {
    /// The status to answer with.
    public var status: Int
    /// A short message for the client; it goes into the JSON error body.
    public var message: String

    /// Creates an error answered as `status` with `message`.
    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}

extension HTTPError: CustomStringConvertible {
    /// `422: symbol must be 1-8 upper-case letters`: how the error reads in logs and in Python.
    public var description: String { "\(status): \(message)" }
}
