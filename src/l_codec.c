/* l_codec.c - core.codec(shapes): the model compiled once into a userdata
 * (kinesis.codec_state) whose encode validates a parameters table against
 * its shape and writes the JSON body in one pass, and whose decode parses a
 * response body straight into Lua tables by shape. All state lives in the
 * userdata (the output buffer is reused between calls); no C globals. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "buf.h"
#include "codec.h"
#include "jsonscan.h"
#include "lbind.h"
#include "u128.h"

#define KN_CODEC_MT "kinesis.codec_state"
#define MAX_DEPTH 64
#define MAX_SKIP_DEPTH 500
#define MAX_SEGS 64

typedef struct codec_ud {
  kn_model model;
  kn_buf out;     /* the encoded body, reused */
  kn_buf scratch; /* unescaped strings and decoded blobs while decoding */
  int keys_ref;   /* registry ref: member id -> member name string */
  kn_b64_tables b64;
} codec_ud;

static int codec_gc(lua_State *L)
{
  codec_ud *c = luaL_checkudata(L, 1, KN_CODEC_MT);
  kn_model_free(&c->model);
  kn_buf_free(&c->out);
  kn_buf_free(&c->scratch);
  if (c->keys_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->keys_ref);
    c->keys_ref = LUA_NOREF;
  }
  return 0;
}

/* -------------------------------------------------------------- compiling */

static char *dup_mem(const char *s, size_t n)
{
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int member_cmp(const void *a, const void *b)
{
  const kn_member *x = a, *y = b;
  size_t k = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, k);
  if (c != 0) return c;
  return x->name_len < y->name_len ? -1 : x->name_len > y->name_len ? 1 : 0;
}

/* The index of the shape named by t[field] (a string), via the name map at
 * `names`; raises when it names no shape. */
static int target_of(lua_State *L, int t, const char *field, int names, const char *owner)
{
  int idx;
  lua_getfield(L, t, field);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "kinesis.codec: shape %s: '%s' is not a shape name", owner, field);
  lua_rawget(L, names);
  if (!lua_isnumber(L, -1))
    luaL_error(L, "kinesis.codec: shape %s: '%s' names an unknown shape", owner, field);
  idx = (int)lua_tointeger(L, -1) - 1; /* 0-based */
  lua_pop(L, 1);
  return idx;
}

static void opt_bound(lua_State *L, int t, const char *field, int *has, double *v)
{
  lua_getfield(L, t, field);
  if (lua_type(L, -1) == LUA_TNUMBER) {
    *has = 1;
    *v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
}

#define NOMEM() luaL_error(L, "kinesis.codec: out of memory")

/* Fills shape s from the model table at index t. keys: the id -> name table. */
static void compile_shape(lua_State *L, codec_ud *c, kn_shape *s, int t, int names, int keys)
{
  const char *tname;
  lua_getfield(L, t, "type");
  tname = lua_tostring(L, -1);
  s->type = tname != NULL ? kn_codec_type(tname) : KN_CT_OTHER;
  lua_pop(L, 1);
  opt_bound(L, t, "min", &s->has_min, &s->min);
  opt_bound(L, t, "max", &s->has_max, &s->max);
  s->hash_key = strcmp(s->name, "HashKey") == 0;

  lua_getfield(L, t, "enum");
  if (lua_istable(L, -1)) {
    size_t n = (size_t)lua_rawlen(L, -1), i;
    s->enums = calloc(n ? n : 1, sizeof *s->enums);
    s->enum_lens = calloc(n ? n : 1, sizeof *s->enum_lens);
    if (s->enums == NULL || s->enum_lens == NULL) NOMEM();
    for (i = 0; i < n; i++) {
      size_t len;
      const char *e;
      lua_rawgeti(L, -1, (int)i + 1);
      e = lua_tolstring(L, -1, &len);
      if (e == NULL) luaL_error(L, "kinesis.codec: shape %s: bad enum", s->name);
      if ((s->enums[i] = dup_mem(e, len)) == NULL) NOMEM();
      s->enum_lens[i] = len;
      s->nenum = i + 1;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);

  lua_getfield(L, t, "pattern");
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *p = lua_tolstring(L, -1, &len), *why = NULL;
    int rc = kn_re_compile(p, len, &s->re, &why);
    if (rc == -1) NOMEM();
    if (rc != 0) luaL_error(L, "kinesis.codec: pattern of %s: %s", s->name, why ? why : "invalid");
  }
  lua_pop(L, 1);

  if (s->type == KN_CT_STRUCTURE || s->type == KN_CT_UNION) {
    size_t n = 0, i = 0;
    lua_getfield(L, t, "members");
    if (!lua_istable(L, -1)) luaL_error(L, "kinesis.codec: shape %s has no members", s->name);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      n++;
      lua_pop(L, 1);
    }
    s->members = calloc(n ? n : 1, sizeof *s->members);
    if (s->members == NULL) NOMEM();
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      kn_member *m = &s->members[i];
      size_t len;
      const char *name;
      kn_buf kb;
      if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
        luaL_error(L, "kinesis.codec: shape %s: bad member", s->name);
      name = lua_tolstring(L, -2, &len);
      if ((m->name = dup_mem(name, len)) == NULL) NOMEM();
      m->name_len = len;
      s->nmembers = ++i;
      kn_buf_init(&kb);
      if (kn_json_put_string(&kb, name, len) != 0 || kn_buf_append(&kb, ":", 1) != 0) {
        kn_buf_free(&kb);
        NOMEM();
      }
      m->key_json = kb.data; /* ownership moves to the member */
      m->key_json_len = kb.len;
      m->target = target_of(L, lua_gettop(L), "target", names, s->name);
      lua_getfield(L, -1, "required");
      m->required = lua_toboolean(L, -1);
      lua_pop(L, 1);
      m->id = ++c->model.nkeys;
      lua_pushvalue(L, -2);
      lua_rawseti(L, keys, m->id);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    qsort(s->members, s->nmembers, sizeof *s->members, member_cmp);
  } else if (s->type == KN_CT_LIST) {
    s->member = target_of(L, t, "member", names, s->name);
  } else if (s->type == KN_CT_MAP) {
    s->key = target_of(L, t, "key", names, s->name);
    s->value = target_of(L, t, "value", names, s->name);
  }
}

