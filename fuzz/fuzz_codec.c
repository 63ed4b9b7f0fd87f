/* fuzz_codec.c - libFuzzer harness for the C codec (src/l_codec.c,
 * src/codec.c), both directions, differential against the Lua reference
 * (kinesis.validate, kinesis.regex, kinesis.codec_ref): parameters built
 * from the input must give the same body or the same validation error,
 * and a response body must decode to the reference's values or be refused.
 * The checks live in fuzz/codec_driver.lua. Lua runs inside the fuzzer as
 * in fuzz/fuzz_response.c, and for the same reason: the reference is Lua.
 * kinesis.core is compiled in and instrumented; a line hook feeds Lua
 * coverage to libFuzzer. Run with -detect_leaks=0 (the Lua state outlives
 * each input); leaks of the C core are valgrind's business. */
#define KN_FUZZ_NAME "fuzz_codec"
#define KN_FUZZ_DRIVER "codec_driver.lua"
#define KN_FUZZ_BROKE "the codec broke a promise"
#include "lua_harness.h"
