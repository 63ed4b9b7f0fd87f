/* l_base64.c - core.b64encode / core.b64decode. Results up to a few KB are
 * built on the C stack; larger ones in a GC-owned scratch userdata, so a
 * memory error raised by lua_pushlstring cannot leak anything. Decoding
 * failures are data errors: nil, message. */
#include <stdio.h>

#include "lbind.h"
#include "l_util.h"
#include "base64.h"

#define KN_B64_STACKBUF 2048

/* Scratch space of n bytes that is freed with the stack frame or by the GC. */
static unsigned char *kn_b64_scratch(lua_State *L, unsigned char *stackbuf,
                                     size_t n)
{
  if (n <= KN_B64_STACKBUF) return stackbuf;
  return (unsigned char *)lua_newuserdata(L, n);
}

/* core.b64encode(s) -> string */
static int l_b64encode(lua_State *L)
{
  unsigned char stackbuf[KN_B64_STACKBUF];
  size_t n, outlen;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char *out;
  if (kn_b64_encoded_len(n, &outlen) != KN_B64_OK)
    return luaL_error(L, "b64encode: input too large");
  out = kn_b64_scratch(L, stackbuf, outlen);
  kn_b64_encode((const unsigned char *)s, n, (char *)out);
  lua_pushlstring(L, (const char *)out, outlen);
  return 1;
}

/* core.b64decode(s) -> string | nil, {code = "invalid_base64", message} */
static int l_b64decode(lua_State *L)
{
  unsigned char stackbuf[KN_B64_STACKBUF];
  size_t n, outlen, got = 0, pos = 0;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char *out = NULL;
  int rc = kn_b64_decoded_len(s, n, &outlen);
  if (rc == KN_B64_OK) {
    out = kn_b64_scratch(L, stackbuf, outlen > 0 ? outlen : 1);
    rc = kn_b64_decode(s, n, out, &got, &pos);
  }
  if (rc != KN_B64_OK) {
    char msg[96];
    if (rc == KN_B64_EBADLEN)
      snprintf(msg, sizeof msg, "invalid base64: length %lu is not a multiple of 4",
               (unsigned long)n);
    else
      snprintf(msg, sizeof msg, "invalid base64: %s at offset %lu",
               kn_b64_strerror(rc), (unsigned long)pos);
    return kn_fail(L, "invalid_base64", msg);
  }
  lua_pushlstring(L, (const char *)out, got);
  return 1;
}

int kn_open_base64(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    {"b64encode", l_b64encode},
    {"b64decode", l_b64decode},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