/* core.codec(shapes) -> state, index: index maps shape name -> number
 * (what encode and decode take). Raises on a model it cannot compile. */
static int l_codec_new(lua_State *L)
{
  codec_ud *c;
  size_t n = 0, i = 0;
  int names, keys;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  c = lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  c->keys_ref = LUA_NOREF;
  kn_buf_init(&c->out);
  kn_buf_init(&c->scratch);
  kn_b64_tables_init(&c->b64);
  luaL_setmetatable(L, KN_CODEC_MT);          /* 2: the state */
  lua_newtable(L);                            /* 3: name -> index */
  names = 3;
  lua_newtable(L);                            /* 4: member id -> name */
  keys = 4;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
      return luaL_error(L, "kinesis.codec: shapes must map names to tables");
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushinteger(L, (lua_Integer)++n);
    lua_rawset(L, names);
  }
  c->model.shapes = calloc(n ? n : 1, sizeof *c->model.shapes);
  if (c->model.shapes == NULL) return NOMEM();
  c->model.nshapes = n;
  /* names first, so a failure mid-way frees through __gc */
  lua_pushnil(L);
  while (lua_next(L, names)) {
    size_t len;
    const char *name = lua_tolstring(L, -2, &len);
    kn_shape *s = &c->model.shapes[lua_tointeger(L, -1) - 1];
    if ((s->name = dup_mem(name, len)) == NULL) return NOMEM();
    lua_pop(L, 1);
  }
  for (i = 0; i < n; i++) {
    kn_shape *s = &c->model.shapes[i];
    lua_getfield(L, 1, s->name);
    compile_shape(L, c, s, lua_gettop(L), names, keys);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, keys);
  c->keys_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, names);
  return 2;
}

/* --------------------------------------------------------------- encoding */

enum { SEG_MEMBER, SEG_INDEX, SEG_KEY };

typedef struct seg {
  int kind;
  const kn_member *m;
  lua_Integer index;
  int keyidx;
} seg;

typedef struct enc_state {
  lua_State *L;
  codec_ud *c;
  kn_buf *b;
  int keys;      /* stack index of the id -> name table */
  int fail_slot; /* stack slots for the failing shape, value and path */
  seg segs[MAX_SEGS];
  int nseg;
  int depth;
} enc_state;

/* A rule broken at shape si by the value at vidx: records the shape name,
 * the value and the path (outermost first: member names, list indexes,
 * {map key}), which kinesis.codec turns into today's validation error. */
static int enc_fail(enc_state *st, int si, int vidx)
{
  lua_State *L = st->L;
  int i;
  lua_pushstring(L, st->c->model.shapes[si].name);
  lua_replace(L, st->fail_slot);
  lua_pushvalue(L, vidx);
  lua_replace(L, st->fail_slot + 1);
  lua_createtable(L, st->nseg, 0);
  for (i = 0; i < st->nseg; i++) {
    const seg *s = &st->segs[i];
    if (s->kind == SEG_MEMBER) lua_pushlstring(L, s->m->name, s->m->name_len);
    else if (s->kind == SEG_INDEX) lua_pushinteger(L, s->index);
    else {
      lua_createtable(L, 1, 0);
      lua_pushvalue(L, s->keyidx);
      lua_rawseti(L, -2, 1);
    }
    lua_rawseti(L, -2, i + 1);
  }
  lua_replace(L, st->fail_slot + 2);
  return 1;
}

#define PUT(expr) do { if ((expr) != 0) return -1; } while (0)

/* kn_buf_append without the call when the room is there (the common case:
 * the buffer is kept between calls) */
static int put(kn_buf *b, const char *p, size_t n)
{
  if (b->data != NULL && b->cap - b->len > n) {
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
  }
  return kn_buf_append(b, p, n);
}

static int is_integral(double v)
{
  return v == floor(v) && v > -9223372036854775808.0 && v < 9223372036854775808.0;
}

static int enc(enc_state *st, int si, int vidx);

static int push_seg(enc_state *st, int kind, const kn_member *m, lua_Integer index, int keyidx)
{
  seg *s;
  if (st->nseg >= MAX_SEGS) return -1;
  s = &st->segs[st->nseg++];
  s->kind = kind;
  s->m = m;
  s->index = index;
  s->keyidx = keyidx;
  return 0;
}

static int enc_string(enc_state *st, const kn_shape *sh, int si, int vidx)
{
  lua_State *L = st->L;
  size_t n, k;
  const char *s;
  long cps;
  if (lua_type(L, vidx) != LUA_TSTRING) return enc_fail(st, si, vidx);
  s = lua_tolstring(L, vidx, &n);
  cps = kn_utf8_length(s, n);
  if (cps < 0) return enc_fail(st, si, vidx);
  if ((sh->has_min && (double)cps < sh->min) || (sh->has_max && (double)cps > sh->max))
    return enc_fail(st, si, vidx);
  if (sh->enums != NULL) {
    for (k = 0; k < sh->nenum; k++)
      if (sh->enum_lens[k] == n && memcmp(sh->enums[k], s, n) == 0) break;
    if (k == sh->nenum) return enc_fail(st, si, vidx);
  }
  if (sh->re != NULL && !kn_re_test(sh->re, s, n)) return enc_fail(st, si, vidx);
  if (sh->hash_key) {
    kn_u128 v;
    if (kn_u128_parse(s, n, &v) != KN_U128_OK) return enc_fail(st, si, vidx);
  }
  PUT(kn_json_put_string(st->b, s, n));
  return 0;
}

