/* l_sigv4.c - placeholder registration; replaced by the real binding. */
#include "lbind.h"

int kn_open_sigv4(lua_State *L)
{
  (void)L;
  return 0;
}
