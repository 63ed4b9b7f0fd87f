/* l_time.c - a monotonic clock, the wall clock with sub-second precision
 * and a blocking sleep for plain Lua, which has none of them. kinesis.runtime
 * uses them outside kinesis.run; inside it it yields instead, and inside
 * nginx it uses ngx.sleep. */
#include <errno.h>
#include <time.h>

#include "lbind.h"

/* Seconds of the monotonic clock: core.monotime, which kinesis.runtime's
 * now() is everywhere, and what the producer queue stamps records with. */
double kn_monotime(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int l_monotime(lua_State *L)
{
  lua_pushnumber(L, (lua_Number)kn_monotime());
  return 1;
}

/* seconds since the epoch with fraction (os.time() has whole seconds) */
static int l_walltime(lua_State *L)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

static int l_sleep(lua_State *L)
{
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec req, rem;
  if (!(s > 0)) return 0;
  if (s > 1e9) s = 1e9;
  req.tv_sec = (time_t)s;
  req.tv_nsec = (long)((s - (lua_Number)req.tv_sec) * 1e9);
  while (nanosleep(&req, &rem) != 0 && errno == EINTR) req = rem;
  return 0;
}

int kn_open_time(lua_State *L)
{
  lua_pushcfunction(L, l_monotime);
  lua_setfield(L, -2, "monotime");
  lua_pushcfunction(L, l_walltime);
  lua_setfield(L, -2, "walltime");
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
  return 0;
}
