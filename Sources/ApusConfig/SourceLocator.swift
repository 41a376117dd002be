/// Finds the line of a key in a TOML text. TOMLKit reports lines for syntax
/// errors but not for values, so semantic errors (unknown key, wrong type) are
/// located by this line scan over table headers and `key =` lines. It knows
/// dotted headers and arrays of tables; keys inside inline tables and
/// multi-line values resolve to the nearest line it can see.
struct SourceLocator {
    private struct KeyLine: Hashable {
        let table: String
        let key: String
    }
    private var keyLines: [KeyLine: Int] = [:]
    private var tableLines: [String: Int] = [:]

    init(text: String) {
        var currentTable = ""
        var arrayCounts: [String: Int] = [:]
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.drop(while: { $0 == " " || $0 == "\t" })
            let number = offset + 1
            if line.hasPrefix("[[") {
                let name = Self.clean(line.dropFirst(2).prefix(while: { $0 != "]" }))
                let index = arrayCounts[name, default: 0]
                arrayCounts[name] = index + 1
                currentTable = "\(name)[\(index)]"
                tableLines[currentTable] = number
            } else if line.hasPrefix("[") {
                let name = Self.clean(line.dropFirst().prefix(while: { $0 != "]" }))
                // `[route.x]` under an array of tables belongs to its last element.
                if let dot = name.firstIndex(of: "."), let count = arrayCounts[String(name[..<dot])] {
                    currentTable = "\(name[..<dot])[\(count - 1)]\(name[dot...])"
                } else {
                    currentTable = name
                }
                if tableLines[currentTable] == nil { tableLines[currentTable] = number }
            } else if let equals = line.firstIndex(of: "="), !line.hasPrefix("#") {
                let key = Self.clean(line[..<equals])
                let full = KeyLine(table: currentTable, key: key)
                if keyLines[full] == nil { keyLines[full] = number }
            }
        }
    }

    private static func clean(_ text: Substring) -> String {
        text.split(separator: ".").map {
            $0.trimmingCharacters(in: " \t\"'")
        }.joined(separator: ".")
    }

    /// The line of `key` in `table` ("" for the top level, "route[1]" for an array element),
    /// else the table's header line.
    func line(table: String, key: String?) -> Int? {
        if let key, let line = keyLines[KeyLine(table: table, key: key)] { return line }
        return tableLines[table]
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var slice = self[...]
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}
