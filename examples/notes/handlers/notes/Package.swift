// swift-tools-version:6.0
// A package handler: a handler with dependencies of its own (here the system
// SQLite library). apus builds it with `swift build` and points APUS_SDK_PACKAGE
// at the handler SDK; the product is a dynamic library named like the folder.
import PackageDescription

let sdk = Context.environment["APUS_SDK_PACKAGE"] ?? "APUS_SDK_PACKAGE is set by apus when it builds this package"

let package = Package(
    name: "notes",
    products: [.library(name: "notes", type: .dynamic, targets: ["notes"])],
    dependencies: [.package(name: "apus-sdk", path: sdk)],
    targets: [
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "notes", dependencies: ["CSQLite", .product(name: "ApusSDK", package: "apus-sdk")]),
    ]
)
