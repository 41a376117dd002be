// Answers with everything it was given, so tests can check what crosses the ABI.
let handler = Handler.inline { request in
    .json { json in
        json.object { o in
            o.field("method", request.method)
            o.field("path", request.path)
            o.field("query", request.query)
            o.field("q", request.queryParameter("q"))
            o.field("request_id", request.requestID)
            o.field("params", object: { p in
                for (name, value) in request.pathParameters.sorted(by: { $0.key < $1.key }) { p.field(name, value) }
            })
            o.field("host", request.headers["Host"])
            o.field("header_x_test", request.headers["X-Test"])
            o.field("header_names", array: { names in
                for field in request.headers.fields { names.element(field.name) }
            })
            o.field("body_length", request.body.count)
            o.field("body", request.text)
        }
    }
}
