/* l_batch.c - the producer's PutRecords body writer: a "kinesis.batch_writer"
 * userdata owning one kn_buf, reused from call to call (a producer writes
 * hundreds of bodies of similar size a second), and the codec's base64
 * tables. writer:put_records(head, entries, n) writes
 *   head .. {"Data":"<base64>","PartitionKey":<JSON>[,"ExplicitHashKey":"<decimal>"]},... .. "]}"
 * from entries[1..n] (tables with string Data and PartitionKey, an optional
 * ExplicitHashKey string) and returns it as a Lua string. The producer
 * checked every record at put, so nothing is validated again here; a
 * missing or non-string field raises (the caller's bug, not bad input).
 * The userdata is created before any allocation; __gc and __close share
 * one destroy. */
#include "lbind.h"
#include "l_util.h"
#include "buf.h"
#include "codec.h"

#define WRITER_MT "kinesis.batch_writer"

typedef struct writer {
  kn_buf body;        /* owned; reused across calls */
  kn_b64_tables b64;  /* built once at creation */
  int closed;
} writer;

static writer *check_writer(lua_State *L)
{
  writer *w = (writer *)luaL_checkudata(L, 1, WRITER_MT);
  if (w->closed) luaL_error(L, "batch writer is closed");
  return w;
}

static int writer_destroy(lua_State *L)
{
  writer *w = (writer *)luaL_checkudata(L, 1, WRITER_MT);
  kn_buf_free(&w->body);
  w->closed = 1;
  return 0;
}

/* The string field `key` of the table at idx (left on the stack), or a
 * raised error naming the entry. */
static const char *field(lua_State *L, int idx, const char *key, int i, int optional, size_t *len)
{
  int t;
  lua_getfield(L, idx, key);
  t = lua_type(L, -1);
  if (t == LUA_TSTRING) return lua_tolstring(L, -1, len);
  if (optional && t == LUA_TNIL) return NULL;
  luaL_error(L, "batch writer: entry %d has no %s string", i, key);
  return NULL;
}

#define PUT(w, s, n) \
  do { if (kn_buf_append(&(w)->body, (s), (n)) != 0) goto nomem; } while (0)
#define PUT_LIT(w, s) PUT(w, s, sizeof(s) - 1)

/* writer:put_records(head, entries, n) -> body */
static int writer_put_records(lua_State *L)
{
  writer *w = check_writer(L);
  size_t hlen;
  const char *head = luaL_checklstring(L, 2, &hlen);
  lua_Integer n = luaL_checkinteger(L, 4), i;
  luaL_checktype(L, 3, LUA_TTABLE);
  kn_buf_reset(&w->body);
  PUT(w, head, hlen);
  for (i = 1; i <= n; i++) {
    size_t dlen, plen, elen, b64len;
    const char *data, *pk, *ehk;
    int top = lua_gettop(L), e;
    lua_rawgeti(L, 3, (int)i);
    if (lua_type(L, -1) != LUA_TTABLE)
      return luaL_error(L, "batch writer: entry %d is not a table", (int)i);
    e = lua_gettop(L);
    data = field(L, e, "Data", (int)i, 0, &dlen);
    pk = field(L, e, "PartitionKey", (int)i, 0, &plen);
    ehk = field(L, e, "ExplicitHashKey", (int)i, 1, &elen);
    if (i > 1) PUT_LIT(w, ",");
    PUT_LIT(w, "{\"Data\":\"");
    b64len = 4 * ((dlen + 2) / 3);
    if (kn_buf_reserve(&w->body, b64len) != 0) goto nomem;
    kn_b64_fast_encode(&w->b64, (const unsigned char *)data, dlen, w->body.data + w->body.len);
    w->body.len += b64len;
    w->body.data[w->body.len] = '\0';
    PUT_LIT(w, "\",\"PartitionKey\":");
    if (kn_json_put_string(&w->body, pk, plen) != 0) goto nomem;
    if (ehk) {
      PUT_LIT(w, ",\"ExplicitHashKey\":\"");
      PUT(w, ehk, elen);
      PUT_LIT(w, "\"");
    }
    PUT_LIT(w, "}");
    lua_settop(L, top);
  }
  PUT_LIT(w, "]}");
  lua_pushlstring(L, w->body.data, w->body.len);
  return 1;
nomem:
  return luaL_error(L, "batch writer: not enough memory");
}

/* core.batch_writer() -> writer */
static int l_batch_writer(lua_State *L)
{
  writer *w = (writer *)lua_newuserdata(L, sizeof *w);
  kn_buf_init(&w->body);
  w->closed = 0;
  kn_b64_tables_init(&w->b64);
  luaL_setmetatable(L, WRITER_MT);
  return 1;
}

int kn_open_batch(lua_State *L)
{
  static const luaL_Reg methods[] = {
    {"put_records", writer_put_records},
    {"close", writer_destroy},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, WRITER_MT)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, writer_destroy);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, writer_destroy);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_batch_writer);
  lua_setfield(L, -2, "batch_writer");
  return 0;
}
