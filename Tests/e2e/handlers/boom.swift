// Throws on every request: the gateway must answer 500 and keep serving.
struct Boom: Error, CustomStringConvertible {
    var description: String { "boom: the handler failed on purpose" }
}

let handler = Handler.inline { request in
    if request.queryParameter("status") == "418" { throw HTTPError(418, "teapot") }
    throw Boom()
}
