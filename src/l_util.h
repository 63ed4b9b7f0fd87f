/* l_util.h - what every binding file (kinesis.core and kinesis.curl)
 * shares: the one shape of a runtime failure, and the readers of boolean
 * options and of header tables. Misuse (a wrong type from the caller)
 * raises; runtime failures return nil plus an error table
 * { code = "short_name", message = "..." } whose __tostring gives the
 * message, so callers branch on err.code and print err. */
#ifndef KN_L_UTIL_H
#define KN_L_UTIL_H

#include <stddef.h>

#include "compat.h"
#include "header.h"

/* Pushes the error table { code =, message = } (with its metatable). */
void kn_push_error(lua_State *L, const char *code, const char *message);
/* Pushes nil and the error table; returns 2 (so: return kn_fail(...)). */
int kn_fail(lua_State *L, const char *code, const char *message);
/* kn_fail with a lua_pushfstring format for the message. */
int kn_failf(lua_State *L, const char *code, const char *fmt, ...);
/* kn_fail taking the message from the string on top of the stack, which
 * it replaces. */
int kn_fail_top(lua_State *L, const char *code);

/* The boolean option t[name]: dflt when t is none or nil or the field is
 * nil; raises "bad option 'name' (boolean expected, got ...)" for any
 * other type. Leaves the stack as it was. */
int kn_opt_boolean(lua_State *L, int t, const char *name, int dflt);

/* Reads the headers value at idx: nil, or a table of { name, value }
 * pairs (in order) and/or name = value entries, all strings. Fills
 * stackbuf when n <= stackn, else an array in a userdata pushed on the
 * stack; the strings are borrowed from the table. Both stay valid while
 * the caller keeps idx (and what this pushed) on the stack. *count gets
 * the number of headers. Raises on a wrong type, naming `what`. */
kn_header *kn_read_headers(lua_State *L, int idx, const char *what,
                           kn_header *stackbuf, size_t stackn, size_t *count);

#endif
