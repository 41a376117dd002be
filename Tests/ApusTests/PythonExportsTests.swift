import Testing

@testable import ApusSDK

@Suite("SDK Python exports (the pure-Swift half; the CPython half is tested end to end)")
struct PythonExportsTests {
    func call(_ exports: PythonExports, _ name: String, _ arguments: [PythonValue]) throws -> PythonValue {
        let function = try #require(exports.functions.first { $0.name == name })
        #expect(function.arity == arguments.count)
        return try arguments.withUnsafeBufferPointer { try function.call($0) }
    }

    let exports = PythonExports { python in
        python.export("price") { (qty: Int, px: Double) -> Double in Double(qty) * px }
        python.export("pair") { (names: [String], table: [String: Int]) -> PythonTuple<Int, Int?> in
            PythonTuple(names.count, table[names.first ?? ""])
        }
        python.export("nothing") { () -> String? in nil }
        python.export("slow", releasesGIL: true) { (n: Int) -> Int in n }
    }

    @Test func convertsTypedArgumentsAndResults() throws {
        #expect(try call(exports, "price", [.int(3), .int(2)]) == .float(6))
        #expect(try call(exports, "price", [.bool(true), .float(2.5)]) == .float(2.5))
        let pair = try call(exports, "pair", [.tuple([.string("a"), .string("b")]), .dict([(.string("a"), .int(7))])])
        #expect(pair == .tuple([.int(2), .int(7)]))
        #expect(try call(exports, "nothing", []) == PythonValue.none)
        #expect(exports.functions.map(\.releasesGIL) == [false, false, false, true])
    }

    @Test func wrongTypesNameTheArgumentAndTheItem() {
        #expect(throws: PythonError.self) { try call(exports, "price", [.int(1), .string("x")]) }
        do {
            _ = try call(exports, "pair", [.list([.string("a"), .int(1)]), .dict([])])
            Issue.record("expected a TypeError")
        } catch let error as PythonError {
            #expect(error.kind == .typeError)
            #expect(error.message == "argument 1: item 1: expected str, got int")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
