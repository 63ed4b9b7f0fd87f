/* compat.h - the few Lua C API differences between 5.1/LuaJIT and 5.4.
 * Every binding includes this instead of lua headers directly, so one
 * source compiles for both; shims are private (static inline). */
#ifndef KN_COMPAT_H
#define KN_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501
#ifndef luaL_newlib
#define luaL_newlibtable(L, l) lua_createtable(L, 0, sizeof(l) / sizeof((l)[0]) - 1)
#define luaL_newlib(L, l) (luaL_newlibtable(L, l), luaL_setfuncs(L, l, 0))
#endif
#define lua_rawlen(L, i) lua_objlen(L, (i))

/* LuaJIT 2.1 exports luaL_setfuncs, luaL_testudata and luaL_setmetatable
 * only in some builds; private copies avoid depending on that. */
static inline void kn_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#undef luaL_setfuncs
#define luaL_setfuncs kn_setfuncs

static inline void *kn_testudata(lua_State *L, int ud, const char *tname)
{
  void *p = lua_touserdata(L, ud);
  if (p != NULL && lua_getmetatable(L, ud)) {
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2)) p = NULL;
    lua_pop(L, 2);
    return p;
  }
  return NULL;
}
#undef luaL_testudata
#define luaL_testudata kn_testudata

static inline void kn_setmetatable(lua_State *L, const char *tname)
{
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#undef luaL_setmetatable
#define luaL_setmetatable kn_setmetatable
#endif

/* Creates the metatable `name` (if new) with methods in __index, __gc and,
 * on 5.4, __close bound to the same destroy function. The nup values on
 * top of the stack become upvalues 1..nup of every method; they are
 * popped, and nothing is left on the stack. */
static inline void kn_newclass_up(lua_State *L, const char *name, const luaL_Reg *methods,
                                  lua_CFunction destroy, int nup)
{
  if (luaL_newmetatable(L, name)) {
    int mt = lua_gettop(L), i;
    lua_newtable(L);
    for (i = nup; i >= 1; i--) lua_pushvalue(L, mt - i);
    luaL_setfuncs(L, methods, nup);
    lua_setfield(L, -2, "__index");
    if (destroy != NULL) {
      lua_pushcfunction(L, destroy);
      lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
      lua_pushcfunction(L, destroy);
      lua_setfield(L, -2, "__close");
#endif
    }
  }
  lua_pop(L, 1 + nup);
}

static inline void kn_newclass(lua_State *L, const char *name,
                               const luaL_Reg *methods, lua_CFunction destroy)
{
  kn_newclass_up(L, name, methods, destroy, 0);
}

/* One user value per full userdata: the 5.1 environment table, else user
 * value 1. */
#if LUA_VERSION_NUM == 501
#define kn_newuserdata(L, size) lua_newuserdata((L), (size))
#define kn_setuservalue(L, idx) ((void)lua_setfenv((L), (idx)))
#define kn_getuservalue(L, idx) lua_getfenv((L), (idx))
#elif LUA_VERSION_NUM < 504
#define kn_newuserdata(L, size) lua_newuserdata((L), (size))
#define kn_setuservalue(L, idx) lua_setuservalue((L), (idx))
#define kn_getuservalue(L, idx) ((void)lua_getuservalue((L), (idx)))
#else
#define kn_newuserdata(L, size) lua_newuserdatauv((L), (size), 1)
#define kn_setuservalue(L, idx) ((void)lua_setiuservalue((L), (idx), 1))
#define kn_getuservalue(L, idx) ((void)lua_getiuservalue((L), (idx), 1))
#endif

#endif
