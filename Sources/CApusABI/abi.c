// The ABI is a header only; this file exists because SwiftPM wants a source file in a C target.
#include "apus_abi.h"
