/* l_curl.c - the kinesis.curl binding: converts Lua tables to kn_request,
 * runs them through transport.c and pushes the response back as a table.
 * Misuse (wrong types, closed or busy handles) raises; runtime failures
 * return nil, err (l_util.h's error table, plus curl_code and os_errno).
 * No Lua runs while curl works: C fills its buffers and this file copies
 * them out afterwards. Timeouts are seconds; 0 = none. */
#include "compat.h"
#include "transport.h"
#include "l_util.h"

#include <curl/curl.h>
#include <string.h>

#define EASY_MT  "kinesis.curl_easy"
#define MULTI_MT "kinesis.curl_multi"
#define KN_STACK_HEADERS 32  /* headers read without a userdata */

typedef struct l_easy {
  kn_transport *t;        /* NULL once closed */
} l_easy;

typedef struct l_multi {
  kn_multi *m;            /* NULL once closed */
  int anchors;            /* registry ref: id -> { easy userdata, body string } */
  long long next_id;
} l_multi;

/* ---- argument helpers -------------------------------------------------- */

static const char *type_of(lua_State *L, int idx)
{
  return lua_typename(L, lua_type(L, idx));
}

/* Seconds (number) at idx -> milliseconds; nil -> dflt. Raises on misuse. */
static long opt_ms(lua_State *L, int idx, const char *what, long dflt)
{
  double s;
  long ms;
  if (lua_isnoneornil(L, idx)) return dflt;
  if (lua_type(L, idx) != LUA_TNUMBER)
    return (long)luaL_error(L, "bad '%s' (number of seconds expected, got %s)",
                            what, type_of(L, idx));
  s = lua_tonumber(L, idx);
  if (!(s >= 0 && s <= 1e6))
    return (long)luaL_error(L, "bad '%s' (expected 0 to 1e6 seconds)", what);
  ms = (long)(s * 1000.0 + 0.5);
  if (ms == 0 && s > 0) ms = 1;   /* a tiny timeout is not "no timeout" */
  return ms;
}

/* A string without embedded NUL (it is handed to C as a C string). */
static const char *check_cstring(lua_State *L, int idx, const char *what)
{
  size_t len;
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "bad '%s' (string expected, got %s)", what, type_of(L, idx));
  s = lua_tolstring(L, idx, &len);
  if (strlen(s) != len) luaL_error(L, "bad '%s' (contains NUL)", what);
  return s;
}

static l_easy *check_easy(lua_State *L, int idx)
{
  l_easy *e = luaL_checkudata(L, idx, EASY_MT);
  if (e->t == NULL) luaL_error(L, "attempt to use a closed curl handle");
  return e;
}

static l_multi *check_multi(lua_State *L, int idx)
{
  l_multi *m = luaL_checkudata(L, idx, MULTI_MT);
  if (m->m == NULL) luaL_error(L, "attempt to use a closed curl multi");
  return m;
}

/* ---- request conversion ---------------------------------------------- */

/* Reads the request table at idx into *req and returns the stack index of
 * the body value. Every string it borrows (fields, header names and values)
 * stays on the stack or in tables on it, and the header array is the
 * caller's stackbuf (KN_STACK_HEADERS entries) or a userdata on the stack,
 * so all live as long as the caller's frame. Raises on misuse. */
static int read_request(lua_State *L, int idx, kn_request *req, kn_header *stackbuf)
{
  int hidx, body_idx;
  size_t n = 0;
  kn_header *hs;

  luaL_checktype(L, idx, LUA_TTABLE);
  memset(req, 0, sizeof *req);

  lua_getfield(L, idx, "url");
  req->url = check_cstring(L, -1, "url");
  lua_getfield(L, idx, "body");
  body_idx = lua_gettop(L);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad 'body' (string expected, got %s)", type_of(L, -1));
    req->body = lua_tolstring(L, -1, &req->body_len);
  }
  lua_getfield(L, idx, "method");
  if (lua_isnil(L, -1)) req->method = req->body_len > 0 ? "POST" : "GET";
  else req->method = check_cstring(L, -1, "method");
  lua_getfield(L, idx, "timeout");
  req->timeout_ms = opt_ms(L, -1, "timeout", -1);
  lua_getfield(L, idx, "connect_timeout");
  req->connect_timeout_ms = opt_ms(L, -1, "connect_timeout", -1);
  lua_getfield(L, idx, "headers");
  hidx = lua_gettop(L);

  /* the caller's array when it is big enough, else a userdata left on the
   * stack like the strings it lends */
  hs = kn_read_headers(L, hidx, "request", stackbuf, KN_STACK_HEADERS, &n);
  req->headers = hs;
  req->nheaders = n;
  return body_idx;
}

