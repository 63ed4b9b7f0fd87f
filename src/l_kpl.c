/* l_kpl.c - placeholder registration; replaced by the KPL aggregation binding. */
#include "lbind.h"

int kn_open_kpl(lua_State *L)
{
  (void)L;
  return 0;
}
