import ApusPlugins
import ApusRouting

/// What a native route points at.
public struct NativeRoute: Sendable {
    /// The loaded handler.
    public let library: HandlerLibrary
    /// Largest request body the handler receives (413 beyond).
    public let maxBodyBytes: Int

    public init(library: HandlerLibrary, maxBodyBytes: Int) {
        self.library = library
        self.maxBodyBytes = maxBodyBytes
    }
}

/// An immutable snapshot of the native routes. A reload builds a new one and
/// hands it to every event loop; requests already running keep the one they started with.
public final class Router: Sendable {
    /// The route table.
    public let table: RouteTable<NativeRoute>

    public init(table: RouteTable<NativeRoute>) { self.table = table }
}
