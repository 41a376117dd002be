// The CPython side of `PythonExports`: builds the extension module and converts
// arguments and results. Compiled by `apus python build` against the headers of
// the interpreter that loads it (module `ApusPython`), never into the gateway.
// Every call runs with the GIL held except an opted-in function's body.

import ApusSDK
import CApusPython

typealias PyPointer = UnsafeMutablePointer<PyObject>

/// Builds extension modules from a file's `PythonExports`.
public enum ApusPythonBridge {
    /// The body of the module's `PyInit_<name>`: a new module with one builtin
    /// function per export, or nil with a Python exception set.
    public static func makeModule(name: String, exports: PythonExports) -> OpaquePointer? {
        guard let module = apus_py_module_create(name, "Swift functions compiled by apus from \(name).swift") else { return nil }
        let moduleName = PyUnicode_FromString(name)
        defer { apus_py_decref(moduleName) }
        let errorClass = swiftErrorClass(module: name)
        for function in exports.functions {
            let box = FunctionBox(function: function, errorClass: errorClass)
            // The box lives as long as the function object: the capsule owns one reference.
            guard let capsule = PyCapsule_New(Unmanaged.passRetained(box).toOpaque(), nil, { capsule in
                guard let capsule, let pointer = PyCapsule_GetPointer(capsule, nil) else { return }
                Unmanaged<FunctionBox>.fromOpaque(pointer).release()
            }) else {
                apus_py_decref(module)
                return nil
            }
            let object = apus_py_function_create(function.name, function.documentation, trampoline, capsule, moduleName)
            apus_py_decref(capsule)
            // PyModule_AddObject steals the reference only on success.
            guard let object, PyModule_AddObject(module, function.name, object) == 0 else {
                apus_py_decref(object)
                apus_py_decref(module)
                return nil
            }
        }
        return OpaquePointer(module)
    }

    /// `apus.SwiftError` when the `apus` package is importable (it is under
    /// `apus.load`), so one `except` catches errors from every module; otherwise
    /// a RuntimeError subclass of this module's own.
    private static func swiftErrorClass(module: String) -> PyPointer? {
        if let package = PyImport_ImportModule("apus") {
            defer { apus_py_decref(package) }
            if let errorClass = PyObject_GetAttrString(package, "SwiftError") { return errorClass }
        }
        PyErr_Clear()
        return PyErr_NewException("\(module).SwiftError", apus_py_exc_runtime_error(), nil)
    }
}

/// The one C entry point of every exported function; `self` is the function's capsule.
private let trampoline: apus_py_fastcall = { capsule, arguments, count in
    guard let capsule, let pointer = PyCapsule_GetPointer(capsule, nil) else { return nil }
    return Unmanaged<FunctionBox>.fromOpaque(pointer).takeUnretainedValue().invoke(arguments, count)
}

private final class FunctionBox {
    let function: PythonFunction
    let errorClass: PyPointer?

    init(function: PythonFunction, errorClass: PyPointer?) {
        self.function = function
        self.errorClass = errorClass
    }

    func invoke(_ arguments: UnsafePointer<PyPointer>?, _ count: Py_ssize_t) -> PyPointer? {
        guard count == function.arity else {
            let plural = function.arity == 1 ? "" : "s"
            PyErr_SetString(
                apus_py_exc_type_error(), "\(function.name)() takes \(function.arity) argument\(plural) (\(count) given)")
            return nil
        }
        // Arguments live on the stack for the call: no array allocation per call.
        let result: Result<PythonValue, any Error>? = withUnsafeTemporaryAllocation(of: PythonValue.self, capacity: count) { values in
            for index in 0..<count {
                do throws(PythonError) {
                    (values.baseAddress! + index).initialize(to: try PythonConversion.value(arguments![index], depth: 0))
                } catch {
                    values.baseAddress!.deinitialize(count: index)
                    raise(PythonError(error.kind, "\(function.name)(): argument \(index + 1): \(error.message)"))
                    return nil
                }
            }
            defer { values.baseAddress?.deinitialize(count: count) }
            let arguments = UnsafeBufferPointer(values)
            guard function.releasesGIL else { return Result { try function.call(arguments) } }
            let state = PyEval_SaveThread()
            defer { PyEval_RestoreThread(state) }
            return Result { try function.call(arguments) }
        }
        guard let result else { return nil }
        switch result {
        case .success(let value):
            return PythonConversion.object(value)
        case .failure(let error as PythonError):
            raise(PythonError(error.kind, "\(function.name)(): \(error.message)"))
        case .failure(let error as HTTPError) where (400..<500).contains(error.status):
            // A handler's "bad input" answer: in Python, that is a ValueError.
            raise(PythonError(.valueError, "\(function.name)(): \(error.message)"))
        case .failure(let error):
            PyErr_SetString(errorClass ?? apus_py_exc_runtime_error(), "\(function.name)(): \(error)")
        }
        return nil
    }

    private func raise(_ error: PythonError) {
        let type: PyPointer =
            switch error.kind {
            case .typeError: apus_py_exc_type_error()
            case .valueError: apus_py_exc_value_error()
            case .overflowError: apus_py_exc_overflow_error()
            case .keyError: apus_py_exc_key_error()
            case .runtimeError: apus_py_exc_runtime_error()
            }
        PyErr_SetString(type, error.message)
    }
}

/// PyObject ⇄ PythonValue. Both directions run with the GIL held.
enum PythonConversion {
    /// Deep enough for real data; a self-containing list stops here instead of overflowing the stack.
    static let maximumDepth = 64

