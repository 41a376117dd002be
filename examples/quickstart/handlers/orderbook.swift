// GET /orderbook/{symbol}?n=200 — the quickstart's hot path, served natively.
// Generates deterministic order-book records, validates them and writes compact
// JSON, byte-identical to orderbook.py (same SplitMix64, same field order).

struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func fnv1a(_ text: String) -> UInt64 {
    var value: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in text.utf8 { value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return value
}

struct Order {
    let price: Double
    let qty: Int
    let side: String
    let ts: Int
}

func isSymbol(_ text: String) -> Bool {
    (1...8).contains(text.utf8.count) && text.utf8.allSatisfy { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
}

/// The order book for `symbol` as compact JSON: the one serializer behind the
/// native route and the Python import below.
func orderbookJSON(symbol: String, count: Int) throws(HTTPError) -> [UInt8] {
    guard isSymbol(symbol) else { throw HTTPError(422, "symbol must be 1-8 upper-case letters") }
    guard (1...10_000).contains(count) else { throw HTTPError(422, "n must be between 1 and 10000") }
    var random = SplitMix64(state: fnv1a(symbol))
    var orders: [Order] = []
    orders.reserveCapacity(count)
    for index in 0..<count {
        let priceCents = 10_000 + random.next() % 5_000
        let qty = 1 + Int(random.next() % 1_000)
        let side = random.next() & 1 == 0 ? "buy" : "sell"
        orders.append(Order(price: Double(priceCents) / 100, qty: qty, side: side, ts: 1_700_000_000_000 + index * 137))
    }
    var totalQty = 0
    var notional = 0.0
    for order in orders {
        guard order.price > 0, order.qty > 0, order.side == "buy" || order.side == "sell" else {
            throw HTTPError(422, "invalid record")
        }
        totalQty += order.qty
        notional += order.price * Double(order.qty)
    }
    var json = JSONWriter(capacity: 96 + count * 88)
    json.object { doc in
        doc.field("symbol", symbol)
        doc.field("count", count)
        doc.field("total_qty", totalQty)
        doc.field("notional", notional)
        doc.field("orders", array: { list in
            for order in orders {
                list.object { o in
                    o.field("symbol", symbol)
                    o.field("price", order.price)
                    o.field("qty", order.qty)
                    o.field("side", order.side)
                    o.field("ts", order.ts)
                }
            }
        })
    }
    return json.bytes
}

let handler = Handler.inline { request in
    guard let count = Int(request.queryParameter("n") ?? "200") else { throw HTTPError(422, "n must be between 1 and 10000") }
    return .json(bytes: try orderbookJSON(symbol: request.pathParameters["symbol"] ?? "", count: count))
}

// The same serializer, imported by the Python app (app.py) for a route that must
// stay in Python. A thrown 4xx HTTPError reaches Python as ValueError.
let python = PythonExports { python in
    python.export("orderbook_json", doc: "orderbook_json(symbol, n) -> bytes: the native route's body") { (symbol: String, count: Int) in
        PythonBytes(try orderbookJSON(symbol: symbol, count: count))
    }
}
