/* sanitized_lua.c - the lua5.4 command line, built with
 * -fsanitize=address,undefined, so sanitizer-built kinesis modules can be
 * loaded without LD_PRELOAD. LD_PRELOAD would reach every child a spec
 * starts (the curl CLI hangs at start-up with the ASan runtime preloaded;
 * node and nginx need not pay for it); an instrumented executable carries
 * the runtime itself, and children stay untouched. tools/check.sh puts it
 * first in PATH as `lua5.4`, so the specs' own lua5.4 children are
 * sanitized as well.
 * The options the specs and busted use, as lua.c has them: -e stat,
 * -l mod, -v, -E, -W, --, `-` (stdin), then `script args...` with `arg`
 * laid out the same way; the standard libraries of the system liblua; the
 * exit status of the chunk (0, or 1 after an error). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static const char *progname = "lua5.4";

static int traceback(lua_State *L)
{
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below its nargs arguments with a traceback. */
static int docall(lua_State *L, int nargs, int nresults)
{
  int base = lua_gettop(L) - nargs, status;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}

static int report(lua_State *L, int status)
{
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: %s\n", progname, msg != NULL ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

static int dostring(lua_State *L, const char *s)
{
  int status = luaL_loadbuffer(L, s, strlen(s), "=(command line)");
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

static int dorequire(lua_State *L, const char *name)
{
  int status;
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  status = docall(L, 1, 1);
  if (status == LUA_OK) lua_setglobal(L, name);   /* -l mod: mod = require "mod" */
  return report(L, status);
}

int main(int argc, char **argv)
{
  lua_State *L;
  int i, script = 0, ran = 0, status = LUA_OK;

  if (argv[0] != NULL && argv[0][0] != '\0') progname = argv[0];
  /* find the script: the first argument that is not an option */
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { if (i + 1 < argc) script = i + 1; break; }
    if (strcmp(argv[i], "-") == 0) { script = i; break; }
    if (argv[i][0] != '-') { script = i; break; }
    if (strcmp(argv[i], "-e") == 0 || strcmp(argv[i], "-l") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '%s' needs an argument\n", progname, argv[i - 1]);
        return EXIT_FAILURE;
      }
    } else if (strcmp(argv[i], "-v") != 0 && strcmp(argv[i], "-E") != 0 &&
               strcmp(argv[i], "-W") != 0) {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, argv[i]);
      return EXIT_FAILURE;
    }
  }

  L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create a Lua state\n", progname);
    return EXIT_FAILURE;
  }
  luaL_openlibs(L);

  /* arg: the script at 0, its arguments after, everything before negative */
  {
    int at = script > 0 ? script : argc;
    lua_createtable(L, argc - at, at + 1);
    for (i = 0; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i - at);
    }
    lua_setglobal(L, "arg");
  }

  for (i = 1; i < argc && (script == 0 || i < script) && status == LUA_OK; i++) {
    if (strcmp(argv[i], "-e") == 0) {
      status = dostring(L, argv[++i]);
      ran = 1;
    } else if (strcmp(argv[i], "-l") == 0) {
      status = dorequire(L, argv[++i]);
      ran = 1;
    } else if (strcmp(argv[i], "-v") == 0) {
      printf("%s (sanitized build)\n", LUA_RELEASE);
      ran = 1;
    } else if (strcmp(argv[i], "-W") == 0) {
      lua_warning(L, "@on", 0);
    }
  }

  if (status == LUA_OK && (script > 0 || !ran)) {
    const char *file = script > 0 && strcmp(argv[script], "-") != 0 ? argv[script] : NULL;
    int n;
    status = luaL_loadfile(L, file);
    if (status == LUA_OK) {
      n = script > 0 ? argc - script - 1 : 0;
      luaL_checkstack(L, n, "too many arguments");
      for (i = 1; i <= n; i++) lua_pushstring(L, argv[script + i]);
      status = docall(L, n, 0);
    }
    report(L, status);
  }
  lua_close(L);
  return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
