// swift-tools-version:6.1
import PackageDescription

// One setting list for every Swift target, as in Hummingbird.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    // A module's members come only from what it imports itself: TOMLKit imports Foundation,
    // and without this its `String.contains` would be picked over the standard library's,
    // and link all of Foundation into the gateway.
    .enableUpcomingFeature("MemberImportVisibility"),
    // Exclusive access is checked at run time in debug builds, which run every test;
    // release builds rely on those runs. The checks were a sixth of the instructions of
    // a native request (callgrind): each access to a handler's stored state went
    // through the runtime's access set. Handler plugins keep the checks.
    // A flag here reaches only this package's targets; the release builds of the
    // gateway (bench/run.py, Docker/Dockerfile) also pass
    // `-Xswiftc -enforce-exclusivity=unchecked`, so that SwiftNIO's checks go as well
    // (Xcode's default for release builds): about 10 % of each request's instructions.
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]
// The gateway imports FoundationEssentials only (ApusSystem has the rest), but TOMLKit
// imports Foundation for types that live in FoundationEssentials, and so names
// libFoundation for the linker: loaded, it and its ICU and internationalisation parts
// are 6.5 MiB of resident memory that nothing calls. The release build in bench/run.py
// passes `-Xswiftc -Xfrontend -Xswiftc -disable-autolink-library -Xswiftc -Xfrontend
// -Xswiftc Foundation` (and the same for FoundationInternationalization) to every module;
// a flag here would reach only this package's. The Docker image links statically and so
// takes from Foundation only what is used: nothing. Debug builds and the tests keep it.

let package = Package(
    name: "apus",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "apus", targets: ["apus"]),
        .library(name: "CApusABI", targets: ["CApusABI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", exact: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", exact: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", exact: "0.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
    ],
    targets: [
        // The C ABI between the gateway and handler plugins. Depends on nothing.
        .target(name: "CApusABI", path: "Sources/CApusABI"),
        // The handler SDK: compiled together with each user handler file by `ApusCompiler`.
        // It is a target here only so that it is type-checked and unit-tested with the package.
        .target(name: "ApusSDK", dependencies: ["CApusABI"], exclude: ["Entry", "Python"], swiftSettings: swiftSettings),
        .target(
            name: "ApusConfig",
            dependencies: ["ApusSystem", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: swiftSettings
        ),
        .target(name: "ApusRouting", swiftSettings: swiftSettings),
        // What Foundation gave beyond FoundationEssentials, which is all the gateway imports
        // (full Foundation costs about 6 MiB of resident memory): child processes, threads,
        // readable file errors, decimal formatting. Depends on nothing.
        .target(name: "ApusSystem", swiftSettings: swiftSettings),
        .target(
            name: "ApusCompiler",
            dependencies: [
                "ApusSystem",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ApusPlugins",
            dependencies: [
                "CApusABI", .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ApusSupervisor",
            dependencies: [
                "ApusSystem",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ApusProxy",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ApusServer",
            dependencies: [
                "ApusConfig", "ApusRouting", "ApusProxy", "ApusPlugins", "ApusSystem", "CApusABI",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "apus",
            dependencies: [
                "ApusConfig", "ApusRouting", "ApusCompiler", "ApusPlugins", "ApusSupervisor",
                "ApusProxy", "ApusServer", "ApusSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings,
            // lld (part of the Swift toolchain), with relative relocations packed (DT_RELR; glibc 2.36+,
            // Debian 12): the table the loader applies at start shrinks from 1 MiB to 9 KiB, and with it
            // what every process maps.
            linkerSettings: [.unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"], .when(platforms: [.linux]))]
        ),
        .testTarget(
            name: "ApusTests",
            dependencies: [
                "ApusSDK", "ApusConfig", "ApusRouting", "ApusCompiler", "ApusPlugins", "ApusProxy", "ApusServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
