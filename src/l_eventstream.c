/* l_eventstream.c - Lua binding of the event-stream codec: core.es_decoder
 * (userdata "kinesis.es_decoder"), core.es_encode and core.es_crc32.
 * The decoder's buffer is a Lua userdata anchored in the registry and lent
 * to the C decoder, so the GC sees (and collectgarbage("count") reports)
 * the memory a stream holds. Runtime decode failures return nil, {code, message};
 * misuse (bad arguments, a closed decoder) raises. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lbind.h"
#include "l_util.h"
#include "crc32.h"
#include "eventstream.h"

#define DECODER_MT "kinesis.es_decoder"

typedef struct es_decoder {
  kn_es_decoder d;
  int buf_ref; /* registry reference of the userdata lent as buffer */
  int closed;
} es_decoder;

static es_decoder *check_decoder(lua_State *L, int open)
{
  es_decoder *u = (es_decoder *)luaL_checkudata(L, 1, DECODER_MT);
  if (open && u->closed) luaL_error(L, "attempt to use a closed es_decoder");
  return u;
}

/* Lends the decoder a new buffer of `cap` bytes (NULL when 0). Everything
 * that may raise happens before the decoder is touched; afterwards only the
 * non-raising unref of the old buffer remains. */
static void lend_buffer(lua_State *L, es_decoder *u, size_t cap)
{
  uint8_t *buf = NULL, *old = NULL;
  int ref = LUA_NOREF;

  if (cap > 0) {
    buf = (uint8_t *)lua_newuserdata(L, cap);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (kn_es_decoder_lend(&u->d, buf, cap, &old) != KN_ES_OK) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    luaL_error(L, "es_decoder: buffer of %d bytes is too small", (int)cap);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, u->buf_ref);
  u->buf_ref = ref;
}

static void maybe_release(lua_State *L, es_decoder *u)
{
  if (kn_es_decoder_should_release(&u->d)) lend_buffer(L, u, 0);
}

/* nil, { code = "prelude_crc_mismatch" (kn_es_code_name), message = detail } */
static int push_error(lua_State *L, es_decoder *u, int code)
{
  return kn_fail(L, kn_es_code_name(code), kn_es_decoder_detail(&u->d));
}

/* int64 and timestamp: an integer where Lua has 64-bit integers, else a
 * decimal string (a double would silently round past 2^53). */
static void push_int64(lua_State *L, int64_t v)
{
#if LUA_VERSION_NUM >= 503
  lua_pushinteger(L, (lua_Integer)v);
#else
  char s[24];
  snprintf(s, sizeof s, "%" PRId64, v);
  lua_pushstring(L, s);
#endif
}

static void push_uuid(lua_State *L, const uint8_t *b)
{
  static const char hex[] = "0123456789abcdef";
  char s[36];
  int i, o = 0;
  for (i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s[o++] = '-';
    s[o++] = hex[b[i] >> 4];
    s[o++] = hex[b[i] & 15];
  }
  lua_pushlstring(L, s, sizeof s);
}

static void push_value(lua_State *L, const kn_es_header *h)
{
  switch (h->type) {
  case KN_ES_BOOL_TRUE:
  case KN_ES_BOOL_FALSE: lua_pushboolean(L, h->type == KN_ES_BOOL_TRUE); break;
  case KN_ES_BYTE:
  case KN_ES_INT16:
  case KN_ES_INT32: lua_pushinteger(L, (lua_Integer)h->i); break;
  case KN_ES_INT64:
  case KN_ES_TIMESTAMP: push_int64(L, h->i); break;
  case KN_ES_UUID: push_uuid(L, h->data); break;
  default: lua_pushlstring(L, (const char *)h->data, h->data_len); break;
  }
}

/* msg = { headers = {name = value}, types = {name = code}, payload = s } */
static void push_message(lua_State *L, const kn_es_message *m)
{
  kn_es_header h;
  size_t pos = 0;

  lua_createtable(L, 0, 3);
  lua_createtable(L, 0, 4);
  lua_createtable(L, 0, 4);
  while (kn_es_header_read(m->headers, m->headers_len, &pos, &h) ==
         KN_ES_OK) {
    lua_pushlstring(L, (const char *)h.name, h.name_len);
    push_value(L, &h);
    lua_rawset(L, -4);
    lua_pushlstring(L, (const char *)h.name, h.name_len);
    lua_pushinteger(L, h.type);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -3, "types");
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, (const char *)m->payload, m->payload_len);
  lua_setfield(L, -2, "payload");
}

