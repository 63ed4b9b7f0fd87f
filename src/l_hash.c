/* l_hash.c - binding for hash keys and shard maps (u128.c, shardmap.c).
 * 128-bit values cross the boundary as decimal strings. A shard map is a
 * "kinesis.shard_map" userdata: the sorted ranges live in C, and its user
 * value is a table holding the caller's shard tables (t[i]) and their
 * positions by ShardId (t[ShardId] = i), so lookups return those very tables.
 * Wrong argument types raise; bad data (decimals, ranges) gives nil, err. */
#include "lbind.h"
#include "l_util.h"
#include "shardmap.h"
#include "u128.h"

#define SHARDMAP_MT "kinesis.shard_map"

/* Longest slice of a caller's string quoted in an error message. */
#define QUOTE_MAX 48

typedef struct lmap {
  kn_shardmap *m; /* owned; NULL once closed */
} lmap;

static void push_u128(lua_State *L, kn_u128 v)
{
  char buf[KN_U128_DEC_MAX + 1];
  size_t n = 0;
  kn_u128_format(v, buf, sizeof buf, &n);
  lua_pushlstring(L, buf, n);
}

/* The string at idx, or a raised argument error. Numbers are refused too:
 * a number's text form is an accident of formatting, not a key. */
static const char *check_bytes(lua_State *L, int idx, size_t *len)
{
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_argerror(L, idx, lua_pushfstring(L, "string expected, got %s",
                                          luaL_typename(L, idx)));
  return lua_tolstring(L, idx, len);
}

/* Pushes the first QUOTE_MAX bytes of s (the rest elided). */
static void push_quoted(lua_State *L, const char *s, size_t len)
{
  if (len > QUOTE_MAX) {
    lua_pushlstring(L, s, QUOTE_MAX);
    lua_pushliteral(L, "...");
    lua_concat(L, 2);
  } else {
    lua_pushlstring(L, s, len);
  }
}

/* hash_key(partition_key) -> decimal string | nil, err */
static int l_hash_key(lua_State *L)
{
  size_t len;
  const char *s = check_bytes(L, 1, &len);
  push_u128(L, kn_u128_md5(s, len));
  return 1;
}

/* u128_check(value) -> true | nil, err. Never raises: it validates
 * whatever a caller put in a request. */
