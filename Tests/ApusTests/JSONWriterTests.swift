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
        // Thousandths and hundredths either side of zero, ties included: the fast path either
        // writes what `description` does or hands over to it.
        var mismatches: [Double] = []
        for step in stride(from: 0, through: 2_000_000, by: 7) {
            for value in [Double(step) / 1000, -Double(step) / 1000, Double(step) / 100 + 0.005, 0.49999999999999994 * Double(step)]
            where text(.double(value)) != value.description {
                mismatches.append(value)
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
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

    /// JSON's escaping, one byte at a time: what the word-at-a-time writer must match.
    func reference(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                out += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    @Test func escapesEachSpecialByteAtEveryPositionOfEveryLength() {
        // Lengths across the 1-3, 4-7 and word-loop paths, each special byte at each
        // position, and the bytes either side of the special ranges, which pass as they are.
        let specials: [Character] = ["\u{00}", "\u{01}", "\n", "\u{1F}", "\"", "\\", " ", "!", "#", "[", "]", "\u{7F}", "é", "✓"]
        for length in 1...26 {
            for position in 0..<length {
                for special in specials {
                    var characters = Array(repeating: Character("a"), count: length)
                    characters[position] = special
                    let value = String(characters)
                    #expect(text(.string(value)) == reference(value), "length \(length), position \(position)")
                    var writer = JSONWriter()
                    writer.object { $0.field("k", 1); $0.field(value, 2) }
                    #expect(String(decoding: writer.bytes, as: UTF8.self) == "{\"k\":1,\(reference(value)):2}")
                }
            }
        }
    }

    @Test func literalKeysAreEscapedLikeStringKeys() {
        var writer = JSONWriter()
        writer.object { o in
            o.field("a", 1)  // a one-scalar literal: a StaticString without a pointer
            o.field("", 2)
            o.field("q\"k\\", 3)
            o.field("a key longer than sixteen bytes", 4)
            o.field("é", 5)
            o.key("tab\there")
            o.element(6)
            o.field("nested", array: { $0.element(7) })
        }
        #expect(String(decoding: writer.bytes, as: UTF8.self)
            == #"{"a":1,"":2,"q\"k\\":3,"a key longer than sixteen bytes":4,"é":5,"tab\there":6,"nested":[7]}"#)
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
