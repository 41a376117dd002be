// The benchmark's native route: a fixed 2 KiB JSON body, as nginx's `return 200` serves it.
// Built once into bytes; each request only copies them into the response.
let fixedBody: [UInt8] = {
    var writer = JSONWriter(capacity: 2048)
    writer.object { root in
        root.field("items", array: { items in
            for index in 0..<35 {
                items.object { item in
                    item.field("id", index)
                    let digits = String(index)
                    item.field("name", "item-" + String(repeating: "0", count: 4 - digits.count) + digits)
                    item.field("price", 10 + Double(index) * 0.25)
                    item.field("tags", array: { tags in
                        tags.element("a")
                        tags.element("b")
                    })
                }
            }
        })
    }
    return writer.bytes
}()

let handler = Handler.inline { _ in .json(bytes: fixedBody) }
