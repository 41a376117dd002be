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
    /// What `/routes` on the admin listener shows, in config order.
    public let descriptions: [RouteDescription]

    public init(table: RouteTable<NativeRoute>, descriptions: [RouteDescription] = []) {
        self.table = table
        self.descriptions = descriptions
    }
}

/// One native route as the admin listener reports it.
public struct RouteDescription: Sendable {
    public let match: String
    public let handler: String
    public let kind: String
    public let source: String
    public let buildHash: String
    /// Seconds since 1970 when the handler's library was loaded.
    public let loadedAt: Double

    public init(match: String, handler: String, kind: String, source: String, buildHash: String, loadedAt: Double) {
        self.match = match
        self.handler = handler
        self.kind = kind
        self.source = source
        self.buildHash = buildHash
        self.loadedAt = loadedAt
    }
}
