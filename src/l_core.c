/* l_core.c - luaopen_kinesis_core: the pure C core (no I/O, no libcurl)
 * as one Lua module. This is the module OpenResty loads; the curl transport
 * is the separate kinesis.curl module. */
#include "lbind.h"

#ifndef KN_VERSION
#define KN_VERSION "0.1.0"
#endif

int luaopen_kinesis_core(lua_State *L)
{
  lua_newtable(L);
  kn_open_base64(L);
  kn_open_sigv4(L);
  kn_open_hash(L);
  kn_open_eventstream(L);
  kn_open_time(L);
  kn_open_kpl(L);
  kn_open_fs(L);
  kn_open_signal(L);
  kn_open_digest(L);
  kn_open_codec(L);
  kn_open_pqueue(L);
  kn_open_answer(L);
  lua_pushliteral(L, KN_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
