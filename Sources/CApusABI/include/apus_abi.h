/*
 * apus_abi.h — the only contract between the Apus gateway (the host) and a
 * native handler library (the module).
 *
 * Pure C, no dependencies. Anything that exports C functions can be a module:
 * Swift (through the Apus SDK), C, Rust, Zig.
 *
 * Naming, after Envoy's dynamic modules:
 *   apus_type_*      data shared by both sides;
 *   apus_on_*        functions the module implements and the host calls;
 *   callback_*       functions the host implements and the module calls
 *                    (reached through the apus_type_host table).
 *
 * Load sequence (the host does every check before it calls a handler):
 *   1. dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE). A module is never unloaded.
 *   2. apus_on_abi_version() must return APUS_ABI_VERSION, else the library is refused.
 *   3. apus_on_module_init(host) returns the module description; its struct_size
 *      and abi_version must match the host's, else the library is refused.
 *
 * Versioning: APUS_ABI_VERSION changes whenever a struct layout or a function
 * signature changes. Structs carry struct_size so that a mismatch is caught even
 * when a version bump was forgotten.
 */
#ifndef APUS_ABI_H
#define APUS_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define APUS_ABI_VERSION 2u

/* A run of bytes, usually UTF-8 text; not NUL-terminated.
 * OWNERSHIP: borrowed; valid only for the call that handed it over. */
typedef struct apus_type_str {
    const char *data;
    size_t length;
} apus_type_str;

/* One header field or one path parameter.
 * OWNERSHIP: borrowed, as its strings. */
typedef struct apus_type_header {
    apus_type_str name;
    apus_type_str value;
} apus_type_header;

/* Where the host runs a handler. */
typedef enum apus_type_handler_kind {
    /* Called on the connection's event loop; must not block. For fast pure code. */
    APUS_HANDLER_INLINE = 0,
    /* Called on a host thread pool; may block (files, databases, heavy CPU). */
    APUS_HANDLER_BLOCKING = 1,
    /* Called on the event loop, returns at once and completes later from any thread. */
    APUS_HANDLER_ASYNC = 2,
} apus_type_handler_kind;

/* A request as the host hands it to a handler.
 * OWNERSHIP: borrowed, with everything it points to, for the duration of
 * apus_on_request only. A module that answers later must copy what it keeps. */
typedef struct apus_type_request {
    uint32_t struct_size;              /* sizeof(apus_type_request) */
    apus_type_str method;              /* "GET" */
    apus_type_str path;                /* normalised, percent-decoded: "/quote/ACME" */
    apus_type_str query;               /* raw, without '?': "a=1&b=2", may be empty */
    apus_type_str request_id;          /* the X-Request-ID the host uses for this request */
    apus_type_str remote_address;      /* "127.0.0.1:51234" or empty */
    const apus_type_header *headers;   /* as received, names lower-case */
    size_t header_count;
    const apus_type_header *params;    /* path parameters, in pattern order */
    size_t param_count;
    const uint8_t *body;               /* whole body, at most the route's limit */
    size_t body_length;
} apus_type_request;

/* A response as a module hands it back.
 * OWNERSHIP: borrowed by the host for the duration of callback_respond,
 * which copies what it needs before it returns. */
typedef struct apus_type_response {
    uint32_t struct_size;              /* sizeof(apus_type_response) */
    uint16_t status;
    const apus_type_header *headers;
    size_t header_count;
    const uint8_t *body;
    size_t body_length;
} apus_type_response;

/* The host's per-request completion handle.
 * OWNERSHIP: given to the module by apus_on_request; the module gives it back,
 * exactly once, to callback_respond, from any thread. The handle is invalid
 * after that call. */
typedef struct apus_type_responder apus_type_responder;

/* Log levels for callback_log. */
typedef enum apus_type_log_level {
    APUS_LOG_DEBUG = 0,
    APUS_LOG_INFO = 1,
    APUS_LOG_WARNING = 2,
    APUS_LOG_ERROR = 3,
} apus_type_log_level;

/* What the host offers a module.
 * OWNERSHIP: owned by the host; valid for the life of the process. */
typedef struct apus_type_host {
    uint32_t struct_size;              /* sizeof(apus_type_host) */
    uint32_t abi_version;              /* APUS_ABI_VERSION of the host */
    /* Completes the request behind responder. Thread-safe. A second call with the
     * same responder is a module bug; the host ignores it and logs it. */
    void (*callback_respond)(apus_type_responder *responder, const apus_type_response *response);
    /* Writes one line to the gateway log, tagged with the handler's name. Thread-safe. */
    void (*callback_log)(apus_type_responder *responder, uint32_t level, apus_type_str message);
} apus_type_host;

/* What a module offers the host.
 * OWNERSHIP: owned by the module; must stay valid for the life of the process. */
typedef struct apus_type_module {
    uint32_t struct_size;              /* sizeof(apus_type_module) */
    uint32_t abi_version;              /* APUS_ABI_VERSION the module was built with */
    uint32_t kind;                     /* an apus_type_handler_kind */
    /* Opaque to the host, passed back on every call: lets one implementation
     * (such as the Swift SDK's) serve many modules. */
    void *context;
    /* Handles one request. The request is borrowed for the call; the responder
     * must reach callback_respond exactly once, now or later, from any thread. */
    void (*on_request)(void *context, const apus_type_request *request, apus_type_responder *responder);
} apus_type_module;

/* Exported by every module, checked by the host before anything else is called. */
typedef uint32_t (*apus_on_abi_version_fn)(void);
#define APUS_ON_ABI_VERSION_SYMBOL "apus_on_abi_version"

/* Exported by every module, called once after the version check.
 * OWNERSHIP: host is borrowed for the life of the process (the host keeps it alive). */
typedef const apus_type_module *(*apus_on_module_init_fn)(const apus_type_host *host);
#define APUS_ON_MODULE_INIT_SYMBOL "apus_on_module_init"

#ifdef __cplusplus
}
#endif

#endif /* APUS_ABI_H */
