import ApusConfig
import ArgumentParser
import FoundationEssentials

/// The `apus` command line.
@main
struct Apus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apus",
        abstract: "A Swift front proxy for Python web services.",
        discussion: """
            Apus serves the routes a config file marks native from compiled Swift handlers \
            and forwards everything else to your Python ASGI/WSGI server over a Unix socket.

              apus new handler quote              scaffold handlers/quote.swift, ready to edit
              apus serve --config gateway.conf    compile handlers (cached), start the backend, serve
              apus serve --dev                    ... and recompile + hot-swap handlers on save
              apus check --config gateway.conf    validate the config, compile handlers, list routes
              apus build --output prebuilt        compile handlers ahead of time for a toolchain-free image
              apus reload --config gateway.conf   re-read config, handlers and certificates of a running gateway
              apus python build FILE ...          build a Swift file into a Python module (see the apus Python package)
            """,
        version: "0.1.0",
        subcommands: [Serve.self, Check.self, New.self, Build.self, Reload.self, PythonCommand.self]
    )
}

/// Options every command that reads a config shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The gateway config file (TOML). Relative paths inside it resolve against its folder.")
    var config: String = "gateway.conf"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "Serve handlers prebuilt by `apus build` from this folder; nothing is compiled.")
    var prebuilt: String?

    /// Loads the config and applies command-line overrides.
    func load() throws -> GatewayConfig {
        var config = try GatewayConfig.load(file: self.config)
        if let prebuilt { config.handlers.prebuilt = URL(fileURLWithPath: prebuilt).standardizedFileURL.path }
        return config
    }
}
