import ArgumentParser

/// The `apus` command line.
@main
struct Apus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apus",
        abstract: "A Swift front proxy for Python web services.",
        discussion: """
            Apus serves the routes a config file marks native from compiled Swift handlers \
            and forwards everything else to your Python ASGI/WSGI server over a Unix socket.

              apus serve --config gateway.conf    compile handlers (cached), start the backend, serve
              apus check --config gateway.conf    validate the config, compile handlers, list routes
            """,
        version: "0.1.0",
        subcommands: [Serve.self, Check.self]
    )
}

/// Options every command that reads a config shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The gateway config file (TOML). Relative paths inside it resolve against its folder.")
    var config: String = "gateway.conf"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"
}