/* core.es_decoder([max_message_bytes]) */
static int l_es_decoder(lua_State *L)
{
  lua_Integer max = luaL_optinteger(L, 1, (lua_Integer)KN_ES_MAX_MESSAGE);
  es_decoder *u;

  luaL_argcheck(L, max >= KN_ES_OVERHEAD &&
                   (size_t)max <= KN_ES_MAX_MESSAGE, 1,
                "max_message_bytes must be between 16 and 16 MiB");
  u = (es_decoder *)lua_newuserdata(L, sizeof *u);
  kn_es_decoder_init(&u->d, (size_t)max);
  u->buf_ref = LUA_NOREF;
  u->closed = 0;
  luaL_setmetatable(L, DECODER_MT);
  return 1;
}

/* dec:feed(bytes) -> true | nil, err */
static int l_feed(lua_State *L)
{
  es_decoder *u = check_decoder(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int rc = kn_es_decoder_feed(&u->d, (const uint8_t *)s, len);

  if (rc == KN_ES_NEED_SPACE) {
    lend_buffer(L, u, kn_es_decoder_wanted(&u->d));
    rc = kn_es_decoder_feed(&u->d, (const uint8_t *)s, len);
  }
  if (rc != KN_ES_OK) {
    maybe_release(L, u);
    return push_error(L, u, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* dec:next() -> msg | nil (needs more bytes) | nil, err */
static int l_next(lua_State *L)
{
  es_decoder *u = check_decoder(L, 1);
  kn_es_message m;
  int rc = kn_es_decoder_next(&u->d, &m);

  if (rc == KN_ES_NEED_SPACE) {
    lend_buffer(L, u, kn_es_decoder_wanted(&u->d));
    rc = kn_es_decoder_next(&u->d, &m);
  }
  if (rc == KN_ES_OK) {
    push_message(L, &m); /* copies: the buffer may go below */
    maybe_release(L, u);
    return 1;
  }
  maybe_release(L, u);
  if (rc == KN_ES_MORE) {
    lua_pushnil(L);
    return 1;
  }
  if (rc == KN_ES_NEED_SPACE) luaL_error(L, "es_decoder: scratch lent twice");
  return push_error(L, u, rc);
}

/* dec:buffered() -> bytes held (0 once closed) */
static int l_buffered(lua_State *L)
{
  es_decoder *u = check_decoder(L, 0);
  lua_pushinteger(L, u->closed ? 0 : (lua_Integer)kn_es_decoder_buffered(&u->d));
  return 1;
}

/* dec:finish() -> true | nil, err */
static int l_finish(lua_State *L)
{
  es_decoder *u = check_decoder(L, 1);
  int rc = kn_es_decoder_finish(&u->d);

  maybe_release(L, u);
  if (rc != KN_ES_OK) return push_error(L, u, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* dec:close(), __gc and __close: drop the buffer; idempotent. */
static int l_close(lua_State *L)
{
  es_decoder *u = check_decoder(L, 0);
  if (!u->closed) {
    u->closed = 1;
    kn_es_decoder_init(&u->d, 0); /* forgets the buffer it pointed to */
    luaL_unref(L, LUA_REGISTRYINDEX, u->buf_ref);
    u->buf_ref = LUA_NOREF;
  }
  return 0;
}

static int header_error(lua_State *L, int i, const char *what)
{
  return luaL_argerror(L, 1, lua_pushfstring(L, "header %d: %s", i, what));
}

/* Names for types 2..9 ("bool" is 0 or 1 by its value). */
static const char *const type_names[] = {
  "byte", "int16", "int32", "int64", "bytes", "string", "timestamp", "uuid"
};

/* Wire type of header table `t`; the value at index v decides "bool". */
static int header_type(lua_State *L, int i, int t, int v)
{
  int type = -1, k;

  lua_pushliteral(L, "type");
  lua_rawget(L, t);
  if (lua_type(L, -1) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, -1);
    if (n >= 0 && n <= 9 && n == (lua_Number)(int)n) type = (int)n;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "bool") == 0) {
      if (lua_type(L, v) != LUA_TBOOLEAN)
        header_error(L, i, "a \"bool\" header needs a boolean value");
      type = lua_toboolean(L, v) ? KN_ES_BOOL_TRUE : KN_ES_BOOL_FALSE;
    }
    for (k = 0; k < 8; k++)
      if (strcmp(s, type_names[k]) == 0) type = k + KN_ES_BYTE;
  }
  lua_pop(L, 1);
  if (type < 0)
    header_error(L, i, "type must be 0..9 or bool, byte, int16, int32, "
                       "int64, bytes, string, timestamp, uuid");
  return type;
}

/* Strict decimal int64: optional '-', digits only, no overflow. */
static int parse_int64(const char *s, size_t len, int64_t *out)
{
  uint64_t v = 0, limit = (uint64_t)INT64_MAX;
  size_t k = 0;
  int neg = 0;

  if (len > 0 && s[0] == '-') {
    neg = 1;
    limit++;
    k++;
  }
  if (k == len) return 0;
  for (; k < len; k++) {
    unsigned digit = (unsigned)(s[k] - '0');
    if (digit > 9 || v > (limit - digit) / 10) return 0;
    v = v * 10 + digit;
  }
  *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v)
             : (int64_t)v;
  return 1;
}

/* Integer header value at index v, within [lo, hi]: a Lua integer, an
 * integral float, or (for 5.1 int64s) a decimal string. */
static int64_t header_int(lua_State *L, int i, int v, int64_t lo, int64_t hi)
{
  int64_t x = 0;
  int ok = 0;

  if (lua_type(L, v) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, v)) {
      x = (int64_t)lua_tointeger(L, v);
      ok = 1;
    } else
#endif
    {
      lua_Number n = lua_tonumber(L, v);
      if (n >= -9223372036854775808.0 && n < 9223372036854775808.0 &&
          (lua_Number)(int64_t)n == n) {
        x = (int64_t)n;
        ok = 1;
      }
    }
  } else if (lua_type(L, v) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, v, &len);
    ok = parse_int64(s, len, &x);
  }
  if (!ok) header_error(L, i, "value must be an integer");
  if (x < lo || x > hi) header_error(L, i, "integer value out of range");
  return x;
}

