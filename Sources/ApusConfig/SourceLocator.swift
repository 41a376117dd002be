import ApusSystem

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
        // Arrays of tables seen so far, by qualified name ("route", "server.tls[0].sni"), with their counts.
        var arrayCounts: [String: Int] = [:]
        // `a.b.c` becomes `a[i].b.c` when `a` is an array of tables: sub-tables belong to its last element.
        func qualify(_ name: String) -> String {
            var qualified = ""
            for part in name.split(separator: ".") {
                qualified += qualified.isEmpty ? String(part) : ".\(part)"
                if let count = arrayCounts[qualified] {
                    qualified += "[\(count - 1)]"
                }
            }
            return qualified
        }
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.drop(while: { $0 == " " || $0 == "\t" })
            let number = offset + 1
            if line.hasPrefix("[[") {
                let name = Self.clean(line.dropFirst(2).prefix(while: { $0 != "]" }))
                let parts = name.split(separator: ".")
                let parent = parts.count > 1 ? qualify(parts.dropLast().joined(separator: ".")) : ""
                let key = parent.isEmpty ? String(parts.last ?? "") : "\(parent).\(parts.last ?? "")"
                let index = arrayCounts[key, default: 0]
                arrayCounts[key] = index + 1
                currentTable = "\(key)[\(index)]"
                tableLines[currentTable] = number
            } else if line.hasPrefix("[") {
                currentTable = qualify(Self.clean(line.dropFirst().prefix(while: { $0 != "]" })))
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
            $0.trimming(" \t\"'")
        }.joined(separator: ".")
    }

    /// The line of `key` in `table` ("" for the top level, "route[1]" for an array element),
    /// else the table's header line.
    func line(table: String, key: String?) -> Int? {
        if let key, let line = keyLines[KeyLine(table: table, key: key)] { return line }
        return tableLines[table]
    }
}
