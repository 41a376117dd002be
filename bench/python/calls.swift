// Functions for bench/python_calls.py: the cost of crossing from Python into Swift.

/// Writes any JSON-shaped Python value compactly, as `json.dumps(value, separators=(",", ":"))` does.
func writeJSON(_ value: PythonValue, to json: inout JSONWriter) throws {
    switch value {
    case .none: json.element(JSON.null)
    case .bool(let bool): json.element(bool)
    case .int(let int): json.element(int)
    case .float(let double): json.element(double)
    case .string(let string): json.element(string)
    case .list(let items), .tuple(let items):
        try json.array { list in
            for item in items { try writeJSON(item, to: &list) }
        }
    case .dict(let pairs):
        try json.object { object in
            for (key, item) in pairs {
                guard case .string(let name) = key else { throw PythonError(.typeError, "keys must be str") }
                object.key(name)
                try writeJSON(item, to: &object)
            }
        }
    case .bytes: throw PythonError(.typeError, "bytes is not JSON serializable")
    }
}

let python = PythonExports { python in
    python.export("add") { (a: Int, b: Int) -> Int in a &+ b }
    python.export("noop") { () -> PythonValue in .none }
    python.export("dumps") { (value: PythonValue) throws -> PythonBytes in
        var json = JSONWriter(capacity: 32 * 1024)
        try writeJSON(value, to: &json)
        return PythonBytes(json.bytes)
    }
}
