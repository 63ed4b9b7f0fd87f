/* l_sigv4.c - core.sha256_hex, core.hmac_sha256 and core.signer(), the
 * "kinesis.signer" userdata that owns a kn_sigv4_signer (its buffers and
 * signing-key cache), so nothing is global and nothing leaks if pushing a
 * result raises. Wrong argument types raise; bad values return nil, err. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "lbind.h"
#include "l_util.h"
#include "sigv4.h"

#define KN_SIGNER_MT "kinesis.signer"
#define KN_STACK_HEADERS 16

/* core.sha256_hex(s) -> 64 lowercase hex digits | nil, err */
static int l_sha256_hex(lua_State *L)
{
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char digest[KN_SHA256_LEN];
  char hex[2 * KN_SHA256_LEN];
  if (kn_sha256(s, n, digest) != KN_SIGV4_OK)
    return kn_fail(L, "crypto", "sha256: libcrypto failure");
  kn_hex_encode(digest, sizeof digest, hex);
  lua_pushlstring(L, hex, sizeof hex);
  return 1;
}

/* core.hmac_sha256(key, msg) -> 32 raw bytes | nil, err */
static int l_hmac_sha256(lua_State *L)
{
  size_t kn, mn;
  const char *key = luaL_checklstring(L, 1, &kn);
  const char *msg = luaL_checklstring(L, 2, &mn);
  unsigned char mac[KN_SHA256_LEN];
  if (kn_hmac_sha256(key, kn, msg, mn, mac) != KN_SIGV4_OK)
    return kn_fail(L, "crypto", "hmac_sha256: libcrypto failure");
  lua_pushlstring(L, (const char *)mac, sizeof mac);
  return 1;
}

/* core.signer() -> kinesis.signer */
static int l_signer_new(lua_State *L)
{
  kn_sigv4_signer *s = (kn_sigv4_signer *)lua_newuserdata(L, sizeof *s);
  kn_sigv4_signer_init(s);
  luaL_setmetatable(L, KN_SIGNER_MT);
  return 1;
}

/* __gc, __close and signer:close(): frees buffers and wipes cached keys;
 * the signer stays usable (it starts over empty). */
static int l_signer_destroy(lua_State *L)
{
  kn_sigv4_signer *s = (kn_sigv4_signer *)luaL_checkudata(L, 1, KN_SIGNER_MT);
  kn_sigv4_signer_free(s);
  return 0;
}

/* signer:cache_stats() -> { hits = n, misses = n } */
static int l_signer_cache_stats(lua_State *L)
{
  kn_sigv4_signer *s = (kn_sigv4_signer *)luaL_checkudata(L, 1, KN_SIGNER_MT);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)s->cache_hits);
  lua_setfield(L, -2, "hits");
  lua_pushinteger(L, (lua_Integer)s->cache_misses);
  lua_setfield(L, -2, "misses");
  return 1;
}

/* Pushes opts[name] and leaves it on the stack (so the string stays
 * anchored while C uses it). nil -> *p = NULL; a string -> pointer and
 * length; anything else raises. */
static void opt_string(lua_State *L, int opts, const char *name,
                       const char **p, size_t *len)
{
  lua_getfield(L, opts, name);
  if (lua_isnil(L, -1)) {
    *p = NULL;
    *len = 0;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    *p = lua_tolstring(L, -1, len);
  } else {
    luaL_error(L, "sign: field '%s' must be a string (got %s)", name,
               luaL_typename(L, -1));
  }
}

/* The string argument at idx under the option name `name`: nil -> *p =
 * NULL; a string -> pointer and length (anchored by the caller's stack);
 * anything else raises as opt_string does. */
static void arg_string(lua_State *L, int idx, const char *name, const char **p, size_t *len)
{
  if (lua_isnoneornil(L, idx)) {
    *p = NULL;
    *len = 0;
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    *p = lua_tolstring(L, idx, len);
  } else {
    luaL_error(L, "sign: field '%s' must be a string (got %s)", name, luaL_typename(L, idx));
  }
}

/* The time value on top of the stack, popped: nil = now; a number of
 * seconds (a fraction is dropped). Out of range values become -1, which
 * the core rejects with a message. */
