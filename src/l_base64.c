/* l_base64.c - placeholder registration; replaced by the real binding. */
#include "lbind.h"

int kn_open_base64(lua_State *L)
{
  (void)L;
  return 0;
}
