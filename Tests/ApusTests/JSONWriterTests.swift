import Testing

@testable import ApusSDK

@Suite("SDK JSON writer")
struct JSONWriterTests {
    func text(_ value: JSON) -> String {
        var writer = JSONWriter()
        writer.element(value)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    @Test func writesCompactJSONLikePython() {
        #expect(text(["a": 1, "b": [true, false, nil], "c": "x"]) == #"{"a":1,"b":[true,false,null],"c":"x"}"#)
        #expect(text([]) == "[]")
        #expect(text([:]) == "{}")
        #expect(text(.int(-1234567890123)) == "-1234567890123")
        #expect(text(.int(Int.min)) == "-9223372036854775808")
        #expect(text(0.1) == "0.1")
        #expect(text(129.76) == "129.76")
        // The two-decimal fast path writes what `description` (and Python's repr) would.
        for cents in [0, 1, 5, 10, 99, 100, 101, 14890, 12_999, -1, -50, -125, 123_456_789_012] {
            let value = Double(cents) / 100
            #expect(text(.double(value)) == value.description, "\(value)")
        }
        #expect(text(-0.0) == "-0.0")
        #expect(text(114742.81999999999) == "114742.81999999999")
        #expect(text(1e16) == "1e+16")
        #expect(text(0.001) == "0.001")
        #expect(text(100.0) == "100.0")
        #expect(text(.double(.nan)) == "null")
    }

    @Test func escapesStrings() {
        #expect(text("q\"b\\n\n\t\u{01}é") == #""q\"b\\n\n\t\u0001é""#)
        // Clean strings of every length around the small-string boundary, then an escape at the end of each.
        for length in [0, 1, 7, 8, 15, 16, 17, 40] {
            let clean = String(repeating: "a", count: length)
            #expect(text(.string(clean)) == "\"\(clean)\"")
            #expect(text(.string(clean + "\"")) == "\"\(clean)\\\"\"")
        }
    }

    @Test func writesEveryIntegerLikeDescription() {
        var values: [Int] = [0, 9, 10, 99, 100, 101, 999, 1000, Int.max, Int.min, Int.min + 1]
        var power = 1
        for _ in 0..<18 {
            power *= 10
            values += [power - 1, power, power + 1, -power, -(power - 1)]
        }
        for value in values {
            #expect(text(.int(value)) == String(value), "\(value)")
        }
    }

    @Test func streamingWriterNestsWithCommas() {
        var writer = JSONWriter()
        writer.object { o in
            o.field("n", 1)
            o.field("list", array: { a in
                a.element("x")
                a.object { $0.field("k", Optional<Int>.none) }
            })
            o.field("z", 2.5)
        }
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #"{"n":1,"list":["x",{"k":null}],"z":2.5}"#)
    }

    @Test func queryParametersDecode() {
        let request = Request(method: "GET", path: "/", query: "a=1&b=hello+world&c=%E2%9C%93&d")
        #expect(request.queryParameter("b") == "hello world")
        #expect(request.queryParameter("c") == "✓")
        #expect(request.queryParameter("d") == "")
        #expect(request.queryParameter("e") == nil)
    }
}

@Suite("SDK headers")
struct SDKHeadersTests {
    @Test func lookupIgnoresASCIICaseAndTakesTheFirst() {
        let headers = Headers([("Content-Type", "a"), ("X-Trace", "1"), ("x-trace", "2"), ("X-[", "bracket")])
        #expect(headers["content-type"] == "a")
        #expect(headers["CONTENT-TYPE"] == "a")
        #expect(headers["x-trace"] == "1")
        #expect(headers["x-trac"] == nil)
        #expect(headers["missing"] == nil)
        // Only letters fold: "[" (0x5B) and "{" (0x7B) differ by the same bit.
        #expect(headers["x-{"] == nil)
        #expect(headers["X-["] == "bracket")
    }
}
