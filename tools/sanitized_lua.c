/* sanitized_lua.c - a minimal `lua5.4 script args...` built with
 * -fsanitize=address,undefined, so sanitizer-built kinesis modules can be
 * loaded without LD_PRELOAD. LD_PRELOAD would be inherited by every child a
 * spec starts (the curl CLI hangs at start-up with the ASan runtime
 * preloaded; node and nginx need not pay for it); an instrumented
 * executable carries the runtime itself and children stay untouched.
 * Only what busted and the specs use: a script path, its arguments in `arg`
 * (arg[-1] is this program), the standard libraries of the system liblua,
 * and the script's exit status. */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static int traceback(lua_State *L)
{
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int main(int argc, char **argv)
{
  lua_State *L;
  int i, status;

  if (argc < 2) {
    fprintf(stderr, "usage: %s script [args...]\n", argv[0]);
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create a Lua state\n", argv[0]);
    return 1;
  }
  luaL_openlibs(L);

  /* arg = { [-1] = interpreter, [0] = script, [1..] = arguments } */
  lua_createtable(L, argc - 2, 2);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");

  lua_pushcfunction(L, traceback);
  status = luaL_loadfile(L, argv[1]);
  if (status == LUA_OK) {
    luaL_checkstack(L, argc, "too many arguments");
    for (i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    status = lua_pcall(L, argc - 2, 0, 1);
  }
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: %s\n", argv[0], msg != NULL ? msg : "(error object is not a string)");
  }
  lua_close(L);
  return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