/* ---- response conversion --------------------------------------------- */

static const char *error_code(kn_transport_error e)
{
  switch (e) {
  case KN_TE_TIMEOUT: return "Timeout";
  case KN_TE_REFUSED: return "ConnectionRefused";
  case KN_TE_RESET:   return "ConnectionReset";
  case KN_TE_TLS:     return "TLS";
  case KN_TE_DNS:     return "DNS";
  case KN_TE_INVALID: return "InvalidRequest";
  default:            return "Transport";
  }
}

/* Pushes the error table of t's last request. */
static void push_error(lua_State *L, const kn_transport *t, kn_transport_error e)
{
  long os = kn_transport_os_errno(t);
  kn_push_error(L, error_code(e), kn_transport_error_message(t));
  lua_pushinteger(L, (lua_Integer)kn_transport_curl_code(t));
  lua_setfield(L, -2, "curl_code");
  if (os != 0) {
    lua_pushinteger(L, (lua_Integer)os);
    lua_setfield(L, -2, "os_errno");
  }
}

static void push_lower(lua_State *L, const char *s, size_t n)
{
  char small[64];
  luaL_Buffer b;
  size_t i;
  if (n <= sizeof small) {
    /* header names are short: lowered on the C stack, one string made */
    for (i = 0; i < n; i++) {
      char c = s[i];
      small[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    lua_pushlstring(L, small, n);
    return;
  }
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    char c = s[i];
    luaL_addchar(&b, (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c);
  }
  luaL_pushresult(&b);
}

/* 1 when a header before the i-th (h) has the same name, ignoring case. */
static int seen_before(const kn_transport *t, size_t i, const kn_header *h)
{
  size_t j, k;
  for (j = 0; j < i; j++) {
    kn_header o;
    kn_transport_header_at(t, j, &o);
    if (o.name_len != h->name_len) continue;
    for (k = 0; k < o.name_len; k++) {
      char a = o.name[k], b = h->name[k];
      if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
      if (b >= 'A' && b <= 'Z') b = (char)(b - 'A' + 'a');
      if (a != b) break;
    }
    if (k == o.name_len) return 1;
  }
  return 0;
}

/* Pushes { status, http_version, headers, body, request_id } of t. */
static void push_response(lua_State *L, const kn_transport *t)
{
  size_t i, nh = kn_transport_header_count(t), blen;
  const char *body = kn_transport_body(t, &blen);
  int resp, hdrs;

  lua_createtable(L, 0, 5);
  resp = lua_gettop(L);
  lua_pushinteger(L, (lua_Integer)kn_transport_status(t));
  lua_setfield(L, resp, "status");
  lua_pushstring(L, kn_transport_http_version(t));
  lua_setfield(L, resp, "http_version");
  lua_pushlstring(L, body, blen);
  lua_setfield(L, resp, "body");

  lua_createtable(L, 0, (int)(nh < 64 ? nh : 64));
  hdrs = lua_gettop(L);
  for (i = 0; i < nh; i++) {
    kn_header h;
    kn_transport_header_at(t, i, &h);
    push_lower(L, h.name, h.name_len);          /* key */
    if (!seen_before(t, i, &h)) {
      /* the usual case, a name not met yet: no lookup of an old value */
      lua_pushlstring(L, h.value, h.value_len);
      lua_rawset(L, hdrs);
      continue;
    }
    lua_pushvalue(L, -1);
    lua_rawget(L, hdrs);                         /* key, old */
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, h.value, h.value_len);
    } else {
      /* repeated header: one value, comma-joined (RFC 9110 5.3) */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h.value, h.value_len);
      lua_concat(L, 3);
    }
    lua_rawset(L, hdrs);
  }
  lua_getfield(L, hdrs, "x-amzn-requestid");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, hdrs, "x-amz-request-id");
  }
  lua_setfield(L, resp, "request_id");
  lua_setfield(L, resp, "headers");
}

/* ---- easy ------------------------------------------------------------ */