static int enc_number(enc_state *st, const kn_shape *sh, int si, int vidx)
{
  lua_State *L = st->L;
  double d;
  if (lua_type(L, vidx) != LUA_TNUMBER) return enc_fail(st, si, vidx);
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, vidx) && sh->type != KN_CT_DOUBLE) {
    lua_Integer i = lua_tointeger(L, vidx);
    /* the reference's bound is -2^63 < v, which math.mininteger fails */
    if (sh->type != KN_CT_TIMESTAMP && i == LUA_MININTEGER) return enc_fail(st, si, vidx);
    if (sh->type == KN_CT_INTEGER && (i < -2147483647 - 1 || i > 2147483647))
      return enc_fail(st, si, vidx);
    if (sh->type != KN_CT_TIMESTAMP &&
        ((sh->has_min && (double)i < sh->min) || (sh->has_max && (double)i > sh->max)))
      return enc_fail(st, si, vidx);
    PUT(kn_json_put_integer(st->b, (long long)i));
    return 0;
  }
#endif
  d = lua_tonumber(L, vidx);
  if (sh->type == KN_CT_INTEGER || sh->type == KN_CT_LONG) {
    if (!is_integral(d)) return enc_fail(st, si, vidx);
    if (sh->type == KN_CT_INTEGER && (d < -2147483648.0 || d >= 2147483648.0))
      return enc_fail(st, si, vidx);
    if ((sh->has_min && d < sh->min) || (sh->has_max && d > sh->max))
      return enc_fail(st, si, vidx);
  } else if (sh->type == KN_CT_TIMESTAMP) {
    if (d != d || d == HUGE_VAL || d == -HUGE_VAL) return enc_fail(st, si, vidx);
  }
  PUT(kn_json_put_number(st->b, d));
  return 0;
}

static int enc_structure(enc_state *st, const kn_shape *sh, int si, int vidx)
{
  lua_State *L = st->L;
  uint64_t seen = 0;
  size_t count = 0, k;
  int first = 1, rc;
  const kn_member *last = NULL;
  if (!lua_istable(L, vidx)) return enc_fail(st, si, vidx);
  PUT(put(st->b, "{", 1));
  lua_pushnil(L);
  while (lua_next(L, vidx)) {
    const kn_member *m = NULL;
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t kl;
      const char *key = lua_tolstring(L, -2, &kl);
      /* the member after the previous one is the likely next (tables built
       * alike iterate alike); checked by content, never by address */
      const kn_member *guess = last != NULL && last + 1 < sh->members + sh->nmembers ? last + 1 : sh->members;
      if (sh->nmembers > 0 && guess->name_len == kl && memcmp(guess->name, key, kl) == 0) m = guess;
      else m = kn_codec_member(sh, key, kl);
      last = m;
    }
    if (m == NULL) {
      lua_pop(L, 2);
      return enc_fail(st, si, vidx);
    }
    count++;
    k = (size_t)(m - sh->members);
    if (k < 64) seen |= (uint64_t)1 << k;
    if (!first) PUT(put(st->b, ",", 1));
    first = 0;
    PUT(put(st->b, m->key_json, m->key_json_len));
    if (push_seg(st, SEG_MEMBER, m, 0, 0) != 0) return -1;
    rc = enc(st, m->target, lua_gettop(L));
    st->nseg--;
    lua_pop(L, 1);
    if (rc != 0) {
      lua_pop(L, 1);
      return rc;
    }
  }
  for (k = 0; k < sh->nmembers; k++) {
    const kn_member *m = &sh->members[k];
    int present;
    if (!m->required) continue;
    if (k < 64) {
      present = (seen >> k) & 1;
    } else {
      lua_rawgeti(L, st->keys, m->id);
      lua_rawget(L, vidx);
      present = !lua_isnil(L, -1);
      lua_pop(L, 1);
    }
    if (!present) return enc_fail(st, si, vidx);
  }
  if (sh->type == KN_CT_UNION && count != 1) return enc_fail(st, si, vidx);
  PUT(put(st->b, "}", 1));
  return 0;
}

static int enc_list(enc_state *st, const kn_shape *sh, int si, int vidx)
{
  lua_State *L = st->L;
  lua_Integer n, i;
  int rc;
  if (!lua_istable(L, vidx)) return enc_fail(st, si, vidx);
  n = (lua_Integer)lua_rawlen(L, vidx);
  /* keys 1..n only: the reference rejects a table with anything else */
  lua_pushnil(L);
  while (lua_next(L, vidx)) {
    double k;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER) goto not_list;
    k = lua_tonumber(L, -1);
    if (k < 1 || k > (double)n || k != floor(k)) goto not_list;
  }
  if ((sh->has_min && (double)n < sh->min) || (sh->has_max && (double)n > sh->max))
    return enc_fail(st, si, vidx);
  PUT(put(st->b, "[", 1));
  for (i = 1; i <= n; i++) {
    if (i > 1) PUT(put(st->b, ",", 1));
    lua_rawgeti(L, vidx, (int)i);
    if (push_seg(st, SEG_INDEX, NULL, i, 0) != 0) return -1;
    rc = enc(st, sh->member, lua_gettop(L));
    st->nseg--;
    lua_pop(L, 1);
    if (rc != 0) return rc;
  }
  PUT(put(st->b, "]", 1));
  return 0;
not_list:
  lua_pop(L, 1);
  return enc_fail(st, si, vidx);
}

