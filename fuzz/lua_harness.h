/* lua_harness.h - the body of the libFuzzer harnesses that run a Lua driver
 * (fuzz_response.c, fuzz_codec.c): a Lua 5.4 state with the project's
 * modules and kinesis.core compiled in, a line hook that feeds Lua coverage
 * to libFuzzer through its extra-counters section (each (previous line,
 * line) pair bumps one counter), and each input handed to the function the
 * driver returns; an error raised there aborts with its traceback.
 * Included once per harness, after it defines:
 *   KN_FUZZ_NAME    "fuzz_response"        (messages; the binary's name)
 *   KN_FUZZ_DRIVER  "response_driver.lua"  (under fuzz/)
 *   KN_FUZZ_BROKE   what a raised error means, e.g. "the codec broke a promise" */
#ifndef KN_FUZZ_LUA_HARNESS_H
#define KN_FUZZ_LUA_HARNESS_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_kinesis_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EDGES (1u << 16)

__attribute__((section("__libfuzzer_extra_counters"), used))
static uint8_t lua_edges[EDGES];

static lua_State *L;
static int driver_ref = LUA_NOREF;
static uintptr_t prev_loc;

static void line_hook(lua_State *S, lua_Debug *ar)
{
  uintptr_t loc;
  if (lua_getinfo(S, "S", ar) == 0) return;
  loc = (uintptr_t)ar->source * 2654435761u + (uintptr_t)ar->currentline * 40503u;
  lua_edges[(loc ^ (prev_loc >> 1)) & (EDGES - 1)]++;
  prev_loc = loc;
}

static int traceback(lua_State *S)
{
  const char *msg = lua_tostring(S, 1);
  luaL_traceback(S, S, msg != NULL ? msg : "(non-string error)", 1);
  return 1;
}

/* The project root: $KINESIS_ROOT, else three levels above this binary
 * (build/fuzz/<name>). */
static void project_root(char *out, size_t cap)
{
  const char *env = getenv("KINESIS_ROOT");
  char path[PATH_MAX];
  ssize_t n;
  int i;
  if (env != NULL && env[0] != '\0') {
    snprintf(out, cap, "%s", env);
    return;
  }
  n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) {
    snprintf(out, cap, ".");
    return;
  }
  path[n] = '\0';
  for (i = 0; i < 3; i++) {
    char *slash = strrchr(path, '/');
    if (slash == NULL) break;
    *slash = '\0';
  }
  snprintf(out, cap, "%s", path[0] != '\0' ? path : "/");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  char root[PATH_MAX], chunk[PATH_MAX * 3 + 256];
  (void)argc;
  (void)argv;
  project_root(root, sizeof root);
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);

  /* the project's Lua modules; the system's lua-cjson; kinesis.core built in */
  snprintf(chunk, sizeof chunk,
           "package.path = '%s/lua/?.lua;%s/lua/?/init.lua;' .. package.path\n"
           "return dofile('%s/fuzz/" KN_FUZZ_DRIVER "')",
           root, root, root);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_kinesis_core);
  lua_setfield(L, -2, "kinesis.core");
  lua_pop(L, 1);

  lua_pushcfunction(L, traceback);
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, -2) != LUA_OK) {
    fprintf(stderr, KN_FUZZ_NAME ": cannot load the driver (root %s): %s\n", root,
            lua_tostring(L, -1));
    abort();
  }
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    fprintf(stderr, KN_FUZZ_NAME ": the driver did not return a function\n");
    abort();
  }
  driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int top = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, driver_ref);
  lua_pushlstring(L, (const char *)data, size);
  prev_loc = 0;
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  if (lua_pcall(L, 1, 0, top + 1) != LUA_OK) {
    lua_sethook(L, NULL, 0, 0);
    fprintf(stderr, KN_FUZZ_NAME ": " KN_FUZZ_BROKE ":\n%s\n",
            lua_tostring(L, -1));
    abort();
  }
  lua_sethook(L, NULL, 0, 0);
  lua_settop(L, top);
  return 0;
}

#endif
