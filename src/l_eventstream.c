/* l_eventstream.c - placeholder registration; replaced by the real binding. */
#include "lbind.h"

int kn_open_eventstream(lua_State *L)
{
  (void)L;
  return 0;
}
