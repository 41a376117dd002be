// GET /notes/{id}: reads a note the Python app wrote, straight from SQLite.
// A blocking handler: it runs on Apus's thread pool, so the event loop never waits on the disk.

import ApusSDK
import CSQLite

#if canImport(Glibc)
    import Glibc
#endif

/// SQLITE_TRANSIENT: SQLite copies bound text before the call returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

let handler = Handler.blocking { request in
    guard let id = Int64(request.pathParameters["id"] ?? "") else { throw HTTPError(400, "id must be an integer") }
    let path = getenv("NOTES_DB").map { String(cString: $0) } ?? "/tmp/apus-notes.db"

    var database: OpaquePointer?
    guard sqlite3_open_v2(path, &database, SQLITE_OPEN_READONLY, nil) == SQLITE_OK else {
        sqlite3_close(database)
        throw HTTPError(503, "notes database unavailable")
    }
    defer { sqlite3_close(database) }
    sqlite3_busy_timeout(database, 1000)

    var statement: OpaquePointer?
    guard sqlite3_prepare_v2(database, "SELECT id, text, created FROM notes WHERE id = ?", -1, &statement, nil) == SQLITE_OK else {
        throw HTTPError(503, "notes table not ready")
    }
    defer { sqlite3_finalize(statement) }
    sqlite3_bind_int64(statement, 1, id)
    guard sqlite3_step(statement) == SQLITE_ROW else { throw HTTPError(404, "no note \(id)") }

    func text(_ column: Int32) -> String {
        sqlite3_column_text(statement, column).map { String(cString: $0) } ?? ""
    }
    let noteID = Int(sqlite3_column_int64(statement, 0))
    let body = text(1)
    let created = text(2)
    return .json { json in
        json.object { note in
            note.field("id", noteID)
            note.field("text", body)
            note.field("created", created)
        }
    }
}
