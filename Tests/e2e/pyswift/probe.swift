// Exported to Python by the bridge tests (test_pybridge.py): one function per conversion.

struct Overdrawn: Error, CustomStringConvertible {
    let balance: Int
    var description: String { "account overdrawn by \(-balance)" }
}

let python = PythonExports { python in
    python.export("add") { (a: Int, b: Int) -> Int in a &+ b }
    python.export("scale") { (values: [Double], factor: Double) -> [Double] in values.map { $0 * factor } }
    python.export("negate") { (flag: Bool) -> Bool in !flag }
    python.export("shout") { (text: String) -> String in text.uppercased() + "!" }
    python.export("reverse_bytes") { (data: PythonBytes) -> PythonBytes in PythonBytes(data.bytes.reversed()) }
    python.export("maybe_double") { (value: Int?) -> Int? in value.map { $0 * 2 } }
    python.export("totals") { (prices: [String: Double]) -> [String: Double] in
        prices.merging(["total": prices.values.reduce(0, +)]) { $1 }
    }
    python.export("min_max") { (values: [Int]) throws -> PythonTuple<Int, Int> in
        guard let low = values.min(), let high = values.max() else { throw PythonError(.valueError, "min_max of an empty list") }
        return PythonTuple(low, high)
    }
    python.export("swap") { (pair: PythonTuple<String, Int>) -> PythonTuple<Int, String> in
        let (text, number) = pair.elements
        return PythonTuple(number, text)
    }
    python.export("identity") { (value: PythonValue) -> PythonValue in value }
    python.export("noop") { () -> PythonValue in .none }
    python.export("withdraw") { (balance: Int, amount: Int) throws -> Int in
        guard amount <= balance else { throw Overdrawn(balance: balance - amount) }
        return balance - amount
    }
    python.export("spin_holding_gil") { (n: Int) -> Int in spin(n) }
    python.export("spin_releasing_gil", releasesGIL: true) { (n: Int) -> Int in spin(n) }
}

func spin(_ n: Int) -> Int {
    var x: UInt64 = 0x9E37_79B9
    for i in 0..<n { x = (x &* 6364136223846793005) &+ UInt64(truncatingIfNeeded: i) }
    return Int(x >> 1)
}