static int enc_map(enc_state *st, const kn_shape *sh, int si, int vidx)
{
  lua_State *L = st->L;
  size_t n = 0;
  int rc;
  if (!lua_istable(L, vidx)) return enc_fail(st, si, vidx);
  PUT(put(st->b, "{", 1));
  lua_pushnil(L);
  while (lua_next(L, vidx)) {
    int top = lua_gettop(L);
    if (n++ > 0) PUT(put(st->b, ",", 1));
    if (push_seg(st, SEG_KEY, NULL, 0, top - 1) != 0) return -1;
    rc = enc(st, sh->key, top - 1);
    if (rc == 0) {
      PUT(put(st->b, ":", 1));
      rc = enc(st, sh->value, top);
    }
    st->nseg--;
    lua_pop(L, 1);
    if (rc != 0) {
      lua_pop(L, 1);
      return rc;
    }
  }
  if ((sh->has_min && (double)n < sh->min) || (sh->has_max && (double)n > sh->max))
    return enc_fail(st, si, vidx);
  PUT(put(st->b, "}", 1));
  return 0;
}

/* 0 ok, 1 a rule broken (recorded by enc_fail), -1 out of memory or too deep */
static int enc(enc_state *st, int si, int vidx)
{
  lua_State *L = st->L;
  const kn_shape *sh = &st->c->model.shapes[si];
  int rc;
  switch (sh->type) {
  case KN_CT_STRING: return enc_string(st, sh, si, vidx);
  case KN_CT_BLOB: {
    size_t n, elen;
    const char *s;
    if (lua_type(L, vidx) != LUA_TSTRING) return enc_fail(st, si, vidx);
    s = lua_tolstring(L, vidx, &n);
    if ((sh->has_min && (double)n < sh->min) || (sh->has_max && (double)n > sh->max))
      return enc_fail(st, si, vidx);
    if (kn_b64_encoded_len(n, &elen) != KN_B64_OK || elen > (size_t)-1 - 4) return -1;
    PUT(kn_buf_reserve(st->b, elen + 2));
    st->b->data[st->b->len++] = '"';
    kn_b64_fast_encode(&st->c->b64, (const unsigned char *)s, n, st->b->data + st->b->len);
    st->b->len += elen;
    st->b->data[st->b->len++] = '"';
    st->b->data[st->b->len] = '\0';
    return 0;
  }
  case KN_CT_BOOLEAN:
    if (lua_type(L, vidx) != LUA_TBOOLEAN) return enc_fail(st, si, vidx);
    if (lua_toboolean(L, vidx)) PUT(put(st->b, "true", 4));
    else PUT(put(st->b, "false", 5));
    return 0;
  case KN_CT_INTEGER:
  case KN_CT_LONG:
  case KN_CT_TIMESTAMP:
  case KN_CT_DOUBLE: return enc_number(st, sh, si, vidx);
  case KN_CT_STRUCTURE:
  case KN_CT_UNION:
  case KN_CT_LIST:
  case KN_CT_MAP:
    if (++st->depth > MAX_DEPTH || !lua_checkstack(L, 8)) return -1;
    rc = sh->type == KN_CT_LIST  ? enc_list(st, sh, si, vidx)
         : sh->type == KN_CT_MAP ? enc_map(st, sh, si, vidx)
                                 : enc_structure(st, sh, si, vidx);
    st->depth--;
    return rc;
  default: return enc_fail(st, si, vidx);
  }
}

static int check_index(lua_State *L, codec_ud *c, int arg)
{
  lua_Integer i = luaL_checkinteger(L, arg);
  luaL_argcheck(L, i >= 1 && (size_t)i <= c->model.nshapes, arg, "no such shape");
  return (int)i - 1;
}

/* state:encode(index, params) -> body | nil, shape_name, value, path.
 * On a broken rule nothing is written out: the caller gets the shape the
 * rule belongs to, the offending value and the path (outermost first) to
 * it. Raises only on out of memory or nesting past 64 levels. */
static int l_encode(lua_State *L)
{
  codec_ud *c = luaL_checkudata(L, 1, KN_CODEC_MT);
  int si = check_index(L, c, 2), rc;
  enc_state st;
  lua_settop(L, 3);
  lua_pushnil(L); /* 4..6: failure slots */
  lua_pushnil(L);
  lua_pushnil(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->keys_ref); /* 7 */
  memset(&st, 0, sizeof st);
  st.L = L;
  st.c = c;
  st.b = &c->out;
  st.keys = 7;
  st.fail_slot = 4;
  kn_buf_reset(&c->out);
  rc = enc(&st, si, 3);
  if (rc < 0) {
    kn_buf_reset(&c->out);
    return luaL_error(L, st.depth > MAX_DEPTH || st.nseg >= MAX_SEGS
                             ? "kinesis.codec: parameters nested too deeply"
                             : "kinesis.codec: out of memory");
  }
  if (rc > 0) {
    lua_pushnil(L);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 6);
    return 4;
  }
  lua_pushlstring(L, c->out.data != NULL ? c->out.data : "", c->out.len);
  /* a large body's memory is not kept between calls */
  if (c->out.cap > ((size_t)8 << 20)) kn_buf_free(&c->out);
  return 1;
}

/* --------------------------------------------------------------- decoding */

typedef struct dec_state {
  lua_State *L;
  codec_ud *c;
  const char *start, *p, *end;
  int keys;
  const char *err;
  const char *err_shape;
  int depth;
  size_t guess_left; /* list slots that may still be sized by a guess */
} dec_state;

static int dec_err(dec_state *st, const char *why)
{
  if (st->err == NULL) st->err = why;
  return -1;
}

static int shape_err(dec_state *st, const kn_shape *sh, const char *why)
{
  st->err_shape = sh->name;
  return dec_err(st, why);
}

