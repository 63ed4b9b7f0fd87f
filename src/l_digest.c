/* l_digest.c - core.sha1_hex: the SHA-1 hex digest that names the AWS SSO
 * token cache files (~/.aws/sso/cache/<sha1 hex of the session name or start
 * URL>.json). SHA-1 here is a file name, not a security measure. OpenSSL's
 * one-shot EVP_Digest; the digest and its hex live on the C stack. */
#include <openssl/err.h>
#include <openssl/evp.h>

#include "lbind.h"
#include "l_util.h"

/* core.sha1_hex(s) -> 40 lowercase hex digits | nil, err.
 * s is borrowed from the Lua stack for the length of the call. */
static int l_sha1_hex(lua_State *L)
{
  static const char digits[] = "0123456789abcdef";
  size_t n, i;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  char hex[2 * EVP_MAX_MD_SIZE];
  if (EVP_Digest(s, n, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) {
    ERR_clear_error(); /* leave no stale entry for the next OpenSSL caller */
    return kn_fail(L, "crypto", "sha1: libcrypto failure");
  }
  for (i = 0; i < mdlen; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 0x0f];
  }
  lua_pushlstring(L, hex, 2 * (size_t)mdlen);
  return 1;
}

int kn_open_digest(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    {"sha1_hex", l_sha1_hex},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