static const char *const easy_options[] = {
  "connect_timeout", "timeout", "verify", "cafile", "http2", NULL
};

static int l_easy_new(lua_State *L)
{
  kn_transport_opts o;
  l_easy *e;
  const char *cafile = NULL;

  memset(&o, 0, sizeof o);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
      int k, known = 0;
      if (lua_type(L, -2) == LUA_TSTRING)
        for (k = 0; easy_options[k] != NULL; k++)
          if (strcmp(lua_tostring(L, -2), easy_options[k]) == 0) known = 1;
      if (!known)
        return luaL_error(L, "unknown curl.easy option '%s'",
                          lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 1);
#define FIELD(name) (lua_isnoneornil(L, 1) ? (lua_pushnil(L), lua_gettop(L)) \
                                          : (lua_getfield(L, 1, name), lua_gettop(L)))
  o.connect_timeout_ms = opt_ms(L, FIELD("connect_timeout"), "connect_timeout", 3000);
  o.timeout_ms = opt_ms(L, FIELD("timeout"), "timeout", 30000);
  o.verify = kn_opt_boolean(L, 1, "verify", 1);
  o.http2 = kn_opt_boolean(L, 1, "http2", 1);
  if (!lua_isnil(L, FIELD("cafile"))) cafile = check_cstring(L, -1, "cafile");
#undef FIELD
  o.cafile = cafile;

  /* userdata (with __gc) first, then the resource, so nothing can leak */
  e = lua_newuserdata(L, sizeof *e);
  e->t = NULL;
  luaL_setmetatable(L, EASY_MT);
  e->t = kn_transport_new(&o);
  if (e->t == NULL) return luaL_error(L, "cannot create a curl handle (out of memory)");
  return 1;
}

static int l_easy_send(lua_State *L)
{
  l_easy *e = check_easy(L, 1);
  kn_request req;
  kn_header stackbuf[KN_STACK_HEADERS];
  kn_transport_error rc;

  if (kn_transport_busy(e->t))
    return luaL_error(L, "curl handle is busy in a multi");
  read_request(L, 2, &req, stackbuf);
  rc = kn_transport_perform(e->t, &req);
  if (rc != KN_TE_OK) {
    lua_pushnil(L);
    push_error(L, e->t, rc);
    kn_transport_clear(e->t);
    return 2;
  }
  push_response(L, e->t);
  kn_transport_clear(e->t);
  return 1;
}

static int l_easy_stats(lua_State *L)
{
  l_easy *e = check_easy(L, 1);
  unsigned long requests, connects;
  kn_transport_stats(e->t, &requests, &connects);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)requests);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, (lua_Integer)connects);
  lua_setfield(L, -2, "connects");
  return 1;
}

static int l_easy_busy(lua_State *L)
{
  l_easy *e = check_easy(L, 1);
  lua_pushboolean(L, kn_transport_busy(e->t));
  return 1;
}

/* h:drop_connection(): the answer that came last could not be decoded, so
 * its connection is not reused (see kn_transport_drop_connection). */
static int l_easy_drop_connection(lua_State *L)
{
  l_easy *e = check_easy(L, 1);
  kn_transport_drop_connection(e->t);
  return 0;
}

/* __gc, __close and :close() */
static int l_easy_close(lua_State *L)
{
  l_easy *e = luaL_checkudata(L, 1, EASY_MT);
  kn_transport *t = e->t;
  e->t = NULL;
  kn_transport_free(t);
  return 0;
}

static const luaL_Reg easy_methods[] = {
  { "send", l_easy_send },
  { "stats", l_easy_stats },
  { "busy", l_easy_busy },
  { "drop_connection", l_easy_drop_connection },
  { "close", l_easy_close },
  { NULL, NULL }
};

/* ---- multi ----------------------------------------------------------- */

static int l_multi_new(lua_State *L)
{
  l_multi *m = lua_newuserdata(L, sizeof *m);
  m->m = NULL;
  m->anchors = LUA_NOREF;
  m->next_id = 0;
  luaL_setmetatable(L, MULTI_MT);
  lua_newtable(L);
  m->anchors = luaL_ref(L, LUA_REGISTRYINDEX);
  m->m = kn_multi_new();
  if (m->m == NULL) return luaL_error(L, "cannot create a curl multi (out of memory)");
  return 1;
}