static void skip_ws(dec_state *st)
{
  const char *p = st->p;
  while (p < st->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  st->p = p;
}

static int hexval(int c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_u4(dec_state *st, const char *p, unsigned *out)
{
  int i;
  unsigned v = 0;
  if (st->end - p < 4) return -1;
  for (i = 0; i < 4; i++) {
    int h = hexval((unsigned char)p[i]);
    if (h < 0) return -1;
    v = (v << 4) | (unsigned)h;
  }
  *out = v;
  return 0;
}

/* A JSON string at p (on the opening quote): *s, *n get its bytes, either
 * in the body itself or (with escapes) in the scratch buffer, valid until
 * the next string is read. 0 ok, -1 malformed. */
static int read_string(dec_state *st, const char **s, size_t *n)
{
  const char *p = st->p + 1, *run;
  kn_buf *sb = &st->c->scratch;
  /* fast path: no escapes (jsonscan.h finds the first special byte) */
  run = p;
  p = kn_json_find_special(p, st->end);
  if (p >= st->end) return dec_err(st, "unterminated string");
  if (*p == '"') {
    *s = run;
    *n = (size_t)(p - run);
    st->p = p + 1;
    return 0;
  }
  if (*p != '\\') return dec_err(st, "control character in a string");
  kn_buf_reset(sb);
  if (kn_buf_append(sb, run, (size_t)(p - run)) != 0) return dec_err(st, "out of memory");
  while (p < st->end) {
    unsigned char ch = (unsigned char)*p;
    char out[4];
    size_t on = 1;
    if (ch == '"') {
      *s = sb->data;
      *n = sb->len;
      st->p = p + 1;
      return 0;
    }
    if (ch < 0x20) return dec_err(st, "control character in a string");
    if (ch != '\\') {
      const char *q = kn_json_find_special(p, st->end);
      if (kn_buf_append(sb, p, (size_t)(q - p)) != 0) return dec_err(st, "out of memory");
      p = q;
      continue;
    }
    if (++p >= st->end) break;
    switch (*p) {
    case '"': out[0] = '"'; break;
    case '\\': out[0] = '\\'; break;
    case '/': out[0] = '/'; break;
    case 'b': out[0] = '\b'; break;
    case 'f': out[0] = '\f'; break;
    case 'n': out[0] = '\n'; break;
    case 'r': out[0] = '\r'; break;
    case 't': out[0] = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (read_u4(st, p + 1, &cp) != 0) return dec_err(st, "bad \\u escape");
      p += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF) return dec_err(st, "lone low surrogate");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (st->end - p < 7 || p[1] != '\\' || p[2] != 'u' || read_u4(st, p + 3, &lo) != 0 ||
            lo < 0xDC00 || lo > 0xDFFF)
          return dec_err(st, "unpaired surrogate");
        p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (cp < 0x80) out[0] = (char)cp;
      else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        on = 2;
      } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        on = 3;
      } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        on = 4;
      }
      break;
    }
    default: return dec_err(st, "bad escape");
    }
    if (kn_buf_append(sb, out, on) != 0) return dec_err(st, "out of memory");
    p++;
  }
  return dec_err(st, "unterminated string");
}

