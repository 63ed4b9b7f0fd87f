/* l_signal.c - SIGINT/SIGTERM as a flag a plain-Lua loop can poll: the
 * consumer turns a pending signal into stop(), so a script's final
 * checkpoints get written. Plain Lua cannot catch signals itself. The
 * handler only stores the signal number; the previous handlers come back
 * on signals_restore(). One catcher at a time per process. */
#include <signal.h>
#include <string.h>

#include "lbind.h"

static volatile sig_atomic_t kn_pending_signal = 0;
static int kn_catching = 0;
static struct sigaction kn_old_int, kn_old_term;

static void kn_on_signal(int sig)
{
  kn_pending_signal = sig;
}

/* signals_catch() -> true (now catching) | false (already caught elsewhere) */
static int l_signals_catch(lua_State *L)
{
  struct sigaction sa;
  if (kn_catching) {
    lua_pushboolean(L, 0);
    return 1;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = kn_on_signal;
  sigemptyset(&sa.sa_mask);
#ifdef SA_RESTART
  /* reads and writes in progress go on; only the flag records the signal */
  sa.sa_flags = SA_RESTART;
#endif
  kn_pending_signal = 0;
  sigaction(SIGINT, &sa, &kn_old_int);
  sigaction(SIGTERM, &sa, &kn_old_term);
  kn_catching = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* signals_pending() -> "SIGINT" | "SIGTERM" | nil; clears the flag */
static int l_signals_pending(lua_State *L)
{
  int sig = kn_pending_signal;
  kn_pending_signal = 0;
  if (sig == SIGINT) lua_pushliteral(L, "SIGINT");
  else if (sig == SIGTERM) lua_pushliteral(L, "SIGTERM");
  else lua_pushnil(L);
  return 1;
}

/* signals_restore(token): token is what signals_catch returned; only the
 * catcher (token true) puts the previous handlers back. */
static int l_signals_restore(lua_State *L)
{
  if (lua_toboolean(L, 1) && kn_catching) {
    sigaction(SIGINT, &kn_old_int, NULL);
    sigaction(SIGTERM, &kn_old_term, NULL);
    kn_catching = 0;
  }
  return 0;
}

int kn_open_signal(lua_State *L)
{
  lua_pushcfunction(L, l_signals_catch);
  lua_setfield(L, -2, "signals_catch");
  lua_pushcfunction(L, l_signals_pending);
  lua_setfield(L, -2, "signals_pending");
  lua_pushcfunction(L, l_signals_restore);
  lua_setfield(L, -2, "signals_restore");
  return 0;
}
