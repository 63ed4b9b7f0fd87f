/* l_answer.c - core.put_records_answer(body[, cap]): the PutRecords answer
 * scanner (answer.c) seen from Lua, so specs can hold it against
 * kinesis.codec's decoder. It builds the tables the scanner exists to
 * avoid; the producer reads the entries in C. Misuse raises; a body the
 * scanner refuses gives nil, why. Scratch memory is userdata. */
#include "lbind.h"
#include "answer.h"

/* PutRecords takes at most 500 records, so a real answer has 500 entries
 * at most (PutRecords API reference). */
#define DEFAULT_CAP 500
#define MAX_CAP 1000000

static void set_field(lua_State *L, const char *name, const char *raw, uint32_t len, uint8_t esc,
                      char *scratch)
{
  if (raw == NULL) return;
  if (esc) lua_pushlstring(L, scratch, kn_json_unescape(raw, len, scratch));
  else lua_pushlstring(L, raw, len);
  lua_setfield(L, -2, name);
}

/* core.put_records_answer(body[, cap]) -> { {SequenceNumber =, ShardId =,
 * ErrorCode =, ErrorMessage =}, ... } (unescaped; absent and null members
 * nil) | nil, why ("... at byte N"). More than cap entries (default 500)
 * is a failure. */
static int l_put_records_answer(lua_State *L)
{
  size_t len, n = 0, i, at = 0, longest = 0;
  const char *body, *why = NULL;
  lua_Integer cap = DEFAULT_CAP;
  kn_pr_entry *entries;
  char *scratch;
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_argerror(L, 1, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, 1)));
  body = lua_tolstring(L, 1, &len);
  if (!lua_isnoneornil(L, 2)) {
    cap = luaL_checkinteger(L, 2);
    luaL_argcheck(L, cap >= 0 && cap <= MAX_CAP, 2, "cap out of range");
  }
  entries = (kn_pr_entry *)lua_newuserdata(L, (size_t)(cap > 0 ? cap : 1) * sizeof *entries);
  if (kn_pr_scan_at(body, len, entries, (size_t)cap, &n, &why, &at) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s at byte %d", why, (int)at);
    return 2;
  }
  for (i = 0; i < n; i++) {
    const kn_pr_entry *e = &entries[i];
    if (e->seq_esc && e->seq_len > longest) longest = e->seq_len;
    if (e->shard_esc && e->shard_len > longest) longest = e->shard_len;
    if (e->code_esc && e->code_len > longest) longest = e->code_len;
    if (e->msg_esc && e->msg_len > longest) longest = e->msg_len;
  }
  scratch = (char *)lua_newuserdata(L, longest > 0 ? longest : 1);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    const kn_pr_entry *e = &entries[i];
    lua_createtable(L, 0, 2);
    set_field(L, "SequenceNumber", e->seq, e->seq_len, e->seq_esc, scratch);
    set_field(L, "ShardId", e->shard, e->shard_len, e->shard_esc, scratch);
    set_field(L, "ErrorCode", e->code, e->code_len, e->code_esc, scratch);
    set_field(L, "ErrorMessage", e->msg, e->msg_len, e->msg_esc, scratch);
    lua_rawseti(L, -2, (int)(i + 1));
  }
  return 1;
}

int kn_open_answer(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    {"put_records_answer", l_put_records_answer},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
