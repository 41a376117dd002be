// Functions a handler file offers to Python. This part is pure Swift, so the same
// file compiles for the gateway (which ignores it) and for a Python extension
// module (`apus.load`), where `Python/Bridge.swift` converts CPython objects to
// and from `PythonValue` and calls the registered closures.

/// A Python value as plain Swift data: what crosses between the interpreter and
/// an exported function. Conversions run with the GIL held; the closure itself
/// sees only Swift values, so it may run with the GIL released.
public enum PythonValue: Sendable, Equatable {
    case none
    case bool(Bool)
    /// A Python `int` that fits in 64 bits; larger ones raise `OverflowError` on the way in.
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PythonValue])
    case tuple([PythonValue])
    /// Key-value pairs in the dict's order.
    case dict([(PythonValue, PythonValue)])

    public static func == (lhs: PythonValue, rhs: PythonValue) -> Bool {
        switch (lhs, rhs) {
        case (.none, .none): true
        case (.bool(let a), .bool(let b)): a == b
        case (.int(let a), .int(let b)): a == b
        case (.float(let a), .float(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.bytes(let a), .bytes(let b)): a == b
        case (.list(let a), .list(let b)), (.tuple(let a), .tuple(let b)): a == b
        case (.dict(let a), .dict(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    /// The Python type name, for error messages.
    public var typeName: String {
        switch self {
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .float: "float"
        case .string: "str"
        case .bytes: "bytes"
        case .list: "list"
        case .tuple: "tuple"
        case .dict: "dict"
        }
    }
}

/// An error that becomes a specific Python exception. A thrown 4xx `HTTPError`
/// becomes `ValueError`; any other error `apus.SwiftError` carrying the error's text.
public struct PythonError: Error, CustomStringConvertible, Sendable {
    /// The Python exception class raised.
    public enum Kind: Sendable { case typeError, valueError, overflowError, keyError, runtimeError }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    @usableFromInline
    static func wrongType(_ expected: String, got value: PythonValue) -> PythonError {
        PythonError(.typeError, "expected \(expected), got \(value.typeName)")
    }
}

/// A Swift type that converts to and from a Python value.
public protocol PythonConvertible: SendableMetatype {
    /// Converts from Python, or throws `PythonError(.typeError, …)` naming the argument.
    init(python value: PythonValue) throws(PythonError)
    /// The value handed back to Python.
    var pythonValue: PythonValue { get }
}

extension PythonValue: PythonConvertible {
    public init(python value: PythonValue) { self = value }
    @inlinable
    public var pythonValue: PythonValue { self }
}

extension Int: PythonConvertible {
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        switch value {
        case .int(let int): self = int
        case .bool(let bool): self = bool ? 1 : 0  // bool is an int in Python
        default: throw .wrongType("int", got: value)
        }
    }
    @inlinable
    public var pythonValue: PythonValue { .int(self) }
}

extension Double: PythonConvertible {
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        switch value {
        case .float(let double): self = double
        case .int(let int): self = Double(int)  // as Python's float parameters accept ints
        default: throw .wrongType("float", got: value)
        }
    }
    @inlinable
    public var pythonValue: PythonValue { .float(self) }
}

extension Bool: PythonConvertible {
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        guard case .bool(let bool) = value else { throw .wrongType("bool", got: value) }
        self = bool
    }
    @inlinable
    public var pythonValue: PythonValue { .bool(self) }
}

extension String: PythonConvertible {
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        guard case .string(let string) = value else { throw .wrongType("str", got: value) }
        self = string
    }
    @inlinable
    public var pythonValue: PythonValue { .string(self) }
}

/// Python `bytes`. (`[UInt8]` would be a list of ints.)
public struct PythonBytes: PythonConvertible, Sendable, Equatable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        guard case .bytes(let bytes) = value else { throw .wrongType("bytes", got: value) }
        self.bytes = bytes
    }
    @inlinable
    public var pythonValue: PythonValue { .bytes(bytes) }
}

extension Optional: PythonConvertible where Wrapped: PythonConvertible {
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        if case .none = value { self = nil } else { self = try Wrapped(python: value) }
    }
    @inlinable
    public var pythonValue: PythonValue { map(\.pythonValue) ?? PythonValue.none }
}

extension Array: PythonConvertible where Element: PythonConvertible {
    /// Accepts a list or a tuple.
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        switch value {
        case .list(let items), .tuple(let items):
            var result: [Element] = []
            result.reserveCapacity(items.count)
            for (index, item) in items.enumerated() {
                do {
                    result.append(try Element(python: item))
                } catch {
                    throw PythonError(error.kind, "item \(index): \(error.message)")
                }
            }
            self = result
        default: throw .wrongType("list", got: value)
        }
    }
    @inlinable
    public var pythonValue: PythonValue { .list(map(\.pythonValue)) }
}

