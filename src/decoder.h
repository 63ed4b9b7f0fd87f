/* decoder.h - a response body decoded where it lies: the codec state
 * (kinesis.codec_state, src/l_codec.c) publishes a kn_decoder as a light
 * userdata under KN_DECODER_FIELD in its metatable, so the curl binding
 * (another module) can decode the body in its own buffer and no 3 MB Lua
 * string is made, copied, and counted against the collector. */
#ifndef KN_DECODER_H
#define KN_DECODER_H

#include <stddef.h>

#include "compat.h"

#define KN_DECODER_MT "kinesis.codec_state"
#define KN_DECODER_FIELD "__decoder"

typedef struct kn_decoder {
  /* Decodes body[0..len) by shape `shape` of the codec state at stack index
   * `state`: pushes the table and returns 1, or pushes nil and a message
   * and returns 2, exactly as state:decode(shape, body). Never raises on
   * the body's content. The body is only read during the call (its owner,
   * the caller, keeps it). */
  int (*decode)(lua_State *L, int state, lua_Integer shape, const char *body, size_t len);
} kn_decoder;

#endif
