import ApusSystem
import FoundationEssentials

/// A folder of handlers built ahead of time by `apus build`, for images without
/// a toolchain: the libraries, the SDK library they link against (found through
/// their `$ORIGIN` rpath), and `manifest.json` naming each handler's file and hash.
public struct PrebuiltHandlers: Sendable {
    /// One entry of the manifest.
    public struct Entry: Codable, Sendable {
        public let name: String
        public let library: String
        public let hash: String
        public let source: String
    }

    private struct Manifest: Codable {
        var formatVersion = 1
        var handlers: [Entry]
    }

    /// The folder.
    public let directory: String
    /// Handlers by name, with absolute library paths.
    public let handlers: [String: Entry]

    /// Reads a prebuilt folder's manifest.
    public init(directory: String) throws(CompileError) {
        self.directory = directory
        let manifestPath = "\(directory)/manifest.json"
        guard let data = FileManager.default.contents(atPath: manifestPath) else {
            throw .io("\(manifestPath) not found: build the handlers with `apus build --config FILE --output \(directory)`")
        }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch {
            throw .io("\(manifestPath) is not an apus build manifest: \(error)")
        }
        var handlers: [String: Entry] = [:]
        for entry in manifest.handlers {
            handlers[entry.name] = Entry(name: entry.name, library: "\(directory)/\(entry.library)", hash: entry.hash, source: entry.source)
        }
        self.handlers = handlers
    }

    /// Copies compiled handlers and their SDK library into `directory` and writes the manifest.
    public static func write(_ compiled: [CompiledHandler], to directory: String) throws(CompileError) {
        let manager = FileManager.default
        do {
            try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
            var entries: [Entry] = []
            var sdkFolders = Set<String>()
            for handler in compiled.sorted(by: { $0.name < $1.name }) {
                let file = URL(fileURLWithPath: handler.libraryPath).lastPathComponent
                let target = "\(directory)/\(file)"
                if manager.fileExists(atPath: target) { try manager.removeItem(atPath: target) }
                try manager.copyItem(atPath: handler.libraryPath, toPath: target)
                entries.append(Entry(name: handler.name, library: file, hash: handler.hash, source: handler.source))
                sdkFolders.insert(handler.sdkDirectory)
            }
            for folder in sdkFolders {
                let target = "\(directory)/\(URL(fileURLWithPath: folder).lastPathComponent)"
                if manager.fileExists(atPath: target) { try manager.removeItem(atPath: target) }
                try manager.copyItem(atPath: folder, toPath: target)
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(Manifest(handlers: entries)).write(to: URL(fileURLWithPath: "\(directory)/manifest.json"))
        } catch let error as CompileError {
            throw error
        } catch {
            throw .io("cannot write prebuilt handlers to \(directory): \(describe(error))")
        }
    }
}
