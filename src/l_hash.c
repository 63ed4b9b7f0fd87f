/* l_hash.c - placeholder registration; replaced by the real binding. */
#include "lbind.h"

int kn_open_hash(lua_State *L)
{
  (void)L;
  return 0;
}
