import ApusCompiler
import ApusConfig
import ApusSystem
import ArgumentParser
import FoundationEssentials

struct New: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Create something new from a template.",
        subcommands: [NewHandler.self]
    )
}

struct NewHandler: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handler",
        abstract: "Write a ready-to-run native handler file into the handlers folder.",
        discussion: """
            Writes NAME.swift into the config's [handlers] sources folder (./handlers without a config), \
            never over an existing file, and prints the route lines to add to the config \
            (or adds them with --add-route). `apus serve --dev` picks the file up on save.
            """
    )

    @Argument(help: "The handler's name: lower-case letters, digits, _ or -, starting with a letter.")
    var name: String

    @Option(name: .shortAndLong, help: "The gateway config whose handlers folder to use.")
    var config: String = "gateway.conf"

    @Option(help: "The route to serve it on.")
    var route: String?

    @Flag(help: "Append the [[route]] lines to the config file instead of printing them.")
    var addRoute = false

    @Flag(help: "Write a package handler (a folder with its own Package.swift, for dependencies) instead of one file.")
    var package = false

    func run() throws {
        guard isValidHandlerName(name) else {
            throw fail(NewHandlerError("\"\(name)\" is not a valid handler name: use lower-case letters, digits, _ or -, starting with a letter"))
        }
        let folder: String
        let configExists = FileManager.default.fileExists(atPath: config)
        if configExists {
            let loaded: GatewayConfig
            do {
                loaded = try GatewayConfig.load(file: config)
            } catch {
                throw fail(error)
            }
            folder = loaded.handlers.sourceDirectories.first ?? URL(fileURLWithPath: config).deletingLastPathComponent().appendingPathComponent("handlers").path
        } else {
            folder = "handlers"
        }
        let file = package ? "\(folder)/\(name)" : "\(folder)/\(name).swift"
        guard !FileManager.default.fileExists(atPath: file), !FileManager.default.fileExists(atPath: package ? "\(file).swift" : "\(folder)/\(name)") else {
            throw fail(NewHandlerError("\(file) (or a handler of the same name) already exists; not overwritten"))
        }
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            if package {
                let product = name.replacing("-", with: "_")
                let sources = "\(file)/Sources/\(product)"
                try FileManager.default.createDirectory(atPath: sources, withIntermediateDirectories: true)
                try Self.packageManifest(product: product).write(toFile: "\(file)/Package.swift", atomically: true, encoding: .utf8)
                try ("import ApusSDK\n\n" + Self.template(name: name)).write(toFile: "\(sources)/\(product).swift", atomically: true, encoding: .utf8)
                // The same two entry points the gateway compiles with every single-file handler.
                let exports = try String(contentsOfFile: HandlerSDK.locate().entrySource, encoding: .utf8)
                try exports.write(toFile: "\(sources)/Exports.swift", atomically: true, encoding: .utf8)
            } else {
                try Self.template(name: name).write(toFile: file, atomically: true, encoding: .utf8)
            }
        } catch {
            throw fail(NewHandlerError("cannot write \(file): \(describe(error))"))
        }
        let match = route ?? "GET /\(name)/{id}"
        let lines = "\n[[route]]\nmatch = \"\(match)\"\nhandler = \"\(name)\"\n"
        print("wrote \(file)")
        if addRoute && configExists {
            do {
                try appendText(lines, toFile: config)
            } catch {
                throw fail(NewHandlerError("cannot append to \(config): \(describe(error))"))
            }
            print("added to \(config):\(lines)")
        } else {
            print("add to \(configExists ? config : "your gateway config"):\(lines)")
        }
        if !configExists {
            print("(no \(config) here: [handlers] sources = \"handlers\" makes the gateway compile this folder)")
        }
    }

    static func packageManifest(product: String) -> String {
        """
        // swift-tools-version:6.0
        // A package handler: add dependencies here. apus builds it with `swift build`
        // and sets APUS_SDK_PACKAGE to the handler SDK; the product is a dynamic
        // library named like the folder.
        import PackageDescription

        let sdk = Context.environment["APUS_SDK_PACKAGE"] ?? "APUS_SDK_PACKAGE is set by apus when it builds this package"

        let package = Package(
            name: "\(product)",
            products: [.library(name: "\(product)", type: .dynamic, targets: ["\(product)"])],
            dependencies: [.package(name: "apus-sdk", path: sdk)],
            targets: [
                .target(name: "\(product)", dependencies: [.product(name: "ApusSDK", package: "apus-sdk")]),
            ]
        )

        """
    }

    static func template(name: String) -> String {
        """
        // \(name): a native Apus handler. The gateway compiles this file on start (and on
        // save with `apus serve --dev`); it holds only your code — Request, Response,
        // JSON and HTTPError come from the Apus handler SDK.
        //
        // Kinds: Handler.inline runs on the event loop (fast, must not block),
        // Handler.blocking on a thread pool, Handler.async as a Swift task.

        let handler = Handler.inline { request in
            // `{id}` in the route's pattern, percent-decoded.
            let id = request.pathParameters["id"] ?? ""
            guard !id.isEmpty else {
                // An HTTPError answers with its status and a JSON error body.
                throw HTTPError(400, "id is required")
            }
            // Query parameters decode too: /\(name)/42?verbose=1
            let verbose = request.queryParameter("verbose") == "1"

            // Build JSON straight into bytes with the streaming writer...
            return .json { json in
                json.object { body in
                    body.field("handler", "\(name)")
                    body.field("id", id)
                    body.field("length", id.count)
                    if verbose {
                        body.field("method", request.method)
                        body.field("path", request.path)
                    }
                }
            }
            // ...or from a literal: return .json(["id": .string(id)])
        }

        """
    }
}

/// A problem creating a handler file.
struct NewHandlerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct Build: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Compile every handler ahead of time into a folder that `apus serve` can use without a toolchain.",
        discussion: """
            Writes the handler libraries, the SDK library they link against and manifest.json to --output. \
            Serve from it with `apus serve --prebuilt DIR` or `[handlers] prebuilt = "DIR"`; no compiler is run then.
            """
    )

    @OptionGroup var options: ConfigOptions

    @Option(name: .shortAndLong, help: "The folder to write the prebuilt handlers to.")
    var output: String

    func run() async throws {
        let logger = bootstrapLogging(options.logLevel == "info" ? "warning" : options.logLevel)
        do {
            var config = try GatewayConfig.load(file: options.config)
            config.handlers.prebuilt = nil
            var builder = GatewayBuilder(config: config, logger: logger)
            builder.compileAll = true
            let result = try await builder.build()
            let compiled = result.handlers.values.map(\.compiled)
            try PrebuiltHandlers.write(compiled, to: output)
            for handler in compiled.sorted(by: { $0.name < $1.name }) {
                print("built \(handler.name) (\(handler.hash)) from \(handler.source)")
            }
            print("wrote \(compiled.count) handler(s) and manifest.json to \(output)")
        } catch {
            throw fail(error)
        }
    }
}