/* Reads m:add's options table at idx: { stream = bool, buffer = bytes }. */
static void read_add_options(lua_State *L, int idx, kn_request *req)
{
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "stream") != 0 && strcmp(k, "buffer") != 0)
      luaL_error(L, "unknown curl multi add option '%s'", k);
    lua_pop(L, 1);
  }
  req->stream = kn_opt_boolean(L, idx, "stream", 0);
  lua_getfield(L, idx, "buffer");
  if (!lua_isnil(L, -1)) {
    lua_Number n;
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "bad 'buffer' (number of bytes expected, got %s)", type_of(L, -1));
    n = lua_tonumber(L, -1);
    if (!(n >= 1 && n <= 1073741824.0))
      luaL_error(L, "bad 'buffer' (expected 1 to 2^30 bytes)");
    req->stream_buffer = (size_t)n;
  }
  lua_pop(L, 1);
}

/* m:add(easy, request [, {stream = true, buffer = bytes}]) -> id | nil, err
 * A stream is read with m:read(id) as it arrives; see l_multi_read. */
static int l_multi_add(lua_State *L)
{
  l_multi *m = check_multi(L, 1);
  l_easy *e = check_easy(L, 2);
  kn_request req;
  kn_header stackbuf[KN_STACK_HEADERS];
  kn_transport_error rc;
  long long id;
  int body_idx;

  if (kn_transport_busy(e->t))
    return luaL_error(L, "curl handle is busy in a multi");
  lua_settop(L, 4);                          /* slot 4: the options, or nil */
  body_idx = read_request(L, 3, &req, stackbuf);
  read_add_options(L, 4, &req);
  id = ++m->next_id;

  /* anchor first: the in-flight request keeps the handle and body alive */
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->anchors);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, body_idx);
  lua_rawseti(L, -2, 2);
  if (req.stream) {
    lua_pushboolean(L, 0);                   /* a stream; head not read yet */
    lua_rawseti(L, -2, 3);
  }
  lua_rawseti(L, -2, (lua_Integer)id);      /* anchors table stays at top */

  rc = kn_multi_add(m->m, e->t, &req, id);
  if (rc != KN_TE_OK) {
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)id);
    lua_pushnil(L);
    push_error(L, e->t, rc);
    kn_transport_clear(e->t);
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/* m:wait([seconds]) -> { {id=, resp=} | {id=, err=} | {id=, stream=true}, ... } | nil, err
 * nil seconds: until something completes, or at once if nothing runs.
 * {id=, stream=true} says a stream has news for m:read (at most one such
 * event per stream per wait; a stream never yields resp or err here). */
static int l_multi_wait(lua_State *L)
{
  l_multi *m = check_multi(L, 1);
  long ms = opt_ms(L, 2, "timeout", -1);
  int anchors, n = 0;
  kn_transport *t;
  long long id;
  kn_transport_error rc;

  if (ms < 0 && kn_multi_running(m->m) == 0) ms = 0;
  else if (ms < 0) ms = 0x7fffffffL;
  if (kn_multi_wait(m->m, ms) != 0) {
    lua_pushnil(L);
    kn_push_error(L, "Transport", "curl multi failed");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "curl_code");
    return 2;
  }
  lua_settop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->anchors);
  anchors = lua_gettop(L);
  lua_newtable(L);
  while ((t = kn_multi_next_done(m->m, &id, &rc)) != NULL) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)id);
    lua_setfield(L, -2, "id");
    if (rc == KN_TE_OK) {
      push_response(L, t);
      lua_setfield(L, -2, "resp");
    } else {
      push_error(L, t, rc);
      lua_setfield(L, -2, "err");
    }
    kn_transport_clear(t);
    lua_rawseti(L, -2, ++n);
    lua_pushnil(L);
    lua_rawseti(L, anchors, (lua_Integer)id);
  }
  while (kn_multi_next_ready(m->m, &id) != NULL) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)id);
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "stream");
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* m:read(id) -> { head = resp, data = bytes, done = true, err = err } | nil
 * Pulls what a stream has: head (status, headers, http_version,
 * request_id; no body) once the final header block is in, data = every
 * byte received since the last read, then done = true or err = {...} once
 * it ended, after which the stream is released (the handle is idle again)
 * and later reads return nil, as they do for an id that is not a stream
 * of m. Fields that have nothing are absent. Reading resumes a transfer
 * that was paused because its unread bytes reached the buffer bound. */