static int hex_digit(int c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* uuid: 16 raw bytes, or the 36-character 8-4-4-4-12 hex form. */
static void header_uuid(lua_State *L, int i, int v, uint8_t *out)
{
  size_t len = 0, k, o = 0;
  const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tolstring(L, v, &len)
                                                : NULL;
  if (s != NULL && len == 16) {
    memcpy(out, s, 16);
    return;
  }
  if (s != NULL && len == 36) {
    for (k = 0; k < 36 && o < 16; k++) {
      int hi, lo;
      if (k == 8 || k == 13 || k == 18 || k == 23) {
        if (s[k] != '-') break;
        continue;
      }
      hi = hex_digit((unsigned char)s[k]);
      lo = k + 1 < 36 ? hex_digit((unsigned char)s[k + 1]) : -1;
      if (hi < 0 || lo < 0) break;
      out[o++] = (uint8_t)(hi << 4 | lo);
      k++;
    }
    if (o == 16 && k == 36) return;
  }
  header_error(L, i, "uuid value must be 16 bytes or xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
}

/* Fills h from the header table at index t. Strings stay anchored by
 * that table (read with rawget, so no Lua code runs meanwhile). */
static void header_from_table(lua_State *L, int i, int t, kn_es_header *h,
                              uint8_t *uuid)
{
  size_t len;
  int v, top = lua_gettop(L);

  lua_pushliteral(L, "name");
  lua_rawget(L, t);
  if (lua_type(L, -1) != LUA_TSTRING) header_error(L, i, "name must be a string");
  h->name = (const uint8_t *)lua_tolstring(L, -1, &len);
  h->name_len = len;
  if (len == 0) header_error(L, i, "empty_header_name: name must not be empty");
  if (len > 255) header_error(L, i, "name is longer than 255 bytes");
  lua_pushliteral(L, "value");
  lua_rawget(L, t);
  v = lua_gettop(L);
  h->type = header_type(L, i, t, v);
  h->i = 0;
  h->data = NULL;
  h->data_len = 0;
  switch (h->type) {
  case KN_ES_BOOL_TRUE:
  case KN_ES_BOOL_FALSE:
    if (!lua_isnil(L, v) && (lua_type(L, v) != LUA_TBOOLEAN ||
                             lua_toboolean(L, v) != (h->type == KN_ES_BOOL_TRUE)))
      header_error(L, i, "bool value does not match type 0 (true) / 1 (false)");
    break;
  case KN_ES_BYTE: h->i = header_int(L, i, v, -128, 127); break;
  case KN_ES_INT16: h->i = header_int(L, i, v, -32768, 32767); break;
  case KN_ES_INT32:
    h->i = header_int(L, i, v, -2147483647 - 1, 2147483647);
    break;
  case KN_ES_INT64:
  case KN_ES_TIMESTAMP: h->i = header_int(L, i, v, INT64_MIN, INT64_MAX); break;
  case KN_ES_UUID:
    header_uuid(L, i, v, uuid);
    h->data = uuid;
    h->data_len = 16;
    break;
  default:
    if (lua_type(L, v) != LUA_TSTRING)
      header_error(L, i, "bytes/string value must be a string");
    h->data = (const uint8_t *)lua_tolstring(L, v, &len);
    h->data_len = len;
    if (len > 0xffff) header_error(L, i, "value is longer than 65535 bytes");
    break;
  }
  lua_settop(L, top);
}

/* core.es_encode(headers, payload) -> bytes; raises on invalid input. */
static int l_es_encode(lua_State *L)
{
  size_t n, i, plen, size, need, written;
  const char *payload;
  kn_es_header *hs;
  uint8_t *uuids, *out;
  int rc;

  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 2);
    lua_newtable(L);
    lua_replace(L, 1);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  payload = luaL_optlstring(L, 2, "", &plen);
  n = lua_rawlen(L, 1);
  hs = (kn_es_header *)lua_newuserdata(L, n * (sizeof *hs + 16) + 1);
  uuids = (uint8_t *)(hs + n);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, (int)i + 1);
    if (!lua_istable(L, -1)) header_error(L, (int)i + 1, "must be a table");
    header_from_table(L, (int)i + 1, lua_gettop(L), &hs[i], uuids + 16 * i);
    lua_pop(L, 1);
  }
  rc = kn_es_encode_size(hs, n, plen, &size, &need);
  if (rc == KN_ES_OK) {
    out = (uint8_t *)lua_newuserdata(L, need);
    rc = kn_es_encode(hs, n, (const uint8_t *)payload, plen, out, need,
                      &written);
    if (rc == KN_ES_OK) {
      lua_pushlstring(L, (const char *)out, written);
      return 1;
    }
  }
  return luaL_error(L, "es_encode: %s%s", kn_es_code_name(rc),
                    rc == KN_ES_ETOO_LARGE ? " (message over 16 MiB)" : "");
}