static int l_u128_check(lua_State *L)
{
  size_t len;
  const char *s;
  kn_u128 v;
  int rc;
  if (lua_type(L, 1) != LUA_TSTRING)
    return kn_failf(L, "invalid_decimal", "expected a decimal string, got %s",
                    luaL_typename(L, 1));
  s = lua_tolstring(L, 1, &len);
  rc = kn_u128_parse(s, len, &v);
  if (rc != KN_U128_OK) return kn_fail(L, "invalid_decimal", kn_u128_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* Parses the string at idx; on failure pushes nil and an error naming
 * `what` and returns 0. */
static int parse_arg(lua_State *L, int idx, const char *what, kn_u128 *out)
{
  size_t len;
  const char *s = check_bytes(L, idx, &len);
  int rc = kn_u128_parse(s, len, out);
  if (rc == KN_U128_OK) return 1;
  lua_pushfstring(L, "bad %s \"", what);
  push_quoted(L, s, len);
  lua_pushfstring(L, "\": %s", kn_u128_strerror(rc));
  lua_concat(L, 3);
  kn_fail_top(L, "invalid_hash_key");
  return 0;
}

/* hash_split_point(start, end) -> decimal | nil, err: the NewStartingHashKey
 * that halves the inclusive range. */
static int l_split_point(lua_State *L)
{
  kn_u128 lo, hi, mid;
  if (!parse_arg(L, 1, "StartingHashKey", &lo)) return 2;
  if (!parse_arg(L, 2, "EndingHashKey", &hi)) return 2;
  if (kn_u128_cmp(lo, hi) > 0)
    return kn_fail(L, "inverted_range", "StartingHashKey is greater than EndingHashKey");
  if (kn_u128_split_point(lo, hi, &mid) != KN_U128_OK)
    return kn_fail(L, "range_too_narrow",
                   "hash key range too narrow to split (SplitShard needs a "
                   "key k with StartingHashKey + 1 < k < EndingHashKey)");
  push_u128(L, mid);
  return 1;
}

/* hash_even_ranges(n) -> { {StartingHashKey=, EndingHashKey=}, ... } | nil, err */
static int l_even_ranges(lua_State *L)
{
  lua_Number x = luaL_checknumber(L, 1);
  uint32_t n, i;
  if (x != x) luaL_argerror(L, 1, "number is NaN");
  /* INT_MAX: lua_rawseti takes an int index on 5.1. */
  if (!(x >= 1 && x <= 2147483647.0))
    return kn_fail(L, "invalid_shard_count", "shard count must be between 1 and 2147483647");
  n = (uint32_t)x;
  if ((lua_Number)n != x) luaL_argerror(L, 1, "shard count must be an integer");
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    kn_u128 s, e;
    kn_u128_even_range(n, i, &s, &e);
    lua_createtable(L, 0, 2);
    push_u128(L, s);
    lua_setfield(L, -2, "StartingHashKey");
    push_u128(L, e);
    lua_setfield(L, -2, "EndingHashKey");
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* ---- shard map ------------------------------------------------------------ */

static lmap *check_map(lua_State *L)
{
  lmap *u = (lmap *)luaL_checkudata(L, 1, SHARDMAP_MT);
  if (u->m == NULL) luaL_error(L, "attempt to use a closed shard map");
  return u;
}

static int map_destroy(lua_State *L)
{
  lmap *u = (lmap *)luaL_checkudata(L, 1, SHARDMAP_MT);
  kn_shardmap_free(u->m);
  u->m = NULL;
  return 0;
}

/* Pushes t[id + 1] (the shard table) from the user value table at tidx. */
static void push_shard(lua_State *L, int tidx, size_t id)
{
  lua_rawgeti(L, tidx, (int)id + 1);
}

/* Pushes the ShardId of shard id; ids reaching here were checked strings. */
static void push_name(lua_State *L, int tidx, size_t id)
{
  push_shard(L, tidx, id);
  lua_getfield(L, -1, "ShardId");
  lua_remove(L, -2);
}

/* Field `key` of the table at idx pushed if it has type `type`; otherwise
 * nothing is left on the stack and 0 is returned. */
static int get_typed(lua_State *L, int idx, const char *key, int type)
{
  lua_getfield(L, idx, key);
  if (lua_type(L, -1) == type) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Reads and parses HashKeyRange.<key> of the shard table at sidx (its
 * ShardId at nidx). On failure pushes an error message, returns 0. */
static int shard_key(lua_State *L, int sidx, int nidx, const char *key, kn_u128 *out)
{
  size_t len;
  const char *s;
  int rc;
  if (!get_typed(L, sidx, "HashKeyRange", LUA_TTABLE)) {
    lua_pushfstring(L, "%s has no HashKeyRange table", lua_tostring(L, nidx));
    return 0;
  }
  if (!get_typed(L, -1, key, LUA_TSTRING)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "%s has no HashKeyRange.%s string", lua_tostring(L, nidx), key);
    return 0;
  }
  s = lua_tolstring(L, -1, &len);
  rc = kn_u128_parse(s, len, out);
  if (rc != KN_U128_OK) {
    lua_pushfstring(L, "%s has a bad %s \"", lua_tostring(L, nidx), key);
    push_quoted(L, s, len);
    lua_pushfstring(L, "\": %s", kn_u128_strerror(rc));
    lua_concat(L, 3);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 2);
  return 1;
}

/* Pushes the message for a failed seal; returns its error code. */
static const char *push_problem(lua_State *L, int tidx, int rc, const kn_shardmap_problem *p)
{
  switch (rc) {
  case KN_SHARDMAP_EINVERTED:
    push_name(L, tidx, p->a);
    lua_pushliteral(L, ": StartingHashKey ");
    push_u128(L, p->from);
    lua_pushliteral(L, " is greater than EndingHashKey ");
    push_u128(L, p->to);
    lua_concat(L, 5);
    return "inverted_range";
  case KN_SHARDMAP_EOVERLAP:
    lua_pushliteral(L, "overlap: ");
    push_name(L, tidx, p->a);
    lua_pushliteral(L, " and ");
    push_name(L, tidx, p->b);
    lua_pushliteral(L, " both cover hash keys ");
    push_u128(L, p->from);
    lua_pushliteral(L, "..");
    push_u128(L, p->to);
    lua_concat(L, 8);
    return "overlap";
  case KN_SHARDMAP_EGAP:
    lua_pushliteral(L, "gap: no shard covers hash keys ");
    push_u128(L, p->from);
    lua_pushliteral(L, "..");
    push_u128(L, p->to);
    if (p->a == SIZE_MAX) {
      lua_pushliteral(L, " (before ");
      push_name(L, tidx, p->b);
    } else if (p->b == SIZE_MAX) {
      lua_pushliteral(L, " (after ");
      push_name(L, tidx, p->a);
    } else {
      lua_pushliteral(L, " (between ");
      push_name(L, tidx, p->a);
      lua_pushliteral(L, " and ");
      push_name(L, tidx, p->b);
      lua_concat(L, 3);
    }
    lua_pushliteral(L, ")");
    lua_concat(L, 7);
    return "gap";
  default:
    lua_pushliteral(L, "no shards to map");
    return "no_shards";
  }
}

/* shardmap_new(shards) -> map | nil, err. shards: an array of ListShards
 * shard tables, already filtered by the caller (open, or all). */
static int l_shardmap_new(lua_State *L)
{
  lmap *u;
  size_t n, i;
  int uidx, tidx, rc;
  kn_shardmap_problem problem;

  luaL_checktype(L, 1, LUA_TTABLE);
  n = lua_rawlen(L, 1);
  if (n == 0) return kn_fail(L, "no_shards", "no shards to map");
  if (n > 2147483647u) luaL_argerror(L, 1, "too many shards");
  lua_settop(L, 1);

  /* The userdata (with its __gc) first, then the C map into it: an error
   * from here on leaks nothing. */
  u = (lmap *)kn_newuserdata(L, sizeof *u);
  u->m = NULL;
  luaL_setmetatable(L, SHARDMAP_MT);
  uidx = lua_gettop(L);
  lua_createtable(L, (int)n, (int)n);
  tidx = lua_gettop(L);
  lua_pushvalue(L, tidx);
  kn_setuservalue(L, uidx);
  if (kn_shardmap_new(n, &u->m) != KN_SHARDMAP_OK) return luaL_error(L, "not enough memory");

  for (i = 1; i <= n; i++) {
    kn_u128 s, e;
    int sidx, nidx;
    lua_rawgeti(L, 1, (int)i);
    sidx = lua_gettop(L);
    if (!lua_istable(L, sidx))
      return kn_failf(L, "invalid_shard", "shard %d is a %s, not a table", (int)i,
                      luaL_typename(L, sidx));
    if (!get_typed(L, sidx, "ShardId", LUA_TSTRING))
      return kn_failf(L, "invalid_shard", "shard %d has no ShardId string", (int)i);
    nidx = lua_gettop(L);
    lua_pushvalue(L, nidx);
    lua_rawget(L, tidx);
    if (!lua_isnil(L, -1))
      return kn_failf(L, "duplicate_shard", "%s appears twice", lua_tostring(L, nidx));
    lua_pop(L, 1);
    if (!shard_key(L, sidx, nidx, "StartingHashKey", &s) ||
        !shard_key(L, sidx, nidx, "EndingHashKey", &e))
      return kn_fail_top(L, "invalid_shard");
    kn_shardmap_add(u->m, s, e);
    lua_pushvalue(L, sidx);
    lua_rawseti(L, tidx, (int)i);
    lua_pushinteger(L, (lua_Integer)i);
    lua_rawset(L, tidx); /* t[ShardId] = i; pops the name and i */
    lua_settop(L, tidx);
  }

  rc = kn_shardmap_seal(u->m, &problem);
  if (rc != KN_SHARDMAP_OK) return kn_fail_top(L, push_problem(L, tidx, rc, &problem));
  lua_settop(L, uidx);
  return 1;
}

/* The map of the "kinesis.shard_map" userdata at idx, for the other
 * binding files (lbind.h); raises if it is not one or is closed. The
 * pointer lives as long as the userdata. */
kn_shardmap *kn_check_shardmap(lua_State *L, int idx)
{
  lmap *u = (lmap *)luaL_checkudata(L, idx, SHARDMAP_MT);
  if (u->m == NULL) luaL_error(L, "attempt to use a closed shard map");
  return u->m;
}

/* map:lookup(partition_key) -> shard */
static int map_lookup(lua_State *L)
{
  lmap *u = check_map(L);
  size_t len, id = 0;
  const char *s = check_bytes(L, 2, &len);
  kn_shardmap_lookup(u->m, kn_u128_md5(s, len), &id);
  kn_getuservalue(L, 1);
  push_shard(L, lua_gettop(L), id);
  return 1;
}

/* map:lookup_hash(decimal) -> shard | nil, err */
static int map_lookup_hash(lua_State *L)
{
  lmap *u = check_map(L);
  size_t id = 0;
  kn_u128 v;
  if (!parse_arg(L, 2, "hash key", &v)) return 2;
  kn_shardmap_lookup(u->m, v, &id);
  kn_getuservalue(L, 1);
  push_shard(L, lua_gettop(L), id);
  return 1;
}

/* map:shards() -> array of the shard tables in hash key order */
static int map_shards(lua_State *L)
{
  lmap *u = check_map(L);
  size_t n = kn_shardmap_count(u->m), pos;
  int tidx;
  kn_getuservalue(L, 1);
  tidx = lua_gettop(L);
  lua_createtable(L, (int)n, 0);
  for (pos = 0; pos < n; pos++) {
    size_t id = 0;
    kn_u128 s, e;
    kn_shardmap_at(u->m, pos, &id, &s, &e);
    push_shard(L, tidx, id);
    lua_rawseti(L, -2, (int)pos + 1);
  }
  return 1;
}

/* Position (0-based id) of the shard named by the ShardId or shard table at
 * idx; SIZE_MAX if the map has no such shard. */
static size_t find_id(lua_State *L, int tidx, int idx)
{
  lua_Integer i;
  if (lua_istable(L, idx)) {
    if (!get_typed(L, idx, "ShardId", LUA_TSTRING))
      luaL_argerror(L, idx, "shard table without a ShardId string");
  } else {
    check_bytes(L, idx, NULL);
    lua_pushvalue(L, idx);
  }
  lua_rawget(L, tidx);
  i = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  return i >= 1 ? (size_t)i - 1 : SIZE_MAX;
}

/* map:shard(shard_id) -> shard | nil */
static int map_shard(lua_State *L)
{
  size_t id;
  int tidx;
  check_map(L);
  kn_getuservalue(L, 1);
  tidx = lua_gettop(L);
  id = find_id(L, tidx, 2);
  if (id == SIZE_MAX) {
    lua_pushnil(L);
    return 1;
  }
  push_shard(L, tidx, id);
  return 1;
}

/* map:adjacent(shard_or_id) -> lower, upper (either may be nil: the first
 * and last shard have one neighbour) | nil, nil, err when the shard is not
 * in the map. */
static int map_adjacent(lua_State *L)
{
  lmap *u = check_map(L);
  size_t id, lower = SIZE_MAX, upper = SIZE_MAX;
  int tidx;
  kn_getuservalue(L, 1);
  tidx = lua_gettop(L);
  id = find_id(L, tidx, 2);
  if (id == SIZE_MAX) {
    lua_pushnil(L);
    if (lua_istable(L, 2)) lua_getfield(L, 2, "ShardId");
    else lua_pushvalue(L, 2);
    lua_pushliteral(L, " is not in this shard map");
    lua_concat(L, 2);
    kn_fail_top(L, "shard_not_found");
    return 3;                              /* nil, nil, err */
  }
  kn_shardmap_adjacent(u->m, id, &lower, &upper);
  if (lower == SIZE_MAX) lua_pushnil(L);
  else push_shard(L, tidx, lower);
  if (upper == SIZE_MAX) lua_pushnil(L);
  else push_shard(L, tidx, upper);
  return 2;
}

/* map:count() -> number of shards */
static int map_count(lua_State *L)
{
  lmap *u = check_map(L);
  lua_pushinteger(L, (lua_Integer)kn_shardmap_count(u->m));
  return 1;
}

static int map_tostring(lua_State *L)
{
  lmap *u = (lmap *)luaL_checkudata(L, 1, SHARDMAP_MT);
  if (u->m == NULL)
    lua_pushliteral(L, "kinesis.shard_map (closed)");
  else
    lua_pushfstring(L, "kinesis.shard_map (%d shards)", (int)kn_shardmap_count(u->m));
  return 1;
}

int kn_open_hash(lua_State *L)
{
  static const luaL_Reg methods[] = {
    {"lookup", map_lookup},
    {"lookup_hash", map_lookup_hash},
    {"shards", map_shards},
    {"shard", map_shard},
    {"adjacent", map_adjacent},
    {"count", map_count},
    {"close", map_destroy},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"hash_key", l_hash_key},
    {"u128_check", l_u128_check},
    {"hash_split_point", l_split_point},
    {"hash_even_ranges", l_even_ranges},
    {"shardmap_new", l_shardmap_new},
    {NULL, NULL}
  };
  kn_newclass(L, SHARDMAP_MT, methods, map_destroy);
  luaL_getmetatable(L, SHARDMAP_MT);
  lua_pushcfunction(L, map_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, map_count);
  lua_setfield(L, -2, "__len");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
