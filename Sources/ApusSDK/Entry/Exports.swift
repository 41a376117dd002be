// The two C entry points of a Swift handler library. The gateway compiles this
// file together with the user's handler file (which defines `let handler`), so
// that a handler file holds only the user's code. Everything else lives in the
// prebuilt SDK library.

@_spi(ApusEntry) import ApusSDK
import CApusABI

@_cdecl("apus_on_abi_version")
public func apus_on_abi_version() -> UInt32 {
    ApusModule.abiVersion
}

@_cdecl("apus_on_module_init")
public func apus_on_module_init(_ host: UnsafePointer<apus_type_host>?) -> UnsafePointer<apus_type_module>? {
    ApusModule.describe(handler, host: host)
}
