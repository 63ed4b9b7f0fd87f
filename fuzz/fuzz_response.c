/* fuzz_response.c - libFuzzer harness for the response decoding path: HTTP
 * status, headers and body -> the error model, or shape-aware JSON -> Lua
 * tables (kinesis.client, kinesis.codec, kinesis.errors, lua-cjson, the
 * base64 and hash-key C code), plus shard maps and KPL de-aggregation of
 * what was decoded. The checks live in fuzz/response_driver.lua; see there
 * for the input grammar.
 *
 * Why Lua in the fuzzer rather than the C parts alone: the promises that
 * matter (never raise on server data, integers stay integers, blobs become
 * bytes, every failure is a kinesis.error) are made by the Lua layer, and
 * its bugs are reachable only through it. kinesis.core is compiled into
 * this binary, so its C is instrumented as usual; the Lua interpreter is the
 * system's (not instrumented), so a line hook feeds Lua coverage to
 * libFuzzer through its extra-counters section: each (previous line, line)
 * pair of Lua code bumps one counter, which is what lets the fuzzer tell a
 * new path through the decoder from an old one.
 * Run it with -detect_leaks=0: the Lua state outlives each input and its
 * collector frees later, which libFuzzer's per-input leak tracking would
 * take for a leak on every run (and check for, at a 100x slowdown). Leaks of
 * the C core are the business of valgrind and the pure C harnesses. */
#define KN_FUZZ_NAME "fuzz_response"
#define KN_FUZZ_DRIVER "response_driver.lua"
#define KN_FUZZ_BROKE "the response path broke a promise"
#include "lua_harness.h"