static const double pow10_tab[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number (RFC 8259 grammar only) into *out, rounded as strtod does. */
static int read_number(dec_state *st, double *out)
{
  const char *p = st->p, *s = p, *e = st->end;
  uint64_t mant = 0;
  int digits = 0, frac = 0, neg = 0, exp = 0, eneg = 0, edigits = 0;
  if (p < e && *p == '-') {
    neg = 1;
    p++;
  }
  if (p >= e || *p < '0' || *p > '9') return dec_err(st, "bad number");
  if (*p == '0') {
    p++;
  } else {
    while (p < e && *p >= '0' && *p <= '9') {
      if (digits < 19) mant = mant * 10 + (uint64_t)(*p - '0');
      digits += digits < 19 || mant != 0 ? 1 : 0;
      p++;
    }
  }
  if (p < e && *p == '.') {
    p++;
    if (p >= e || *p < '0' || *p > '9') return dec_err(st, "bad number");
    while (p < e && *p >= '0' && *p <= '9') {
      if (digits < 19) {
        mant = mant * 10 + (uint64_t)(*p - '0');
        if (mant != 0) digits++;
        frac++;
      } else {
        digits = 99; /* too many digits for the fast path */
      }
      p++;
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    if (p >= e || *p < '0' || *p > '9') return dec_err(st, "bad number");
    while (p < e && *p >= '0' && *p <= '9') {
      if (exp < 10000) exp = exp * 10 + (*p - '0');
      edigits++;
      p++;
    }
  }
  st->p = p;
  (void)edigits;
  {
    int e10 = (eneg ? -exp : exp) - frac;
    if (digits <= 15 && mant < ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
      double d = (double)mant;
      d = e10 < 0 ? d / pow10_tab[-e10] : d * pow10_tab[e10];
      *out = neg ? -d : d;
      return 0;
    }
  }
  {
    /* the slow path: a NUL-terminated copy for strtod */
    char tmp[128];
    size_t n = (size_t)(p - s);
    if (n < sizeof tmp) {
      memcpy(tmp, s, n);
      tmp[n] = '\0';
      *out = strtod(tmp, NULL);
    } else {
      char *big = malloc(n + 1);
      if (big == NULL) return dec_err(st, "out of memory");
      memcpy(big, s, n);
      big[n] = '\0';
      *out = strtod(big, NULL);
      free(big);
    }
  }
  return 0;
}

static int match_lit(dec_state *st, const char *lit, size_t n)
{
  if ((size_t)(st->end - st->p) < n || memcmp(st->p, lit, n) != 0)
    return dec_err(st, "unexpected character");
  st->p += n;
  return 0;
}

/* Skips any JSON value (members the model does not know). */
static int skip_value(dec_state *st, int depth)
{
  const char *s;
  size_t n;
  double d;
  if (depth > MAX_SKIP_DEPTH) return dec_err(st, "nested too deeply");
  skip_ws(st);
  if (st->p >= st->end) return dec_err(st, "unexpected end");
  switch (*st->p) {
  case '"': return read_string(st, &s, &n);
  case 't': return match_lit(st, "true", 4);
  case 'f': return match_lit(st, "false", 5);
  case 'n': return match_lit(st, "null", 4);
  case '[':
  case '{': {
    char close = *st->p == '[' ? ']' : '}';
    int obj = close == '}';
    st->p++;
    skip_ws(st);
    if (st->p < st->end && *st->p == close) {
      st->p++;
      return 0;
    }
    for (;;) {
      skip_ws(st);
      if (obj) {
        if (st->p >= st->end || *st->p != '"') return dec_err(st, "expected a member name");
        if (read_string(st, &s, &n) != 0) return -1;
        skip_ws(st);
        if (st->p >= st->end || *st->p != ':') return dec_err(st, "expected ':'");
        st->p++;
      }
      if (skip_value(st, depth + 1) != 0) return -1;
      skip_ws(st);
      if (st->p >= st->end) return dec_err(st, "unexpected end");
      if (*st->p == ',') {
        st->p++;
        continue;
      }
      if (*st->p == close) {
        st->p++;
        return 0;
      }
      return dec_err(st, "expected ',' or a closing bracket");
    }
  }
  default:
    if (*st->p == '-' || (*st->p >= '0' && *st->p <= '9')) return read_number(st, &d);
    return dec_err(st, "unexpected character");
  }
}

static int dec(dec_state *st, int si);

/* The members of a structure are read onto the stack as key/value pairs
 * first and the table is made once they are known, with a hash part of
 * exactly that size: a GetRecords record then takes a 4-node table instead
 * of one sized for every member the model knows, and never grows. The
 * pairs waiting on the stack never name one member twice (a repeated one
 * sends those before it into the table first), so they can be set in any
 * order and a later duplicate still wins, a later null still removes an
 * earlier value, as in cjson. A body repeating members cannot pile up:
 * every DEC_PAIRS pairs go into the table. */
#define DEC_PAIRS 16

/* Sets the npairs pairs above tbl into the table at tbl (made first, with
 * room for hint members, when still nil) and pops them. */
static void dec_flush(lua_State *L, int tbl, int npairs, int hint)
{
  if (lua_isnil(L, tbl)) {
    lua_createtable(L, 0, hint);
    lua_replace(L, tbl);
  }
  while (npairs-- > 0) lua_rawset(L, tbl);
}

/* After '{' was seen by the caller: a structure (or union) of shape sh
 * into a new table on top. */
static int dec_struct(dec_state *st, kn_shape *sh)
{
  lua_State *L = st->L;
  int tbl, rc, npairs = 0, nset = 0;
  uint64_t pending = 0; /* members among the waiting pairs, by index */
  kn_member *last = NULL;
  if (!lua_checkstack(L, 2 * DEC_PAIRS + 8)) return dec_err(st, "out of stack");
  lua_pushnil(L); /* the table, once its size is known */
  tbl = lua_gettop(L);
  st->p++;
  skip_ws(st);
  if (st->p < st->end && *st->p == '}') {
    st->p++;
    lua_createtable(L, 0, 0);
    lua_replace(L, tbl);
    return 0;
  }
  for (;;) {
    const char *k;
    size_t kn;
    const kn_member *m = NULL;
    skip_ws(st);
    if (st->p >= st->end || *st->p != '"') return dec_err(st, "expected a member name");
    if (read_string(st, &k, &kn) != 0) return -1;
    skip_ws(st);
    if (st->p >= st->end || *st->p != ':') return dec_err(st, "expected ':'");
    st->p++;
    /* a service writes the members of its objects in one order: the one
     * that came next last time is tried before the binary search */
    if (sh->nmembers > 0) {
      const kn_member *g = &sh->members[last != NULL ? last->seen_next : sh->seen_first];
      if (g->name_len == kn && memcmp(g->name, k, kn) == 0) m = g;
      else m = kn_codec_member(sh, k, kn);
    }
    if (m == NULL) {
      if (skip_value(st, st->depth) != 0) return -1;
    } else {
      int mi = (int)(m - sh->members);
      uint64_t bit = mi < 64 ? (uint64_t)1 << mi : 0;
      if (last != NULL) last->seen_next = mi;
      else sh->seen_first = mi;
      last = &sh->members[mi];
      if (bit == 0 || (pending & bit) != 0) {
        /* named again (or beyond the mask): what waits goes in first */
        dec_flush(L, tbl, npairs, nset);
        npairs = 0;
        pending = 0;
      }
      pending |= bit;
      lua_rawgeti(L, st->keys, m->id);
      rc = dec(st, m->target);
      if (rc < 0) return -1;
      if (rc == 1) lua_pushnil(L);
      else nset++;
      if (++npairs == DEC_PAIRS) {
        dec_flush(L, tbl, npairs, nset);
        npairs = 0;
        pending = 0;
      }
    }
    skip_ws(st);
    if (st->p >= st->end) return dec_err(st, "unexpected end");
    if (*st->p == ',') {
      st->p++;
      continue;
    }
    if (*st->p == '}') {
      st->p++;
      dec_flush(L, tbl, npairs, nset);
      return 0;
    }
    return dec_err(st, "expected ',' or '}'");
  }
}

/* After '{' was seen by the caller: map entries into the table on top. */
static int dec_map(dec_state *st, const kn_shape *sh)
{
  lua_State *L = st->L;
  int tbl = lua_gettop(L), rc;
  st->p++;
  skip_ws(st);
  if (st->p < st->end && *st->p == '}') {
    st->p++;
    return 0;
  }
  for (;;) {
    const char *k;
    size_t kn;
    skip_ws(st);
    if (st->p >= st->end || *st->p != '"') return dec_err(st, "expected a member name");
    if (read_string(st, &k, &kn) != 0) return -1;
    skip_ws(st);
    if (st->p >= st->end || *st->p != ':') return dec_err(st, "expected ':'");
    st->p++;
    lua_pushlstring(L, k, kn);
    rc = dec(st, sh->value);
    if (rc < 0) return -1;
    if (rc == 1) lua_pushnil(L); /* null: absent (a later duplicate wins, as in cjson) */
    lua_rawset(L, tbl);
    skip_ws(st);
    if (st->p >= st->end) return dec_err(st, "unexpected end");
    if (*st->p == ',') {
      st->p++;
      continue;
    }
    if (*st->p == '}') {
      st->p++;
      return 0;
    }
    return dec_err(st, "expected ',' or '}'");
  }
}

/* A list's array part is sized once its first element is read: the bytes
 * left divided by that element's bytes (GetRecords: 10,000 records in one
 * allocation instead of fourteen doublings to 16,384 slots). Only elements
 * of DEC_GUESS_MIN bytes or more count, and the slots so guessed in one
 * body add up to at most its length / DEC_GUESS_MIN, so a wrong guess
 * (a short list before much else) wastes at most a quarter of the body's
 * size (16-byte slots). */
#define DEC_GUESS_MIN 64

static void dec_guess_size(dec_state *st, int tbl, const char *first)
{
  size_t b1 = (size_t)(st->p - first), est;
  if (b1 < DEC_GUESS_MIN || st->guess_left == 0) return;
  est = (size_t)(st->end - st->p) / b1 + 1;
  if (est < 8) return;
  if (est > st->guess_left) est = st->guess_left;
  st->guess_left -= est;
  lua_createtable(st->L, (int)est, 0);
  lua_replace(st->L, tbl);
}

static int dec_array(dec_state *st, const kn_shape *sh)
{
  lua_State *L = st->L;
  int tbl = lua_gettop(L), rc, i = 0;
  st->p++;
  skip_ws(st);
  if (st->p < st->end && *st->p == ']') {
    st->p++;
    return 0;
  }
  for (;;) {
    const char *first = st->p;
    rc = dec(st, sh->member);
    if (rc < 0) return -1;
    if (i == 0 && rc == 0) dec_guess_size(st, tbl, first);
    if (rc == 0) lua_rawseti(L, tbl, ++i); /* nulls are dropped */
    skip_ws(st);
    if (st->p >= st->end) return dec_err(st, "unexpected end");
    if (*st->p == ',') {
      st->p++;
      continue;
    }
    if (*st->p == ']') {
      st->p++;
      return 0;
    }
    return dec_err(st, "expected ',' or ']'");
  }
}

/* Parses one value of shape si: 0 pushed, 1 JSON null (nothing pushed),
 * -1 malformed or not of the shape. */
static int dec(dec_state *st, int si)
{
  lua_State *L = st->L;
  kn_shape *sh = &st->c->model.shapes[si];
  const char *s;
  size_t n;
  double d;
  int rc;
  skip_ws(st);
  if (st->p >= st->end) return dec_err(st, "unexpected end");
  if (*st->p == 'n') return match_lit(st, "null", 4) == 0 ? 1 : -1;
  switch (sh->type) {
  case KN_CT_STRING:
    if (*st->p != '"') return shape_err(st, sh, "expected a string");
    if (read_string(st, &s, &n) != 0) return -1;
    lua_pushlstring(L, s, n);
    return 0;
  case KN_CT_BLOB: {
    kn_buf *sb = &st->c->scratch;
    size_t dlen, got;
    const char *src;
    if (*st->p != '"') return shape_err(st, sh, "expected base64 text");
    {
      /* the common case, plain base64: decoded straight from the body up
       * to the closing quote, one pass. No byte of the alphabet is a quote,
       * a backslash or a control character, so text that decodes needs no
       * JSON unescaping; anything else takes the general path below. */
      const char *b = st->p + 1;
      const char *q = memchr(b, '"', (size_t)(st->end - b));
      size_t bn = q != NULL ? (size_t)(q - b) : 1;
      if (bn == 0) {
        st->p = q + 1;
        lua_pushliteral(L, "");
        return 0;
      }
      if (bn % 4 == 0) {
        kn_buf_reset(sb);
        if (kn_buf_reserve(sb, bn / 4 * 3) != 0) return dec_err(st, "out of memory");
        if (kn_b64_fast_decode(&st->c->b64, b, bn, (unsigned char *)sb->data, &got) == 0) {
          st->p = q + 1;
          lua_pushlstring(L, sb->data, got);
          return 0;
        }
      }
    }
    if (read_string(st, &s, &n) != 0) return -1;
    if (kn_b64_decoded_len(s, n, &dlen) != KN_B64_OK) return shape_err(st, sh, "invalid base64");
    src = s;
    if (s == sb->data) {
      /* unescaped into scratch: decode in place is not allowed, copy first */
      char *copy = malloc(n ? n : 1);
      if (copy == NULL) return dec_err(st, "out of memory");
      memcpy(copy, s, n);
      kn_buf_reset(sb);
      if (kn_buf_reserve(sb, dlen) != 0) {
        free(copy);
        return dec_err(st, "out of memory");
      }
      rc = kn_b64_fast_decode(&st->c->b64, copy, n, (unsigned char *)sb->data, &got);
      free(copy);
    } else {
      kn_buf_reset(sb);
      if (kn_buf_reserve(sb, dlen) != 0) return dec_err(st, "out of memory");
      rc = kn_b64_fast_decode(&st->c->b64, src, n, (unsigned char *)sb->data, &got);
    }
    if (rc != 0) return shape_err(st, sh, "invalid base64");
    lua_pushlstring(L, sb->data, got);
    return 0;
  }
  case KN_CT_BOOLEAN:
    if (*st->p == 't') rc = match_lit(st, "true", 4), lua_pushboolean(L, 1);
    else if (*st->p == 'f') rc = match_lit(st, "false", 5), lua_pushboolean(L, 0);
    else return shape_err(st, sh, "expected a boolean");
    return rc;
  case KN_CT_INTEGER:
  case KN_CT_LONG:
  case KN_CT_TIMESTAMP:
  case KN_CT_DOUBLE:
    if (*st->p != '-' && (*st->p < '0' || *st->p > '9')) return shape_err(st, sh, "expected a number");
    if (read_number(st, &d) != 0) return -1;
#if LUA_VERSION_NUM >= 503
    /* integer members as Lua integers, as math.tointeger makes them */
    if ((sh->type == KN_CT_INTEGER || sh->type == KN_CT_LONG) && d == floor(d) &&
        d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
      lua_pushinteger(L, (lua_Integer)d);
      return 0;
    }
#endif
    lua_pushnumber(L, d);
    return 0;
  case KN_CT_STRUCTURE:
  case KN_CT_UNION:
  case KN_CT_MAP:
  case KN_CT_LIST:
    if (st->depth >= MAX_DEPTH) return dec_err(st, "nested too deeply");
    if (!lua_checkstack(L, 6)) return dec_err(st, "out of stack");
    if (*st->p != (sh->type == KN_CT_LIST ? '[' : '{')) {
      /* an empty table written by a JSON encoder that cannot tell {} from
       * [] (lua-cjson, in test stubs) is read as empty either way */
      const char *q = st->p + 1;
      if (*st->p != '[' && *st->p != '{')
        return shape_err(st, sh, sh->type == KN_CT_LIST ? "expected an array" : "expected an object");
      while (q < st->end && (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t')) q++;
      if (q >= st->end || *q != (*st->p == '[' ? ']' : '}'))
        return shape_err(st, sh, sh->type == KN_CT_LIST ? "expected an array" : "expected an object");
      st->p = q + 1;
      lua_newtable(L);
      return 0;
    }
    st->depth++;
    if (sh->type == KN_CT_LIST) {
      lua_newtable(L);
      rc = dec_array(st, sh);
    } else if (sh->type == KN_CT_MAP) {
      lua_newtable(L);
      rc = dec_map(st, sh);
    } else {
      rc = dec_struct(st, sh);
    }
    st->depth--;
    return rc;
  default:
    return shape_err(st, sh, "has a type the codec cannot decode");
  }
}

/* Decodes body[0..n) by shape si onto the stack: 1 (the table) or 2 (nil,
 * message); nothing else is left behind. */
static int decode_body(lua_State *L, codec_ud *c, int si, const char *body, size_t n)
{
  dec_state st;
  int rc, keys;
  if (n == 0) {
    lua_newtable(L);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->keys_ref);
  keys = lua_gettop(L);
  memset(&st, 0, sizeof st);
  st.L = L;
  st.c = c;
  st.start = st.p = body;
  st.end = body + n;
  st.keys = keys;
  st.guess_left = n / DEC_GUESS_MIN;
  if (st.guess_left > (size_t)1 << 26) st.guess_left = (size_t)1 << 26;
  rc = dec(&st, si);
  if (rc >= 0) {
    skip_ws(&st);
    if (st.p != st.end) rc = dec_err(&st, "bytes after the value");
  }
  if (c->scratch.cap > ((size_t)1 << 20)) kn_buf_free(&c->scratch);
  if (rc < 0) {
    lua_settop(L, keys - 1);
    lua_pushnil(L);
    if (st.err_shape != NULL)
      lua_pushfstring(L, "unexpected response shape: %s %s at byte %d", st.err_shape,
                      st.err, (int)(st.p - st.start));
    else
      lua_pushfstring(L, "invalid JSON in response at byte %d: %s", (int)(st.p - st.start),
                      st.err ? st.err : "malformed");
    return 2;
  }
  if (rc == 1) lua_newtable(L);
  lua_remove(L, keys);
  return 1;
}

/* state:decode(index, body) -> table | nil, message. An empty body is {};
 * so is a body that is JSON null. Never raises on the body's content. */
static int l_decode(lua_State *L)
{
  codec_ud *c = luaL_checkudata(L, 1, KN_CODEC_MT);
  int si = check_index(L, c, 2);
  size_t n;
  const char *body = luaL_checklstring(L, 3, &n);
  lua_settop(L, 3);
  return decode_body(L, c, si, body, n);
}

/* core.regex_test(pattern, s) -> boolean | nil, why: the C matcher of the
 * model's pattern subset, compiled per call (for specs and the fuzzer). */
static int l_regex_test(lua_State *L)
{
  size_t pn, n;
  const char *pat = luaL_checklstring(L, 1, &pn), *s = luaL_checklstring(L, 2, &n), *why;
  kn_regex *re;
  int rc = kn_re_compile(pat, pn, &re, &why);
  if (rc == -1) return luaL_error(L, "kinesis.codec: out of memory");
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  rc = kn_re_test(re, s, n);
  kn_re_free(re);
  lua_pushboolean(L, rc);
  return 1;
}

int kn_open_codec(lua_State *L)
{
  static const luaL_Reg methods[] = {
    {"encode", l_encode},
    {"decode", l_decode},
    {NULL, NULL},
  };
  kn_newclass(L, KN_CODEC_MT, methods, codec_gc);
  lua_pushcfunction(L, l_codec_new);
  lua_setfield(L, -2, "codec");
  lua_pushcfunction(L, l_regex_test);
  lua_setfield(L, -2, "regex_test");
  return 0;
}