static int64_t top_time(lua_State *L)
{
  int64_t t;
  if (lua_isnil(L, -1)) {
    t = (int64_t)time(NULL);
  } else if (lua_type(L, -1) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, -1)) {
      lua_Integer i = lua_tointeger(L, -1);
      t = (i < 0 || i > (lua_Integer)INT64_C(253402300799)) ? -1 : (int64_t)i;
    } else
#endif
    {
      lua_Number x = lua_tonumber(L, -1);
      t = (x >= 0 && x < 253402300800.0) ? (int64_t)floor(x) : -1;
    }
  } else {
    t = luaL_error(L, "sign: field 'time' must be a number (got %s)",
                   luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  return t;
}

/* opts.time, as top_time reads it. */
static int64_t opt_time(lua_State *L, int opts)
{
  lua_getfield(L, opts, "time");
  return top_time(L);
}

static void set_lstring(lua_State *L, const char *k, const char *v, size_t n)
{
  lua_pushlstring(L, v, n);
  lua_setfield(L, -2, k);
}

/* t[idx] = { name, v } for the table at stack index t (absolute). */
static void push_pair_at(lua_State *L, int t, int idx, const char *name, const char *v, size_t n)
{
  lua_createtable(L, 2, 0);
  lua_pushstring(L, name);
  lua_rawseti(L, -2, 1);
  lua_pushlstring(L, v, n);
  lua_rawseti(L, -2, 2);
  lua_rawseti(L, t, idx);
}

/* nil, err for a failed kn_sigv4_sign (the message is the signer's) */
static int sign_failed(lua_State *L, kn_sigv4_signer *s, int rc)
{
  return kn_fail(L, rc == KN_SIGV4_EINVAL ? "invalid_request"
                    : rc == KN_SIGV4_ENOMEM ? "out_of_memory" : "crypto",
                 kn_sigv4_signer_error(s));
}

/* signer:sign(opts) -> out | nil, err (see the Lua API in README/spec) */
static int l_signer_sign(lua_State *L)
{
  kn_sigv4_signer *s = (kn_sigv4_signer *)luaL_checkudata(L, 1, KN_SIGNER_MT);
  kn_header stackbuf[KN_STACK_HEADERS];
  kn_sigv4_request req;
  kn_sigv4_result res;
  int debug, has_token, idx = 1, rc, t;

  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checkstack(L, 40, "sign");
  memset(&req, 0, sizeof req);
  opt_string(L, 2, "method", &req.method, &req.method_len);
  opt_string(L, 2, "path", &req.path, &req.path_len);
  opt_string(L, 2, "query", &req.query, &req.query_len);
  opt_string(L, 2, "body", &req.body, &req.body_len);
  opt_string(L, 2, "payload_hash", &req.payload_hash, &req.payload_hash_len);
  opt_string(L, 2, "region", &req.region, &req.region_len);
  opt_string(L, 2, "service", &req.service, &req.service_len);
  opt_string(L, 2, "access_key", &req.access_key, &req.access_key_len);
  opt_string(L, 2, "secret_key", &req.secret_key, &req.secret_key_len);
  opt_string(L, 2, "session_token", &req.session_token, &req.session_token_len);
  req.normalize_path = kn_opt_boolean(L, 2, "normalize_path", 1);
  req.sign_body = kn_opt_boolean(L, 2, "sign_body", 0);
  req.omit_session_token = kn_opt_boolean(L, 2, "omit_session_token", 0);
  debug = kn_opt_boolean(L, 2, "debug", 0);
  req.time = opt_time(L, 2);
  /* the headers table (and any array made for it) stays on the stack */
  lua_getfield(L, 2, "headers");
  req.headers = kn_read_headers(L, -1, "sign", stackbuf, KN_STACK_HEADERS, &req.header_count);

  rc = kn_sigv4_sign(s, &req, &res);
  if (rc != KN_SIGV4_OK) {
    memset(res.signing_key, 0, sizeof res.signing_key);
    return sign_failed(L, s, rc);
  }
  has_token = req.session_token != NULL && req.session_token_len > 0;

  /* Everything below points into s or into anchored Lua strings. */
  lua_createtable(L, 0, debug ? 10 : 7);
  set_lstring(L, "authorization", res.authorization, res.authorization_len);
  set_lstring(L, "amz_date", res.amz_date, 16);
  set_lstring(L, "signature", res.signature, 2 * KN_SHA256_LEN);
  set_lstring(L, "signed_headers", res.signed_headers, res.signed_headers_len);
  set_lstring(L, "credential_scope", res.credential_scope, res.credential_scope_len);
  set_lstring(L, "payload_hash", res.payload_hash, strlen(res.payload_hash));
  lua_createtable(L, 4, 0);
  t = lua_gettop(L);
  push_pair_at(L, t, idx++, "X-Amz-Date", res.amz_date, 16);
  if (has_token)
    push_pair_at(L, t, idx++, "X-Amz-Security-Token", req.session_token, req.session_token_len);
  if (req.sign_body)
    push_pair_at(L, t, idx++, "x-amz-content-sha256", res.payload_hash, strlen(res.payload_hash));
  push_pair_at(L, t, idx, "Authorization", res.authorization, res.authorization_len);
  lua_setfield(L, -2, "headers");
  if (debug) {
    char hex[2 * KN_SHA256_LEN];
    set_lstring(L, "canonical_request", res.canonical_request, res.canonical_request_len);
    set_lstring(L, "string_to_sign", res.string_to_sign, res.string_to_sign_len);
    kn_hex_encode(res.signing_key, sizeof res.signing_key, hex);
    set_lstring(L, "signing_key", hex, sizeof hex);
  }
  memset(res.signing_key, 0, sizeof res.signing_key);
  return 1;
}

/* signer:sign_headers(headers, method, path, body, region, service,
 *                     access_key, secret_key, session_token, time)
 *   -> headers | nil, err
 * The request pipeline's path: the signature sign{...} makes with its
 * defaults (path normalised, body hashed, token signed), but positional
 * and without the result table: the signer's headers (X-Amz-Date,
 * X-Amz-Security-Token when a token is given, Authorization) are appended
 * to the array `headers` as { name, value } pairs, which is returned.
 * Errors and their messages are sign's. */
static int l_signer_sign_headers(lua_State *L)
{
  kn_sigv4_signer *s = (kn_sigv4_signer *)luaL_checkudata(L, 1, KN_SIGNER_MT);
  kn_header stackbuf[KN_STACK_HEADERS];
  kn_sigv4_request req;
  kn_sigv4_result res;
  int rc, idx;

  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 11);
  luaL_checkstack(L, 20, "sign");
  memset(&req, 0, sizeof req);
  arg_string(L, 3, "method", &req.method, &req.method_len);
  arg_string(L, 4, "path", &req.path, &req.path_len);
  arg_string(L, 5, "body", &req.body, &req.body_len);
  arg_string(L, 6, "region", &req.region, &req.region_len);
  arg_string(L, 7, "service", &req.service, &req.service_len);
  arg_string(L, 8, "access_key", &req.access_key, &req.access_key_len);
  arg_string(L, 9, "secret_key", &req.secret_key, &req.secret_key_len);
  arg_string(L, 10, "session_token", &req.session_token, &req.session_token_len);
  req.normalize_path = 1;
  lua_pushvalue(L, 11);
  req.time = top_time(L);
  /* the strings of the headers stay referenced by the table at 2 */
  req.headers = kn_read_headers(L, 2, "sign", stackbuf, KN_STACK_HEADERS, &req.header_count);

  rc = kn_sigv4_sign(s, &req, &res);
  memset(res.signing_key, 0, sizeof res.signing_key);
  if (rc != KN_SIGV4_OK) return sign_failed(L, s, rc);
  idx = (int)lua_rawlen(L, 2);
  push_pair_at(L, 2, ++idx, "X-Amz-Date", res.amz_date, 16);
  if (req.session_token != NULL && req.session_token_len > 0)
    push_pair_at(L, 2, ++idx, "X-Amz-Security-Token", req.session_token, req.session_token_len);
  push_pair_at(L, 2, ++idx, "Authorization", res.authorization, res.authorization_len);
  lua_pushvalue(L, 2);
  return 1;
}

int kn_open_sigv4(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    {"sha256_hex", l_sha256_hex},
    {"hmac_sha256", l_hmac_sha256},
    {"signer", l_signer_new},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"sign", l_signer_sign},
    {"sign_headers", l_signer_sign_headers},
    {"cache_stats", l_signer_cache_stats},
    {"close", l_signer_destroy},
    {NULL, NULL}
  };
  kn_newclass(L, KN_SIGNER_MT, methods, l_signer_destroy);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
