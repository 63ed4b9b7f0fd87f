/* lbind.h - registration entry points of the kinesis.core binding files.
 * Each kn_open_<area> adds its functions to the table on top of the stack
 * (the module table being built by luaopen_kinesis_core) and returns 0. */
#ifndef KN_LBIND_H
#define KN_LBIND_H

#include "compat.h"

int kn_open_base64(lua_State *L);
int kn_open_sigv4(lua_State *L);
int kn_open_hash(lua_State *L);
int kn_open_eventstream(lua_State *L);
int kn_open_time(lua_State *L);
int kn_open_kpl(lua_State *L);
int kn_open_fs(lua_State *L);
int kn_open_signal(lua_State *L);
int kn_open_digest(lua_State *L);
int kn_open_codec(lua_State *L);
int kn_open_pqueue(lua_State *L);
int kn_open_answer(lua_State *L);

/* Shared between binding files. */
struct kn_shardmap;
/* l_hash.c: the map inside a "kinesis.shard_map" userdata (raises if not). */
struct kn_shardmap *kn_check_shardmap(lua_State *L, int idx);
/* l_time.c: seconds of the monotonic clock (core.monotime). */
double kn_monotime(void);

#endif