    static func value(_ object: PyPointer, depth: Int) throws(PythonError) -> PythonValue {
        guard depth < maximumDepth else { throw PythonError(.valueError, "nested deeper than \(maximumDepth) levels") }
        if apus_py_is_none(object) != 0 { return .none }
        if apus_py_is_bool(object) != 0 { return .bool(apus_py_is_true(object) != 0) }
        if apus_py_is_int(object) != 0 {
            var overflow: Int32 = 0
            let int = PyLong_AsLongLongAndOverflow(object, &overflow)
            if overflow != 0 { throw PythonError(.overflowError, "int does not fit in a 64-bit Swift Int") }
            if int == -1, PyErr_Occurred() != nil { throw pendingError() }
            return .int(Int(int))
        }
        if apus_py_is_float(object) != 0 { return .float(PyFloat_AsDouble(object)) }
        if apus_py_is_str(object) != 0 {
            var size: Py_ssize_t = 0
            guard let utf8 = PyUnicode_AsUTF8AndSize(object, &size) else { throw pendingError() }
            return .string(String(decoding: UnsafeRawBufferPointer(start: utf8, count: size), as: UTF8.self))
        }
        if apus_py_is_bytes(object) != 0 {
            let size = PyBytes_Size(object)
            guard let bytes = PyBytes_AsString(object) else { throw pendingError() }
            return .bytes(Array(UnsafeRawBufferPointer(start: bytes, count: size)))
        }
        if apus_py_is_list(object) != 0 {
            // The list cannot change meanwhile: no Python code runs while we hold the GIL and call none.
            return .list(try values(object, count: apus_py_list_size, item: apus_py_list_item, depth: depth))
        }
        if apus_py_is_tuple(object) != 0 {
            return .tuple(try values(object, count: apus_py_tuple_size, item: apus_py_tuple_item, depth: depth))
        }
        if apus_py_is_dict(object) != 0 {
            var pairs: [(PythonValue, PythonValue)] = []
            pairs.reserveCapacity(PyDict_Size(object))
            var position: Py_ssize_t = 0
            var key: PyPointer?
            var item: PyPointer?
            while PyDict_Next(object, &position, &key, &item) != 0 {
                guard let key, let item else { continue }
                pairs.append((try value(key, depth: depth + 1), try value(item, depth: depth + 1)))
            }
            return .dict(pairs)
        }
        throw PythonError(
            .typeError,
            "\(String(cString: apus_py_type_name(object))) has no Swift conversion (None, bool, int, float, str, bytes, list, tuple and dict do)")
    }

    /// A new reference, or nil with a Python exception set.
    static func object(_ value: PythonValue) -> PyPointer? {
        switch value {
        case .none:
            return apus_py_none()
        case .bool(let bool):
            return apus_py_bool(bool ? 1 : 0)
        case .int(let int):
            return PyLong_FromLongLong(Int64(int))
        case .float(let double):
            return PyFloat_FromDouble(double)
        case .string(var string):
            return string.withUTF8 { utf8 in
                utf8.withMemoryRebound(to: CChar.self) { PyUnicode_FromStringAndSize($0.baseAddress, $0.count) }
            }
        case .bytes(let bytes):
            return bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PyBytes_FromStringAndSize($0.baseAddress, $0.count) }
            }
        case .list(let items):
            return sequence(items, new: PyList_New, set: apus_py_list_set)
        case .tuple(let items):
            return sequence(items, new: PyTuple_New, set: apus_py_tuple_set)
        case .dict(let pairs):
            guard let dict = PyDict_New() else { return nil }
            for (key, item) in pairs {
                let keyObject = object(key)
                let itemObject = object(item)
                defer {
                    apus_py_decref(keyObject)
                    apus_py_decref(itemObject)
                }
                guard let keyObject, let itemObject, PyDict_SetItem(dict, keyObject, itemObject) == 0 else {
                    apus_py_decref(dict)
                    return nil
                }
            }
            return dict
        }
    }

    /// The items of a list or tuple, through that type's size and borrowed-item accessors.
    private static func values(
        _ object: PyPointer, count: (PyPointer) -> Py_ssize_t, item: (PyPointer, Py_ssize_t) -> PyPointer, depth: Int
    ) throws(PythonError) -> [PythonValue] {
        let count = count(object)
        var items: [PythonValue] = []
        items.reserveCapacity(count)
        for index in 0..<count { items.append(try value(item(object, index), depth: depth + 1)) }
        return items
    }

    /// A new list or tuple holding `items`, or nil with a Python exception set.
    private static func sequence(
        _ items: [PythonValue], new: (Py_ssize_t) -> PyPointer?, set: (PyPointer, Py_ssize_t, PyPointer) -> Void
    ) -> PyPointer? {
        guard let sequence = new(items.count) else { return nil }
        for (index, item) in items.enumerated() {
            guard let element = object(item) else {
                apus_py_decref(sequence)
                return nil
            }
            set(sequence, index, element)  // steals `element`
        }
        return sequence
    }

    /// Takes the exception CPython set and turns it into a PythonError (clearing it).
    private static func pendingError() -> PythonError {
        var type: PyPointer?
        var value: PyPointer?
        var traceback: PyPointer?
        PyErr_Fetch(&type, &value, &traceback)
        defer {
            apus_py_decref(type)
            apus_py_decref(value)
            apus_py_decref(traceback)
        }
        var message = "conversion failed"
        if let value, let text = PyObject_Str(value) {
            defer { apus_py_decref(text) }
            if let utf8 = PyUnicode_AsUTF8(text) { message = String(cString: utf8) } else { PyErr_Clear() }
        }
        return PythonError(.valueError, message)
    }
}
