/* l_kpl.c - binding for the KPL aggregate codec (kpl.c) and the hash-key
 * range test that KCL-style deaggregation needs (u128.c). It converts and
 * checks; the policy (pass-through, errors, the aggregator's size
 * accounting) lives in lua/kinesis/kpl.lua. Misuse of these internal entry
 * points raises; bad bytes or bad decimals give nil, err. Scratch arrays
 * are userdata, so a raise half-way leaks nothing. */
#include "lbind.h"
#include "l_util.h"
#include "kpl.h"
#include "u128.h"

#include <limits.h>

/* Largest integer a double holds exactly: LuaJIT's numbers are doubles. */
#define EXACT_MAX 9007199254740992.0

/* The string at idx, or a raised argument error (numbers refused too). */
static const char *check_bytes(lua_State *L, int idx, size_t *len)
{
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_argerror(L, idx, lua_pushfstring(L, "string expected, got %s",
                                          luaL_typename(L, idx)));
  return lua_tolstring(L, idx, len);
}

/* A wire index as a Lua number: exact up to 2^53; above that only its
 * magnitude matters (it is outside any table a string could hold). */
static void push_index(lua_State *L, uint64_t v)
{
  if ((double)v <= EXACT_MAX)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, (lua_Number)v);
}

/* Reads the non-negative integer at idx into *out; 0 if it is not one. */
static int to_index(lua_State *L, int idx, uint64_t *out)
{
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
#if LUA_VERSION_NUM >= 503
  {
    int ok = 0;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok || v < 0) return 0;
    *out = (uint64_t)v;
  }
#else
  {
    lua_Number d = lua_tonumber(L, idx);
    if (!(d >= 0 && d <= EXACT_MAX) || d != (lua_Number)(uint64_t)d) return 0;
    *out = (uint64_t)d;
  }
#endif
  return 1;
}

/* nil, {code, message} for a status of unwrap or scan. */
static int push_failure(lua_State *L, int rc)
{
  const char *code;
  switch (rc) {
  case KN_KPL_ENOTAGG: code = "not_aggregate"; break;
  case KN_KPL_ECHECKSUM: code = "checksum"; break;
  case KN_KPL_EPARSE: code = "malformed"; break;
  case KN_KPL_EREQUIRED: code = "missing_field"; break;
  default: code = "internal"; break;
  }
  return kn_fail(L, code, kn_kpl_strerror(rc));
}

/* Array bytes for n elements of size each, or a raised error. */
static size_t array_bytes(lua_State *L, size_t n, size_t size)
{
  if (n > (size_t)INT_MAX || n > SIZE_MAX / size) luaL_error(L, "aggregate too large");
  return n * size;
}

/* Lends msg three arrays carved from one new userdata (left on the stack). */
static void lend_arrays(lua_State *L, kn_kpl_message *msg, size_t npk, size_t nehk, size_t nrec)
{
  size_t b_rec = array_bytes(L, nrec, sizeof(kn_kpl_record));
  size_t b_pk = array_bytes(L, npk, sizeof(kn_kpl_bytes));
  size_t b_ehk = array_bytes(L, nehk, sizeof(kn_kpl_bytes));
  size_t total = b_rec;
  char *mem;
  if (b_pk > SIZE_MAX - total) luaL_error(L, "aggregate too large");
  total += b_pk;
  if (b_ehk >= SIZE_MAX - total) luaL_error(L, "aggregate too large");
  total += b_ehk + 1; /* + 1: never a zero-sized userdata */
  /* records first: the strictest alignment at the userdata's own */
  mem = (char *)lua_newuserdata(L, total);
  msg->records = (kn_kpl_record *)(void *)mem;
  msg->pks = (kn_kpl_bytes *)(void *)(mem + b_rec);
  msg->ehks = (kn_kpl_bytes *)(void *)(mem + b_rec + b_pk);
  msg->record_count = nrec;
  msg->pk_count = npk;
  msg->ehk_count = nehk;
}