extension Dictionary: PythonConvertible where Key: PythonConvertible, Value: PythonConvertible {
    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        guard case .dict(let pairs) = value else { throw .wrongType("dict", got: value) }
        var result: [Key: Value] = [:]
        result.reserveCapacity(pairs.count)
        for (key, item) in pairs {
            do {
                result[try Key(python: key)] = try Value(python: item)
            } catch {
                throw PythonError(error.kind, "dict entry: \(error.message)")
            }
        }
        self = result
    }
    @inlinable
    public var pythonValue: PythonValue { .dict(map { ($0.key.pythonValue, $0.value.pythonValue) }) }
}

/// A Python tuple of typed values: `PythonTuple(1, "a", 2.5)` returns `(1, 'a', 2.5)`;
/// as a parameter it accepts a tuple or list of exactly that shape.
public struct PythonTuple<each Element: PythonConvertible>: PythonConvertible {
    public var elements: (repeat each Element)

    public init(_ elements: repeat each Element) { self.elements = (repeat each elements) }

    @inlinable
    public init(python value: PythonValue) throws(PythonError) {
        let items: [PythonValue]
        switch value {
        case .tuple(let values), .list(let values): items = values
        default: throw .wrongType("tuple", got: value)
        }
        var count = 0
        for _ in repeat (each Element).self { count += 1 }
        guard items.count == count else {
            throw PythonError(.typeError, "expected a tuple of \(count) items, got \(items.count)")
        }
        var index = 0
        func next<T: PythonConvertible>(_: T.Type) throws(PythonError) -> T {
            defer { index += 1 }
            return try T(python: items[index])
        }
        elements = (repeat try next((each Element).self))
    }

    @inlinable
    public var pythonValue: PythonValue {
        var items: [PythonValue] = []
        for element in repeat each elements { items.append(element.pythonValue) }
        return .tuple(items)
    }
}

/// One function offered to Python.
public struct PythonFunction: Sendable {
    public let name: String
    public let arity: Int
    /// Run with the GIL released: for long pure-Swift work, so other Python threads run meanwhile.
    public let releasesGIL: Bool
    public let documentation: String
    /// Converts the arguments (exactly `arity` of them), runs the function and converts its result.
    public let call: @Sendable (UnsafeBufferPointer<PythonValue>) throws -> PythonValue

    /// A function offered to Python; `PythonExports.export` builds these.
    public init(
        name: String, arity: Int, releasesGIL: Bool, documentation: String,
        call: @escaping @Sendable (UnsafeBufferPointer<PythonValue>) throws -> PythonValue
    ) {
        self.name = name
        self.arity = arity
        self.releasesGIL = releasesGIL
        self.documentation = documentation
        self.call = call
    }
}

/// The functions a file offers to Python. Declare one per file, as a global named
/// `python` built by a closure that calls `export` once per function (README,
/// "Use Swift from Python"). `from handlers import pricing` (after
/// `import apus.auto`) or `apus.load("handlers/pricing.swift")` then imports them.
public final class PythonExports: @unchecked Sendable {
    // Filled once by the builder closure in `init`, read-only afterwards.
    public private(set) var functions: [PythonFunction] = []

    /// Adds a function built by hand (`export` is the typed way).
    public func add(_ function: PythonFunction) {
        functions.append(function)
    }

    public init(_ build: (PythonExports) -> Void) {
        build(self)
    }

    /// Offers `body` to Python as `name`. Each parameter and the result convert
    /// through `PythonConvertible`; a wrong type raises `TypeError` naming the
    /// argument, a thrown `PythonError` its own exception, any other thrown error
    /// `apus.SwiftError`. `releasesGIL` runs the body without the GIL.
    @inlinable  // specialised in the handler's module: no generic dispatch per call
    public func export<each Argument: PythonConvertible, Output: PythonConvertible>(
        _ name: String, releasesGIL: Bool = false, doc: String = "",
        _ body: @escaping @Sendable (repeat each Argument) throws -> Output
    ) {
        var arity = 0
        for _ in repeat (each Argument).self { arity += 1 }
        let call: @Sendable (UnsafeBufferPointer<PythonValue>) throws -> PythonValue = { arguments in
            var index = 0
            return try body(repeat try Self.argument(arguments, &index, as: (each Argument).self)).pythonValue
        }
        add(PythonFunction(name: name, arity: arity, releasesGIL: releasesGIL, documentation: doc, call: call))
    }

    /// Converts the next argument; `index` is inout (not captured) so no dynamic exclusivity check runs per call.
    @inlinable
    static func argument<T: PythonConvertible>(
        _ arguments: UnsafeBufferPointer<PythonValue>, _ index: inout Int, as _: T.Type
    ) throws(PythonError) -> T {
        defer { index += 1 }
        do {
            return try T(python: arguments[index])
        } catch {
            throw PythonError(error.kind, "argument \(index + 1): \(error.message)")
        }
    }
}
