/* l_curl.c - placeholder for the kinesis.curl binding; replaced by the real one. */
#include "compat.h"

int luaopen_kinesis_curl(lua_State *L)
{
  lua_newtable(L);
  return 1;
}