/* Pushes an array of the n byte ranges at v as strings. */
static void push_strings(lua_State *L, const kn_kpl_bytes *v, size_t n)
{
  size_t i;
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_pushlstring(L, (const char *)v[i].ptr, v[i].len);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

/* kpl_decode(bytes) -> pk_table, ehk_table, records | nil, {code, message}
 *   records[i] = { partition_key_index = n, explicit_hash_key_index = n | nil,
 *                  data = s }, indexes 0-based as on the wire and unchecked.
 *   code: "not_aggregate" (no magic, or too short), "checksum" (MD5),
 *   "malformed" (protobuf wire format), "missing_field" (a required field). */
static int l_kpl_decode(lua_State *L)
{
  size_t len, i;
  const char *s = check_bytes(L, 1, &len);
  const uint8_t *pb = NULL;
  size_t pb_len = 0;
  kn_kpl_counts counts;
  kn_kpl_message msg;
  int rc = kn_kpl_unwrap(s, len, &pb, &pb_len);
  if (rc == KN_KPL_OK) rc = kn_kpl_scan(pb, pb_len, &counts);
  if (rc != KN_KPL_OK) return push_failure(L, rc);  /* nil, err */

  lend_arrays(L, &msg, counts.pks, counts.ehks, counts.records);
  rc = kn_kpl_parse(pb, pb_len, &msg);
  if (rc != KN_KPL_OK) return luaL_error(L, "kpl_decode: %s after a clean scan", kn_kpl_strerror(rc));

  push_strings(L, msg.pks, msg.pk_count);
  push_strings(L, msg.ehks, msg.ehk_count);
  lua_createtable(L, (int)msg.record_count, 0);
  for (i = 0; i < msg.record_count; i++) {
    const kn_kpl_record *r = &msg.records[i];
    lua_createtable(L, 0, 3);
    push_index(L, r->pk_index);
    lua_setfield(L, -2, "partition_key_index");
    if (r->has_ehk) {
      push_index(L, r->ehk_index);
      lua_setfield(L, -2, "explicit_hash_key_index");
    }
    lua_pushlstring(L, (const char *)r->data.ptr, r->data.len);
    lua_setfield(L, -2, "data");
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 3;
}

/* Fills v[0..n) from the array of strings at idx (argument number arg). */
static void read_strings(lua_State *L, int idx, kn_kpl_bytes *v, size_t n, const char *what)
{
  size_t i;
  for (i = 0; i < n; i++) {
    size_t len;
    lua_rawgeti(L, idx, (int)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "kpl_encode: %s[%d] is a %s, not a string", what, (int)i + 1,
                 luaL_typename(L, -1));
    /* the table keeps the string alive and Lua strings do not move */
    v[i].ptr = (const uint8_t *)lua_tolstring(L, -1, &len);
    v[i].len = len;
    lua_pop(L, 1);
  }
}

/* Pushes rawget(t at idx, key); idx must be absolute. */
static int raw_field(lua_State *L, int idx, const char *key)
{
  lua_pushstring(L, key);
  lua_rawget(L, idx);
  return lua_type(L, -1);
}

/* kpl_encode(pk_table, ehk_table, records) -> aggregate bytes
 *   the tables are arrays of strings (already deduplicated), records an
 *   array of { partition_key_index = n, explicit_hash_key_index = n | nil,
 *   data = s } with 0-based indexes. Anything else raises: the caller is
 *   kinesis.kpl, which has validated the user's records. */
static int l_kpl_encode(lua_State *L)
{
  size_t npk, nehk, nrec, i, size = 0, written = 0;
  kn_kpl_message msg;
  uint8_t *out;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  npk = lua_rawlen(L, 1);
  nehk = lua_rawlen(L, 2);
  nrec = lua_rawlen(L, 3);
  lend_arrays(L, &msg, npk, nehk, nrec);
  read_strings(L, 1, msg.pks, npk, "partition key table");
  read_strings(L, 2, msg.ehks, nehk, "explicit hash key table");
  for (i = 0; i < nrec; i++) {
    kn_kpl_record *r = &msg.records[i];
    int t, rt;
    size_t len;
    lua_rawgeti(L, 3, (int)i + 1);
    rt = lua_gettop(L);
    if (!lua_istable(L, rt))
      luaL_error(L, "kpl_encode: records[%d] is a %s, not a table", (int)i + 1,
                 luaL_typename(L, -1));
    raw_field(L, rt, "partition_key_index");
    if (!to_index(L, -1, &r->pk_index) || r->pk_index >= (uint64_t)npk)
      luaL_error(L, "kpl_encode: records[%d].partition_key_index is not an index "
                    "of the partition key table", (int)i + 1);
    lua_pop(L, 1);
    t = raw_field(L, rt, "explicit_hash_key_index");
    r->has_ehk = t != LUA_TNIL;
    r->ehk_index = 0;
    if (r->has_ehk && (!to_index(L, -1, &r->ehk_index) || r->ehk_index >= (uint64_t)nehk))
      luaL_error(L, "kpl_encode: records[%d].explicit_hash_key_index is not an index "
                    "of the explicit hash key table", (int)i + 1);
    lua_pop(L, 1);
    if (raw_field(L, rt, "data") != LUA_TSTRING)
      luaL_error(L, "kpl_encode: records[%d].data is a %s, not a string", (int)i + 1,
                 luaL_typename(L, -1));
    r->data.ptr = (const uint8_t *)lua_tolstring(L, -1, &len);
    r->data.len = len;
    lua_settop(L, rt - 1);
  }

  rc = kn_kpl_encoded_size(&msg, &size);
  if (rc != KN_KPL_OK) return luaL_error(L, "kpl_encode: %s", kn_kpl_strerror(rc));
  out = (uint8_t *)lua_newuserdata(L, size);
  rc = kn_kpl_encode(&msg, out, size, &written);
  if (rc != KN_KPL_OK) return luaL_error(L, "kpl_encode: %s", kn_kpl_strerror(rc));
  lua_pushlstring(L, (const char *)out, written);
  return 1;
}

/* Parses the decimal string at idx (argument error if not a string); on a
 * bad decimal pushes nil and an error naming `what` and returns 0. */
static int parse_key(lua_State *L, int idx, const char *what, kn_u128 *out)
{
  size_t len;
  const char *s = check_bytes(L, idx, &len);
  int rc = kn_u128_parse(s, len, out);
  if (rc == KN_U128_OK) return 1;
  kn_failf(L, "invalid_hash_key", "bad %s: %s", what, kn_u128_strerror(rc));
  return 0;
}

/* kpl_in_range(partition_key, explicit_hash_key | nil, start, end)
 *   -> boolean | nil, err
 * Whether the user record's effective hash key (its ExplicitHashKey, else
 * the MD5 hash key of its partition key) is inside the inclusive range
 * [start, end], compared as unsigned 128-bit integers
 * (AggregatorUtil.effectiveHashKey). */
static int l_kpl_in_range(lua_State *L)
{
  size_t len;
  const char *pk = check_bytes(L, 1, &len);
  kn_u128 key, lo, hi;
  if (!lua_isnil(L, 2)) {
    if (!parse_key(L, 2, "ExplicitHashKey", &key)) return 2;
  } else {
    key = kn_u128_md5(pk, len);
  }
  if (!parse_key(L, 3, "StartingHashKey", &lo)) return 2;
  if (!parse_key(L, 4, "EndingHashKey", &hi)) return 2;
  lua_pushboolean(L, kn_u128_cmp(lo, key) <= 0 && kn_u128_cmp(key, hi) <= 0);
  return 1;
}

int kn_open_kpl(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    {"kpl_decode", l_kpl_decode},
    {"kpl_encode", l_kpl_encode},
    {"kpl_in_range", l_kpl_in_range},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
  lua_pushlstring(L, (const char *)kn_kpl_magic, KN_KPL_MAGIC_LEN);
  lua_setfield(L, -2, "kpl_magic");
  return 0;
}