/* core.es_crc32(bytes [, crc]) -> CRC-32 as a non-negative integer */
static int l_es_crc32(lua_State *L)
{
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Number prev = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, prev >= 0 && prev <= 4294967295.0 &&
                   prev == (lua_Number)(uint32_t)prev, 2,
                "crc must be an integer in 0..2^32-1");
#if LUA_VERSION_NUM >= 503
  lua_pushinteger(L, (lua_Integer)kn_crc32((uint32_t)prev, s, len));
#else
  lua_pushnumber(L, (lua_Number)kn_crc32((uint32_t)prev, s, len));
#endif
  return 1;
}

static const luaL_Reg decoder_methods[] = {
  {"feed", l_feed},
  {"next", l_next},
  {"buffered", l_buffered},
  {"finish", l_finish},
  {"close", l_close},
  {NULL, NULL}
};

int kn_open_eventstream(lua_State *L)
{
  kn_newclass(L, DECODER_MT, decoder_methods, l_close);
  lua_pushcfunction(L, l_es_decoder);
  lua_setfield(L, -2, "es_decoder");
  lua_pushcfunction(L, l_es_encode);
  lua_setfield(L, -2, "es_encode");
  lua_pushcfunction(L, l_es_crc32);
  lua_setfield(L, -2, "es_crc32");
  return 0;
}
