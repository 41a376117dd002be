import ApusConfig
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// A certificate problem, named by file, found at `apus check`, at start, or on reload.
public struct TLSConfigError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// The certificates of one TLS listener: the default chain, the SNI chains,
/// and the client CA. A reload builds a complete new set first and swaps it in
/// only when every file loaded and checked out; until then the old set keeps
/// serving. New connections take the current set; open ones keep theirs.
public final class TLSCertificateStore: Sendable {
    private struct Loaded: Sendable {
        let context: NIOSSLContext
        let sni: [(names: [String], chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)]
    }

    /// The listener this store serves.
    public let listener: GatewayConfig.TLSListener
    private let current: NIOLockedValueBox<Loaded?> = NIOLockedValueBox(nil)
    /// The files as they were at the last load, whether it worked or not: a file
    /// that failed to load is tried again when it changes again, not every second.
    private let attempted: NIOLockedValueBox<[String: FileStamp?]> = NIOLockedValueBox([:])

    /// Loads and checks every file; throws with the file and the problem.
    public init(listener: GatewayConfig.TLSListener) throws {
        self.listener = listener
        try reload()
    }

    /// The context new connections use.
    var context: NIOSSLContext { current.withLockedValue { $0!.context } }

    /// Whether any of the files changed since the last load (successful or not).
    func filesChanged() -> Bool {
        attempted.withLockedValue { $0 }.contains { path, stamp in FileStamp(path) != stamp }
    }

    /// Re-reads the files; on any problem the old certificates stay and the error is thrown.
    public func reload() throws {
        // Taken before the files are read: a change while they are read shows as a change next time.
        let stamps = Dictionary(files.map { ($0, FileStamp($0)) }, uniquingKeysWith: { a, _ in a })
        attempted.withLockedValue { $0 = stamps }
        let loaded = try load()
        current.withLockedValue { $0 = loaded }
    }

    private var files: [String] {
        [listener.certificate, listener.privateKey] + (listener.clientCA.map { [$0] } ?? [])
            + listener.sni.flatMap { [$0.certificate, $0.privateKey] }
    }

    private func load() throws -> Loaded {
        let (chain, key) = try Self.loadPair(certificate: listener.certificate, key: listener.privateKey)
        var sni: [(names: [String], chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)] = []
        for entry in listener.sni {
            let (chain, key) = try Self.loadPair(certificate: entry.certificate, key: entry.privateKey)
            sni.append((entry.serverNames, chain, key))
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["h2", "http/1.1"]
        if let clientCA = listener.clientCA {
            do {
                _ = try NIOSSLCertificate.fromPEMFile(clientCA)
            } catch {
                throw TLSConfigError(description: "client CA \(clientCA): not a PEM certificate bundle (\(error))")
            }
            configuration.trustRoots = .file(clientCA)
            configuration.certificateVerification = listener.requireClientCertificate ? .noHostnameVerification : .optionalVerification
        }
        if !sni.isEmpty {
            // Chosen per handshake from the set loaded with this context.
            let choices = sni
            configuration.sslContextCallback = { values, promise in
                guard let name = values.serverHostname?.lowercased(),
                    let match = choices.first(where: { $0.names.contains { Self.nameMatches(pattern: $0, name: name) } })
                else {
                    promise.succeed(.noChanges)
                    return
                }
                var override = NIOSSLContextConfigurationOverride()
                override.certificateChain = match.chain.map { .certificate($0) }
                override.privateKey = .privateKey(match.key)
                promise.succeed(override)
            }
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSConfigError(description: "TLS listener \(listener.listen): cannot build a TLS context: \(error)")
        }
        return Loaded(context: context, sni: sni)
    }

    /// `*.example.com` matches exactly one leading label.
    static func nameMatches(pattern: String, name: String) -> Bool {
        if pattern.hasPrefix("*.") {
            guard let dot = name.firstIndex(of: ".") else { return false }
            return name[name.index(after: dot)...] == pattern.dropFirst(2)
        }
        return pattern == name
    }

    /// Loads a chain and its key, and checks that they belong together and that the leaf is in date.
    static func loadPair(certificate: String, key keyPath: String) throws -> ([NIOSSLCertificate], NIOSSLPrivateKey) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate)
        } catch {
            throw TLSConfigError(description: "certificate \(certificate): not a PEM certificate chain (\(error))")
        }
        guard let leaf = chain.first else { throw TLSConfigError(description: "certificate \(certificate): no certificate in the file") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw TLSConfigError(description: "private key \(keyPath): not a PEM private key (\(error))")
        }
        let now = time(nil)
        if leaf.notValidAfter < now {
            throw TLSConfigError(description: "certificate \(certificate) expired on \(Self.format(leaf.notValidAfter))")
        }
        if leaf.notValidBefore > now {
            throw TLSConfigError(description: "certificate \(certificate) is not valid before \(Self.format(leaf.notValidBefore))")
        }
        // BoringSSL refuses a key that does not match the leaf when both go into one context.
        var check = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(leaf)], privateKey: .privateKey(key))
        check.minimumTLSVersion = .tlsv12
        do {
            _ = try NIOSSLContext(configuration: check)
        } catch {
            throw TLSConfigError(description: "private key \(keyPath) does not match certificate \(certificate) (\(error))")
        }
        return (chain, key)
    }

    private static func format(_ value: time_t) -> String {
        Date(timeIntervalSince1970: TimeInterval(value)).ISO8601Format()
    }
}

/// What the reload check compares: the file a path leads to (symbolic links
/// followed), its size and its modification time. A Kubernetes secret volume
/// updates by swapping a `..data` link, so the configured path and the link it
/// names keep their own times: only the file at the end of the links changes,
/// often as a new inode. One `stat` call (a `FileManager` attributes lookup read
/// the link itself, and `/etc/passwd` and `/etc/group` for the owner's names,
/// every second).
struct FileStamp: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let modifiedSeconds: Int
    let modifiedNanoseconds: Int

    /// `nil` when nothing can be read at `path`.
    init?(_ path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        #if canImport(Darwin)
        modifiedSeconds = info.st_mtimespec.tv_sec
        modifiedNanoseconds = info.st_mtimespec.tv_nsec
        #else
        modifiedSeconds = info.st_mtim.tv_sec
        modifiedNanoseconds = info.st_mtim.tv_nsec
        #endif
    }
}