static int l_multi_read(lua_State *L)
{
  l_multi *m = check_multi(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  l_easy *e;
  kn_transport_error rc;
  const char *data;
  size_t len;
  int anchors, entry, out;

  lua_settop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->anchors);
  anchors = lua_gettop(L);
  lua_rawgeti(L, anchors, id);
  entry = lua_gettop(L);
  if (!lua_istable(L, entry)) {
    lua_pushnil(L);
    return 1;
  }
  /* slot 3 marks a stream: false until its head was handed out, then true */
  lua_rawgeti(L, entry, 3);
  lua_rawgeti(L, entry, 1);
  e = luaL_testudata(L, -1, EASY_MT);
  if (lua_isnil(L, -2) || e == NULL || e->t == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 3);
  out = lua_gettop(L);
  if (!lua_toboolean(L, entry + 1) && kn_transport_stream_head(e->t)) {
    push_response(L, e->t);
    lua_pushnil(L);
    lua_setfield(L, -2, "body");   /* the body comes as data */
    lua_setfield(L, out, "head");
    lua_pushboolean(L, 1);
    lua_rawseti(L, entry, 3);
  }
  data = kn_transport_stream_peek(e->t, &len);
  if (len > 0) {
    lua_pushlstring(L, data, len);
    lua_setfield(L, out, "data");
    kn_transport_stream_consume(e->t);    /* may resume a paused transfer */
  }
  if (kn_transport_stream_ended(e->t, &rc)) {
    /* an ended transfer delivers nothing more: no byte is left behind */
    if (rc == KN_TE_OK) {
      lua_pushboolean(L, 1);
      lua_setfield(L, out, "done");
    } else {
      push_error(L, e->t, rc);
      lua_setfield(L, out, "err");
    }
    kn_multi_remove(m->m, e->t);
    kn_transport_clear(e->t);
    lua_pushnil(L);
    lua_rawseti(L, anchors, id);
  }
  lua_settop(L, out);
  return 1;
}

/* m:remove(id) -> true if that request was in flight (it is abandoned). */
static int l_multi_remove(lua_State *L)
{
  l_multi *m = check_multi(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  int found;
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->anchors);
  lua_rawgeti(L, -1, id);
  found = !lua_isnil(L, -1);
  if (found) {
    l_easy *e;
    lua_rawgeti(L, -1, 1);
    e = luaL_testudata(L, -1, EASY_MT);
    if (e != NULL && e->t != NULL) {
      kn_multi_remove(m->m, e->t);
      kn_transport_clear(e->t);             /* a stream's unread bytes */
    }
    lua_pop(L, 2);
    lua_pushnil(L);
    lua_rawseti(L, -2, id);
  }
  lua_pushboolean(L, found);
  return 1;
}

static int l_multi_running(lua_State *L)
{
  l_multi *m = check_multi(L, 1);
  lua_pushinteger(L, (lua_Integer)kn_multi_running(m->m));
  return 1;
}

/* __gc, __close and :close(): abandons what is in flight; handles become idle. */
static int l_multi_close(lua_State *L)
{
  l_multi *m = luaL_checkudata(L, 1, MULTI_MT);
  kn_multi *mm = m->m;
  m->m = NULL;
  kn_multi_free(mm);
  if (m->anchors != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, m->anchors);
    m->anchors = LUA_NOREF;
  }
  return 0;
}

static const luaL_Reg multi_methods[] = {
  { "add", l_multi_add },
  { "wait", l_multi_wait },
  { "remove", l_multi_remove },
  { "read", l_multi_read },
  { "running", l_multi_running },
  { "close", l_multi_close },
  { NULL, NULL }
};

/* ---- module ---------------------------------------------------------- */

static const luaL_Reg module_functions[] = {
  { "easy", l_easy_new },
  { "multi", l_multi_new },
  { NULL, NULL }
};

int luaopen_kinesis_curl(lua_State *L)
{
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  kn_newclass(L, EASY_MT, easy_methods, l_easy_close);
  kn_newclass(L, MULTI_MT, multi_methods, l_multi_close);
  luaL_newlib(L, module_functions);
  lua_pushstring(L, v->version);
  lua_setfield(L, -2, "curl_version");
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
  lua_pushboolean(L, (v->features & CURL_VERSION_SSL) != 0);
  lua_setfield(L, -2, "tls");
  return 1;
}
