/* l_util.c - the helpers of l_util.h, linked into both kinesis.core and
 * kinesis.curl. The error metatable is looked up by name in the registry,
 * so errors from either module share it whichever module loads first. */
#include "l_util.h"

#include <stdarg.h>
#include <string.h>

#define KN_ERROR_MT "kinesis.binding_error"

static int error_tostring(lua_State *L)
{
  lua_getfield(L, 1, "message");
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_getfield(L, 1, "code");
    if (lua_type(L, -1) != LUA_TSTRING) lua_pushliteral(L, "error");
  }
  return 1;
}

void kn_push_error(lua_State *L, const char *code, const char *message)
{
  lua_createtable(L, 0, 2);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  if (luaL_newmetatable(L, KN_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
}

int kn_fail(lua_State *L, const char *code, const char *message)
{
  lua_pushnil(L);
  kn_push_error(L, code, message);
  return 2;
}

int kn_failf(lua_State *L, const char *code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return kn_fail_top(L, code);
}

int kn_fail_top(lua_State *L, const char *code)
{
  /* the message is used as is: it may quote bytes that hold a NUL */
  kn_push_error(L, code, "");
  lua_insert(L, -2);
  lua_setfield(L, -2, "message");
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

int kn_opt_boolean(lua_State *L, int t, const char *name, int dflt)
{
  int v = dflt;
  if (lua_isnoneornil(L, t)) return dflt;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) == LUA_TBOOLEAN) {
    v = lua_toboolean(L, -1);
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "bad option '%s' (boolean expected, got %s)", name,
                      luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  return v;
}

kn_header *kn_read_headers(lua_State *L, int idx, const char *what,
                           kn_header *stackbuf, size_t stackn, size_t *count)
{
  kn_header *hs = stackbuf;
  size_t n = 0, i = 0;

  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  *count = 0;
  if (lua_isnil(L, idx)) return hs;
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_error(L, "%s: bad 'headers' (table expected, got %s)", what, luaL_typename(L, idx));

  /* pass 1: check every entry and count them, before anything is lent.
   * While the entries come as the pairs 1, 2, 3, ... (an array, the usual
   * case) they are read into stackbuf on the way, and pass 2 is spared. */
  {
    int in_order = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING) {
        in_order = 0;
        if (lua_type(L, -1) != LUA_TSTRING)
          luaL_error(L, "%s: bad header '%s' (string value expected, got %s)", what,
                     lua_tostring(L, -2), luaL_typename(L, -1));
      } else if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
          luaL_error(L, "%s: bad 'headers' entry (expected {name, value} strings)", what);
        if (in_order && n < stackn && lua_tonumber(L, -4) == (lua_Number)(n + 1)) {
          /* the strings stay referenced by the pair, which the table holds */
          hs[n].name = lua_tolstring(L, -2, &hs[n].name_len);
          hs[n].value = lua_tolstring(L, -1, &hs[n].value_len);
        } else {
          in_order = 0;
        }
        lua_pop(L, 2);
      } else {
        luaL_error(L, "%s: bad 'headers' entry (expected {name, value} or name = value)", what);
      }
      n++;
      lua_pop(L, 1);
    }
    if (in_order) {
      *count = n;
      return hs;
    }
  }
  /* a GC-owned array when big: a raise later leaks nothing */
  if (n > stackn) hs = (kn_header *)lua_newuserdata(L, n * sizeof *hs);

  /* pass 2: the array part first, in order, then the name = value entries;
   * each string stays referenced by the headers table */
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, idx, (int)i + 1);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      break;
    }
    lua_rawgeti(L, -1, 1);
    hs[i].name = lua_tolstring(L, -1, &hs[i].name_len);
    lua_rawgeti(L, -2, 2);
    hs[i].value = lua_tolstring(L, -1, &hs[i].value_len);
    lua_pop(L, 3);
  }
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING && i < n) {
      hs[i].name = lua_tolstring(L, -2, &hs[i].name_len);
      hs[i].value = lua_tolstring(L, -1, &hs[i].value_len);
      i++;
    }
    lua_pop(L, 1);
  }
  *count = i;
  return hs;
}
