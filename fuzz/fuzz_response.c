/* fuzz_response.c - libFuzzer harness for the response decoding path: HTTP
 * status, headers and body -> the error model, or shape-aware JSON -> Lua
 * tables (kinesis.client, kinesis.codec, kinesis.errors, lua-cjson, the
 * base64 and hash-key C code), plus shard maps and KPL de-aggregation of
 * what was decoded. The checks live in fuzz/response_driver.lua; see there
 * for the input grammar.
 *
 * Why Lua in the fuzzer rather than the C parts alone: the promises that
 * matter (never raise on server data, integers stay integers, blobs become
 * bytes, every failure is a kinesis.error) are made by the Lua layer, and
 * its bugs are reachable only through it. kinesis.core is compiled into
 * this binary, so its C is instrumented as usual; the Lua interpreter is the
 * system's (not instrumented), so a line hook feeds Lua coverage to
 * libFuzzer through its extra-counters section: each (previous line, line)
 * pair of Lua code bumps one counter, which is what lets the fuzzer tell a
 * new path through the decoder from an old one.
 * Run it with -detect_leaks=0: the Lua state outlives each input and its
 * collector frees later, which libFuzzer's per-input leak tracking would
 * take for a leak on every run (and check for, at a 100x slowdown). Leaks of
 * the C core are the business of valgrind and the pure C harnesses. */
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
 * (build/fuzz/fuzz_response). */
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
           "return dofile('%s/fuzz/response_driver.lua')",
           root, root, root);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_kinesis_core);
  lua_setfield(L, -2, "kinesis.core");
  lua_pop(L, 1);

  lua_pushcfunction(L, traceback);
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, -2) != LUA_OK) {
    fprintf(stderr, "fuzz_response: cannot load the driver (root %s): %s\n", root,
            lua_tostring(L, -1));
    abort();
  }
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    fprintf(stderr, "fuzz_response: the driver did not return a function\n");
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
    fprintf(stderr, "fuzz_response: the response path broke a promise:\n%s\n",
            lua_tostring(L, -1));
    abort();
  }
  lua_sethook(L, NULL, 0, 0);
  lua_settop(L, top);
  return 0;
}
