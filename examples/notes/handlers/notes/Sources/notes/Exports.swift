// The two C entry points every Apus handler library exports. (Single-file
// handlers get this file from apus; a package handler carries its own copy.)

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
