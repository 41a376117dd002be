import ApusConfig
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

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
        let modificationTimes: [String: Date]
    }

    /// The listener this store serves.
    public let listener: GatewayConfig.TLSListener
    private let current: NIOLockedValueBox<Loaded?> = NIOLockedValueBox(nil)

    /// Loads and checks every file; throws with the file and the problem.
    public init(listener: GatewayConfig.TLSListener) throws {
        self.listener = listener
        let loaded = try load()
        current.withLockedValue { $0 = loaded }
    }

    /// The context new connections use.
    var context: NIOSSLContext { current.withLockedValue { $0!.context } }

    /// Whether any of the files changed since the last successful load.
    func filesChanged() -> Bool {
        let known = current.withLockedValue { $0!.modificationTimes }
        return known.contains { path, time in Self.modificationTime(path) != time }
    }

    /// Re-reads the files; on any problem the old certificates stay and the error is thrown.
    public func reload() throws {
        let loaded = try load()
        current.withLockedValue { $0 = loaded }
    }

    private var files: [String] {
        [listener.certificate, listener.privateKey] + (listener.clientCA.map { [$0] } ?? [])
            + listener.sni.flatMap { [$0.certificate, $0.privateKey] }
    }

    private static func modificationTime(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    private func load() throws -> Loaded {
        let times = Dictionary(files.map { ($0, Self.modificationTime($0) ?? .distantPast) }, uniquingKeysWith: { a, _ in a })
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
        return Loaded(context: context, sni: sni, modificationTimes: times)
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
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(value)))
    }
}
