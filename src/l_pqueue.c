/* l_pqueue.c - the producer's record queue ("kinesis.producer_queue"):
 * records put to a producer wait here, in C, one FIFO per shard of the
 * shard map, until a request takes them; requests are written and their
 * answers read here too, so the common path (put, send, acknowledge)
 * builds no Lua table per record but the result handed to on_result.
 * Whatever is not the common path (a failed entry, a retry, a closed
 * shard, a record past its TTL) leaves C as a "record table" (the form
 * kinesis.producer keeps in Lua) and may come back into a FIFO with push.
 *
 * A record table: { record =, PartitionKey =, Data =, ExplicitHashKey =,
 * size =, mem =, id =, t =, attempts =, last_err = }. An entry table (an
 * aggregate that left C): { recs = { record tables }, Data =,
 * PartitionKey =, ExplicitHashKey =, size =, attempts = }.
 *
 * Ownership: the queue owns every prec (malloc'd, key and data copied in,
 * so the caller may change its table after put; freed ones are kept for
 * reuse up to REC_CACHE bytes) and every request slot; a request's answer
 * entries borrow from the answer string the caller keeps until settle().
 * Its user value R holds, for the record of ref k, the caller's record
 * table at R[2k-1] and its last error at R[2k], the shard map at R[0] and
 * the thread set_plain() named at R[-1]. The userdata is created first;
 * __gc and __close share one destroy. Sources: the PutRecords API
 * reference (limits, the request and answer shapes), the KPL's
 * aggregation format (kpl.h). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lbind.h"
#include "l_util.h"
#include "answer.h"
#include "buf.h"
#include "codec.h"
#include "kpl.h"
#include "shardmap.h"
#include "u128.h"

#define PQ_MT "kinesis.producer_queue"

/* The service's limits on one record (PutRecords API reference). */
#define MAX_KEY_CHARS 256
#define MAX_RECORD_BYTES 1048576

typedef struct prec {
  struct prec *next;
  uint64_t id;
  double t;
  uint32_t attempts;
  uint32_t ref;
  uint32_t cls;                       /* size class (rec_alloc), 0: none */
  uint32_t has_err;                   /* R[2 * ref] holds a last error */
  uint32_t pk_len, data_len, ehk_len; /* ehk_len 0: no ExplicitHashKey */
  kn_u128 hk;                         /* ExplicitHashKey, else MD5(pk) */
  char bytes[];                       /* pk, data, ehk */
} prec;

#define PK(r) ((r)->bytes)
#define DATA(r) ((r)->bytes + (r)->pk_len)
#define EHK(r) ((r)->bytes + (r)->pk_len + (r)->data_len)
#define SIZE(r) ((size_t)(r)->pk_len + (r)->data_len)

/* Freed records are kept for reuse by size class (REC_CLASS bytes each,
 * up to REC_CLASSES classes, REC_CACHE bytes in all): a producer frees
 * and allocates hundreds of records of similar size at a time, which
 * glibc serves from its slower bins once its per-thread cache is full. */
#define REC_CLASS 64
#define REC_CLASSES 32
#define REC_CACHE (1024 * 1024)

typedef struct pfifo {
  prec *head, *tail;
  size_t n, bytes;
  int mixed;   /* put times not in order (a record pushed behind younger ones) */
} pfifo;

/* One PutRecords entry taken from a FIFO: a record alone, or an
 * aggregate of nrec records (its bytes at agg[agg_off..+agg_len)). */
typedef struct pentry {
  prec *first;      /* the entry's records, linked through next */
  uint32_t nrec;
  uint32_t take;    /* 1-based take() call of the request: its shard */
  size_t agg_off, agg_len;
  size_t size;      /* Data + PartitionKey, as the service counts */
} pentry;

typedef struct preq {
  int used;
  pentry *e;
  size_t ne, ecap;
  kn_buf agg;       /* the aggregates' bytes */
  kn_buf sids;      /* the shard id of each take(), NUL-separated */
  size_t *sid_off;  /* offsets into sids, one per take() */
  size_t ntakes, tcap;
  kn_pr_entry *ans; /* the parsed answer (spans into `body`) */
  size_t nans, acap;
  const char *body; /* the answer string parse() read (kept by the caller) */
} preq;

/* A small open-addressing set of byte strings (partition keys), cleared
 * by bumping `gen`; val is what the caller stores per key. */
typedef struct kslot {
  const char *p;
  uint32_t len, gen;
  uint32_t hash, val;
} kslot;

typedef struct kset {
  kslot *s;
  size_t cap;   /* a power of 2 */
  size_t used;
  uint32_t gen;
} kset;

#define PQ_MAGIC 0x6b6e7071u /* "knpq" */

typedef struct pq {
  uint32_t magic;     /* PQ_MAGIC, for check_pq */
  int closed;
  pfifo *f;
  size_t nf;
  kn_shardmap *map;   /* R[0] keeps its userdata alive */
  uint64_t next_id;
  size_t fresh_n, fresh_bytes;
  double first;       /* put time of the oldest fresh record; valid when fresh_n > 0 */
  uint32_t *free_refs;
  size_t nfree, free_cap;
  uint32_t next_ref;
  preq *reqs;
  size_t nreqs;
  kn_buf body;
  kn_b64_tables b64;
  kset seen, keys, ehks;     /* take(): keys of the request, of one aggregate */
  kn_kpl_bytes *pks, *ehk_tab;
  kn_kpl_record *krecs;
  size_t kcap;
  char *scratch;             /* unescaping answer strings */
  size_t scratch_cap;
  /* the producer's buffer accounting, kept here so that put() is one call */
  int accepting;             /* put() takes records (not closing) */
  double n_put, bytes_put;   /* records and bytes accepted */
  double pending;            /* records without an outcome yet */
  double buffered, peak;     /* bytes held (Data + key + ExplicitHashKey) */
  double max_buffered, max_n, max_b, linger; /* configure() */
  double next_retry;         /* set_next_retry() */
  int driver;                /* a background sender runs (set_driver()) */
  lua_State *plain;          /* a thread known to be a plain script's (set_plain(); R[-1] anchors it) */
  prec *cache[REC_CLASSES];  /* freed records by size class */
  size_t cached;             /* their bytes */
} pq;

/* ---- small helpers ------------------------------------------------------- */

/* Raises; returns (never) an int so that a method can `return nomem(L)`. */
static int nomem(lua_State *L)
{
  return luaL_error(L, "producer queue: not enough memory");
}

static void *grow(lua_State *L, void *p, size_t *cap, size_t need, size_t elem)
{
  size_t c = *cap ? *cap : 16;
  void *q;
  if (need <= *cap) return p;
  while (c < need) c *= 2;
  q = realloc(p, c * elem);
  if (q == NULL) nomem(L);
  *cap = c;
  return q;
}

static uint32_t hash_bytes(const char *p, size_t n)
{
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
  return h;
}

static void kset_clear(lua_State *L, kset *k, size_t want)
{
  size_t cap = 64;
  while (cap < want * 2) cap *= 2;
  if (cap > k->cap) {
    kslot *s = (kslot *)calloc(cap, sizeof *s);
    if (s == NULL) nomem(L);
    free(k->s);
    k->s = s;
    k->cap = cap;
    k->gen = 0;
  }
  k->gen++;
  if (k->gen == 0) { /* wrapped: every stamp is stale again */
    memset(k->s, 0, k->cap * sizeof *k->s);
    k->gen = 1;
  }
  k->used = 0;
}

/* The slot of key p[0..n): found (gen current) or the empty one to fill. */
static kslot *kset_slot(kset *k, const char *p, size_t n, uint32_t h)
{
  size_t mask = k->cap - 1, i = h & mask;
  for (;;) {
    kslot *s = &k->s[i];
    if (s->gen != k->gen) return s;
    if (s->hash == h && s->len == n && memcmp(s->p, p, n) == 0) return s;
    i = (i + 1) & mask;
  }
}

/* Adds the key if absent (growing past half full); returns its slot. */
static kslot *kset_add(lua_State *L, kset *k, const char *p, size_t n, uint32_t h, uint32_t val, int *added)
{
  kslot *s;
  if ((k->used + 1) * 2 > k->cap) {
    /* rehash into a table twice the size */
    kset bigger = { NULL, 0, 0, 0 };
    size_t i;
    kset_clear(L, &bigger, k->cap);
    for (i = 0; i < k->cap; i++) {
      kslot *o = &k->s[i];
      if (o->gen == k->gen) {
        kslot *d = kset_slot(&bigger, o->p, o->len, o->hash);
        *d = *o;
        d->gen = bigger.gen;
        bigger.used++;
      }
    }
    free(k->s);
    *k = bigger;
  }
  s = kset_slot(k, p, n, h);
  *added = s->gen != k->gen;
  if (*added) {
    s->p = p;
    s->len = (uint32_t)n;
    s->hash = h;
    s->val = val;
    s->gen = k->gen;
    k->used++;
  }
  return s;
}

static int kset_has(const kset *k, const char *p, size_t n, uint32_t h)
{
  if (k->cap == 0) return 0;
  return kset_slot((kset *)k, p, n, h)->gen == k->gen;
}

/* ---- the queue ----------------------------------------------------------- */

/* The queue at index 1: a full userdata of this size holding PQ_MAGIC
 * (only this file writes one), else luaL_checkudata raises its usual
 * error. Cheaper than a registry lookup by name, which costs as much as
 * the rest of a put(). */
static pq *check_pq(lua_State *L)
{
  pq *q = (pq *)lua_touserdata(L, 1);
  if (q == NULL || lua_type(L, 1) != LUA_TUSERDATA || lua_rawlen(L, 1) != sizeof(pq) || q->magic != PQ_MAGIC)
    q = (pq *)luaL_checkudata(L, 1, PQ_MT);
  if (q->closed) luaL_error(L, "producer queue is closed");
  return q;
}

static void rec_free(pq *q, prec *r)
{
  size_t bytes = (size_t)r->cls * REC_CLASS;
  if (r->cls > 0 && q->cached + bytes <= REC_CACHE) {
    r->next = q->cache[r->cls];
    q->cache[r->cls] = r;
    q->cached += bytes;
  } else {
    free(r);
  }
}

static void free_chain(pq *q, prec *r)
{
  while (r) {
    prec *n = r->next;
    rec_free(q, r);
    r = n;
  }
}

static void req_release(pq *q, preq *rq)
{
  size_t i;
  for (i = 0; i < rq->ne; i++) free_chain(q, rq->e[i].first);
  rq->ne = 0;
  rq->ntakes = 0;
  rq->nans = 0;
  rq->body = NULL;
  kn_buf_reset(&rq->agg);
  kn_buf_reset(&rq->sids);
  rq->used = 0;
}

static int pq_destroy(lua_State *L)
{
  pq *q = (pq *)luaL_checkudata(L, 1, PQ_MT);
  size_t i;
  if (q->closed) return 0;
  q->closed = 1;
  for (i = 0; i < q->nf; i++) free_chain(q, q->f[i].head);
  free(q->f);
  for (i = 0; i < q->nreqs; i++) {
    preq *rq = &q->reqs[i];
    req_release(q, rq);
    free(rq->e);
    kn_buf_free(&rq->agg);
    kn_buf_free(&rq->sids);
    free(rq->sid_off);
    free(rq->ans);
  }
  free(q->reqs);
  free(q->free_refs);
  kn_buf_free(&q->body);
  free(q->seen.s);
  free(q->keys.s);
  free(q->ehks.s);
  free(q->pks);
  free(q->ehk_tab);
  free(q->krecs);
  free(q->scratch);
  for (i = 0; i < REC_CLASSES; i++) {
    prec *r = q->cache[i];
    while (r) {
      prec *n = r->next;
      free(r);
      r = n;
    }
  }
  memset(q, 0, sizeof *q);
  q->magic = PQ_MAGIC;
  q->closed = 1;
  return 0;
}

/* Pushes the user value R of the queue at index 1. */
static int push_refs(lua_State *L)
{
  kn_getuservalue(L, 1);
  return lua_gettop(L);
}

static uint32_t ref_new(lua_State *L, pq *q)
{
  if (q->nfree > 0) return q->free_refs[--q->nfree];
  if (q->next_ref >= 0x3fffffffu) luaL_error(L, "producer queue: too many records");
  return ++q->next_ref;
}

/* Frees ref k: R[2k-1] = nil, and R[2k] when it holds an error (R at ridx). */
static void ref_free(lua_State *L, pq *q, int ridx, uint32_t k, int has_err)
{
  lua_pushnil(L);
  lua_rawseti(L, ridx, (int)(2 * k - 1));
  if (has_err) {
    lua_pushnil(L);
    lua_rawseti(L, ridx, (int)(2 * k));
  }
  if (q->nfree == q->free_cap)
    q->free_refs = (uint32_t *)grow(L, q->free_refs, &q->free_cap, q->nfree + 1, sizeof *q->free_refs);
  q->free_refs[q->nfree++] = k;
}

/* Gives back ref k, just taken by ref_new, unused. */
static void ref_unget(pq *q, uint32_t k)
{
  if (k == q->next_ref) q->next_ref--;
  else q->free_refs[q->nfree++] = k; /* ref_new took it from there */
}

/* A record with room for its bytes, or NULL when out of memory. */
static prec *rec_alloc(pq *q, size_t pk_len, size_t data_len, size_t ehk_len)
{
  size_t need = sizeof(prec) + pk_len + data_len + ehk_len;
  size_t cls = (need + REC_CLASS - 1) / REC_CLASS;
  prec *r;
  if (cls < REC_CLASSES) {
    r = q->cache[cls];
    if (r != NULL) {
      q->cache[cls] = r->next;
      q->cached -= cls * REC_CLASS;
    } else {
      r = (prec *)malloc(cls * REC_CLASS);
    }
  } else {
    cls = 0;
    r = (prec *)malloc(need);
  }
  if (r == NULL) return NULL;
  r->cls = (uint32_t)cls;
  r->next = NULL;
  r->pk_len = (uint32_t)pk_len;
  r->data_len = (uint32_t)data_len;
  r->ehk_len = (uint32_t)ehk_len;
  return r;
}

static void fifo_push(pq *q, pfifo *f, prec *r, int front)
{
  if (front ? (f->head && r->t > f->head->t) : (f->tail && r->t < f->tail->t)) f->mixed = 1;
  if (front) {
    r->next = f->head;
    f->head = r;
    if (f->tail == NULL) f->tail = r;
  } else {
    r->next = NULL;
    if (f->tail) f->tail->next = r; else f->head = r;
    f->tail = r;
  }
  f->n++;
  f->bytes += SIZE(r);
  q->fresh_n++;
  q->fresh_bytes += SIZE(r);
}

static prec *fifo_pop(pq *q, pfifo *f)
{
  prec *r = f->head;
  f->head = r->next;
  if (f->head == NULL) {
    f->tail = NULL;
    f->mixed = 0;
  }
  r->next = NULL;
  f->n--;
  f->bytes -= SIZE(r);
  q->fresh_n--;
  q->fresh_bytes -= SIZE(r);
  return r;
}

/* The oldest fresh record's put time, after records left the FIFOs: a
 * FIFO's head, or its every record when they are not in put order. */
static void recompute_first(pq *q)
{
  size_t i;
  int any = 0;
  double first = 0;
  for (i = 0; i < q->nf; i++) {
    prec *r = q->f[i].head;
    for (; r; r = q->f[i].mixed ? r->next : NULL) {
      if (!any || r->t < first) {
        first = r->t;
        any = 1;
      }
    }
  }
  q->first = first;
}

static pfifo *check_fifo(lua_State *L, pq *q, int idx)
{
  lua_Integer i = luaL_checkinteger(L, idx);
  if (i < 1 || (size_t)i > q->nf) luaL_argerror(L, idx, "no such shard queue");
  return &q->f[i - 1];
}

/* Pushes the record table of r and frees r and its ref (R at ridx). */
static void materialize(lua_State *L, pq *q, int ridx, prec *r)
{
  size_t size = SIZE(r);
  lua_createtable(L, 0, 10);
  lua_rawgeti(L, ridx, (int)(2 * r->ref - 1));
  lua_setfield(L, -2, "record");
  if (r->has_err) {
    lua_rawgeti(L, ridx, (int)(2 * r->ref));
    lua_setfield(L, -2, "last_err");
  }
  lua_pushlstring(L, PK(r), r->pk_len);
  lua_setfield(L, -2, "PartitionKey");
  lua_pushlstring(L, DATA(r), r->data_len);
  lua_setfield(L, -2, "Data");
  if (r->ehk_len) {
    lua_pushlstring(L, EHK(r), r->ehk_len);
    lua_setfield(L, -2, "ExplicitHashKey");
    lua_pushinteger(L, (lua_Integer)(size + r->ehk_len));
    lua_setfield(L, -2, "mem");
  }
  lua_pushinteger(L, (lua_Integer)size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)r->id);
  lua_setfield(L, -2, "id");
  lua_pushnumber(L, r->t);
  lua_setfield(L, -2, "t");
  lua_pushinteger(L, (lua_Integer)r->attempts);
  lua_setfield(L, -2, "attempts");
  ref_free(L, q, ridx, r->ref, (int)r->has_err);
  rec_free(q, r);
}

/* ---- put, push ----------------------------------------------------------- */

/* pq:put(record[, now]) -> nil | 1 | 2 | 3
 * The producer's common case in one call: from the thread set_plain()
 * named or with a background sender running, a record table with string
 * PartitionKey and Data and no ExplicitHashKey, a key of 1-256 characters
 * (strict UTF-8), Data + key within 1 MiB, room under max_buffered, a
 * shard map, and the queue accepting. Such a record is queued on its
 * shard, stamped with now (default: the monotonic clock, kn_monotime) and
 * counted; 2 says a request is due (max_n records or max_b bytes fresh,
 * or the oldest past its linger), 3 that a retry's backoff is over, else
 * 1. Anything else gives nil, and the caller takes its checked path,
 * which says why. */
static int pq_put(lua_State *L)
{
  pq *q = check_pq(L);
  size_t pk_len, data_len, id = 0, size;
  const char *pk, *data;
  double now = lua_isnumber(L, 3) ? lua_tonumber(L, 3) : kn_monotime(), buffered;
  long nchars;
  prec *r;
  int ridx;
  uint32_t ref;
  if (!q->accepting || (!q->driver && q->plain != L) || q->map == NULL || lua_type(L, 2) != LUA_TTABLE)
    return 0;
  /* a table with a metatable (its fields may come from __index) takes the
   * checked path; the others are read raw, with the key strings the
   * methods hold as upvalues 1-3 */
  if (lua_getmetatable(L, 2)) return 0;
  lua_settop(L, 3); /* the fields at 4, 5, 6 */
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_rawget(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_rawget(L, 2);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_rawget(L, 2);
  if (!lua_isnil(L, 4) || lua_type(L, 5) != LUA_TSTRING || lua_type(L, 6) != LUA_TSTRING) return 0;
  pk = lua_tolstring(L, 5, &pk_len);
  data = lua_tolstring(L, 6, &data_len);
  size = pk_len + data_len;
  buffered = q->buffered + (double)size;
  if (size > MAX_RECORD_BYTES || buffered > q->max_buffered) return 0;
  nchars = kn_utf8_length(pk, pk_len);
  if (nchars < 1 || nchars > MAX_KEY_CHARS) return 0;
  ref = ref_new(L, q);
  r = rec_alloc(q, pk_len, data_len, 0);
  if (r == NULL) {
    ref_unget(q, ref);
    return nomem(L);
  }
  memcpy(r->bytes, pk, pk_len);
  memcpy(r->bytes + pk_len, data, data_len);
  r->hk = kn_u128_md5(pk, pk_len);
  r->id = ++q->next_id;
  r->t = now;
  r->attempts = 0;
  r->has_err = 0;
  r->ref = ref;
  ridx = push_refs(L);
  lua_pushvalue(L, 2);
  lua_rawseti(L, ridx, (int)(2 * r->ref - 1));
  kn_shardmap_lookup(q->map, r->hk, &id);
  if (q->fresh_n == 0) q->first = now;
  fifo_push(q, &q->f[id], r, 0);
  q->n_put += 1;
  q->bytes_put += (double)size;
  q->pending += 1;
  q->buffered = buffered;
  if (buffered > q->peak) q->peak = buffered;
  if ((double)q->fresh_n >= q->max_n || (double)q->fresh_bytes >= q->max_b || q->first + q->linger <= now)
    lua_pushinteger(L, 2);
  else
    lua_pushinteger(L, q->next_retry <= now ? 3 : 1);
  return 1;
}

/* pq:set_plain() - the calling thread runs a plain script (the caller
 * asked kinesis.runtime): put() may queue from it without a sender. */
static int pq_set_plain(lua_State *L)
{
  pq *q = check_pq(L);
  int ridx = push_refs(L);
  lua_pushthread(L);
  lua_rawseti(L, ridx, -1);
  q->plain = L;
  return 0;
}

/* pq:set_driver(running) - whether a background sender runs. */
static int pq_set_driver(lua_State *L)
{
  pq *q = check_pq(L);
  q->driver = lua_toboolean(L, 2);
  return 0;
}

/* pq:set_next_retry(t) - when the earliest retry's backoff is over, for
 * put()'s answer 3. */
static int pq_set_next_retry(lua_State *L)
{
  pq *q = check_pq(L);
  q->next_retry = luaL_checknumber(L, 2);
  return 0;
}

/* pq:configure(max_buffered, max_n, max_b, linger, accepting) - what put()
 * checks: the buffer bound, when a request is due, whether it takes
 * records at all. */
static int pq_configure(lua_State *L)
{
  pq *q = check_pq(L);
  q->max_buffered = luaL_checknumber(L, 2);
  q->max_n = luaL_checknumber(L, 3);
  q->max_b = luaL_checknumber(L, 4);
  q->linger = luaL_checknumber(L, 5);
  q->accepting = lua_toboolean(L, 6);
  return 0;
}

/* pq:account(put, bytes_put, pending, buffered) - adds to the counters
 * (records taken or finished outside put() and settle()). */
static int pq_account(lua_State *L)
{
  pq *q = check_pq(L);
  q->n_put += luaL_checknumber(L, 2);
  q->bytes_put += luaL_checknumber(L, 3);
  q->pending += luaL_checknumber(L, 4);
  q->buffered += luaL_checknumber(L, 5);
  if (q->buffered > q->peak) q->peak = q->buffered;
  return 0;
}

/* pq:outstanding() -> records without an outcome (the KPL's outstanding records), bytes held */
static int pq_outstanding(lua_State *L)
{
  pq *q = check_pq(L);
  lua_pushinteger(L, (lua_Integer)q->pending);
  lua_pushnumber(L, q->buffered);
  return 2;
}

/* pq:counts() -> put, bytes put, pending, bytes held, peak bytes held */
static int pq_counts(lua_State *L)
{
  pq *q = check_pq(L);
  lua_pushinteger(L, (lua_Integer)q->n_put);
  lua_pushinteger(L, (lua_Integer)q->bytes_put);
  lua_pushinteger(L, (lua_Integer)q->pending);
  lua_pushinteger(L, (lua_Integer)q->buffered);
  lua_pushinteger(L, (lua_Integer)q->peak);
  return 5;
}

static const char *str_field(lua_State *L, int t, const char *key, size_t *len, int optional)
{
  int ty;
  lua_getfield(L, t, key);
  ty = lua_type(L, -1);
  if (ty == LUA_TSTRING) return lua_tolstring(L, -1, len);
  if (optional && ty == LUA_TNIL) {
    *len = 0;
    return NULL;
  }
  luaL_error(L, "producer queue: record table without a %s string", key);
  return NULL;
}

static double num_field(lua_State *L, int t, const char *key)
{
  double v;
  lua_getfield(L, t, key);
  if (!lua_isnumber(L, -1)) luaL_error(L, "producer queue: record table without a number %s", key);
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* pq:push(i, rec[, front]) - takes record table rec (from this queue or
 * kinesis.producer) into shard queue i, at the back or the front. */
static int pq_push(lua_State *L)
{
  pq *q = check_pq(L);
  pfifo *f = check_fifo(L, q, 2);
  int front = lua_toboolean(L, 4), ridx;
  size_t pk_len, data_len, ehk_len;
  const char *pk, *data, *ehk;
  double id, t, attempts;
  kn_u128 hk;
  uint32_t ref;
  prec *r;
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  /* everything is read and checked before anything is allocated, so a
   * raise here leaks nothing */
  pk = str_field(L, 3, "PartitionKey", &pk_len, 0);      /* 4 */
  data = str_field(L, 3, "Data", &data_len, 0);          /* 5 */
  ehk = str_field(L, 3, "ExplicitHashKey", &ehk_len, 1); /* 6 */
  id = num_field(L, 3, "id");
  t = num_field(L, 3, "t");
  attempts = num_field(L, 3, "attempts");
  lua_getfield(L, 3, "record");                          /* 7 */
  lua_getfield(L, 3, "last_err");                        /* 8 */
  if (ehk) {
    if (kn_u128_parse(ehk, ehk_len, &hk) != 0)
      return luaL_error(L, "producer queue: record table with a bad ExplicitHashKey");
  } else {
    hk = kn_u128_md5(pk, pk_len);
  }
  ridx = push_refs(L);
  ref = ref_new(L, q);
  r = rec_alloc(q, pk_len, data_len, ehk_len);
  if (r == NULL) {
    ref_unget(q, ref);
    return nomem(L);
  }
  memcpy(PK(r), pk, pk_len);
  memcpy(DATA(r), data, data_len);
  if (ehk_len) memcpy(EHK(r), ehk, ehk_len);
  r->hk = hk;
  r->id = (uint64_t)id;
  r->t = t;
  r->attempts = (uint32_t)attempts;
  r->ref = ref;
  r->has_err = !lua_isnil(L, 8);
  lua_pushvalue(L, 7);
  lua_rawseti(L, ridx, (int)(2 * ref - 1));
  lua_pushvalue(L, 8);
  lua_rawseti(L, ridx, (int)(2 * ref));
  if (front) {
    q->first = 0; /* due at once: it was waiting already */
  } else if (q->fresh_n == 0 || r->t < q->first) {
    q->first = r->t;
  }
  fifo_push(q, f, r, front);
  return 0;
}

/* pq:new_id() -> the next record id (records put order) */
static int pq_new_id(lua_State *L)
{
  pq *q = check_pq(L);
  lua_pushinteger(L, (lua_Integer)++q->next_id);
  return 1;
}

/* pq:last_id() -> the id of the latest record */
static int pq_last_id(lua_State *L)
{
  pq *q = check_pq(L);
  lua_pushinteger(L, (lua_Integer)q->next_id);
  return 1;
}

/* pq:fresh() -> records, bytes, oldest put time (nil when none; 0 after
 * a push to the front, which makes a request due at once: those records
 * waited already) */
static int pq_fresh(lua_State *L)
{
  pq *q = check_pq(L);
  lua_pushinteger(L, (lua_Integer)q->fresh_n);
  lua_pushinteger(L, (lua_Integer)q->fresh_bytes);
  if (q->fresh_n > 0) lua_pushnumber(L, q->first); else lua_pushnil(L);
  return 3;
}

/* pq:queued(i) -> records in shard queue i */
static int pq_queued(lua_State *L)
{
  pq *q = check_pq(L);
  pfifo *f = check_fifo(L, q, 2);
  lua_pushinteger(L, (lua_Integer)f->n);
  return 1;
}

/* pq:drain(i) -> array of record tables: all of shard queue i, in order */
static int pq_drain(lua_State *L)
{
  pq *q = check_pq(L);
  pfifo *f = check_fifo(L, q, 2);
  int ridx = push_refs(L), k = 0;
  lua_createtable(L, (int)f->n, 0);
  while (f->head) {
    materialize(L, q, ridx, fifo_pop(q, f));
    lua_rawseti(L, -2, ++k);
  }
  recompute_first(q);
  return 1;
}

/* pq:expire(i, cutoff, whole) -> array of the record tables put at or
 * before cutoff: from the head while they are, when the FIFO is in put
 * order (whole = false), or anywhere in it (whole = true, or a FIFO out of
 * put order: records put back at the front, or records of a closed shard
 * queued behind younger ones). */
static int pq_expire(lua_State *L)
{
  pq *q = check_pq(L);
  pfifo *f = check_fifo(L, q, 2);
  double cutoff = luaL_checknumber(L, 3);
  int whole = lua_toboolean(L, 4);
  int ridx = push_refs(L), k = 0;
  lua_newtable(L);
  while (f->head && f->head->t <= cutoff) {
    materialize(L, q, ridx, fifo_pop(q, f));
    lua_rawseti(L, -2, ++k);
  }
  if ((whole || f->mixed) && f->head) {
    prec *prev = f->head, *r = prev->next;
    while (r) {
      if (r->t <= cutoff) {
        prev->next = r->next;
        if (f->tail == r) f->tail = prev;
        f->n--;
        f->bytes -= SIZE(r);
        q->fresh_n--;
        q->fresh_bytes -= SIZE(r);
        r->next = NULL;
        materialize(L, q, ridx, r);
        lua_rawseti(L, -2, ++k);
        r = prev->next;
      } else {
        prev = r;
        r = r->next;
      }
    }
  }
  if (k > 0) recompute_first(q);
  return 1;
}

/* pq:set_shards(map, old) -> new
 * Takes a new shard map: shard queue i is now the map's shard i. old
 * names, by ShardId, the queue each continuing shard had; that queue
 * moves with it. A queue not carried over must have been drained. new
 * gives each shard's queue by ShardId. */
static int pq_set_shards(lua_State *L)
{
  pq *q = check_pq(L);
  kn_shardmap *m = kn_check_shardmap(L, 2);
  size_t n = kn_shardmap_count(m), i;
  pfifo *nf;
  char *carried;
  int tidx, ridx;
  luaL_checktype(L, 3, LUA_TTABLE);
  nf = (pfifo *)calloc(n ? n : 1, sizeof *nf);
  carried = (char *)calloc(q->nf ? q->nf : 1, 1);
  if (nf == NULL || carried == NULL) {
    free(nf);
    free(carried);
    nomem(L);
  }
  kn_getuservalue(L, 2);
  tidx = lua_gettop(L);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    lua_Integer old;
    lua_rawgeti(L, tidx, (int)i + 1);
    lua_getfield(L, -1, "ShardId");
    lua_pushvalue(L, -1);
    lua_gettable(L, 3);
    old = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    if (old >= 1 && (size_t)old <= q->nf && !carried[old - 1]) {
      nf[i] = q->f[old - 1];
      carried[old - 1] = 1;
    }
    lua_pushinteger(L, (lua_Integer)i + 1);
    lua_settable(L, -4); /* new[ShardId] = i + 1 */
    lua_pop(L, 1);
  }
  for (i = 0; i < q->nf; i++) {
    if (!carried[i] && q->f[i].head != NULL) {
      free(nf);
      free(carried);
      return luaL_error(L, "producer queue: shard queue %d was not drained", (int)i + 1);
    }
  }
  free(carried);
  free(q->f);
  q->f = nf;
  q->nf = n;
  q->map = m;
  ridx = push_refs(L);
  lua_pushvalue(L, 2);
  lua_rawseti(L, ridx, 0);
  lua_pop(L, 1);
  return 1;
}

/* ---- requests ------------------------------------------------------------ */

static preq *check_req(lua_State *L, pq *q, int idx)
{
  lua_Integer h = luaL_checkinteger(L, idx);
  if (h < 1 || (size_t)h > q->nreqs || !q->reqs[h - 1].used) luaL_argerror(L, idx, "no such request");
  return &q->reqs[h - 1];
}

/* pq:request() -> h, a new empty request */
static int pq_request(lua_State *L)
{
  pq *q = check_pq(L);
  size_t i;
  for (i = 0; i < q->nreqs; i++) if (!q->reqs[i].used) break;
  if (i == q->nreqs) {
    preq *r = (preq *)realloc(q->reqs, (q->nreqs + 1) * sizeof *r);
    if (r == NULL) return nomem(L);
    q->reqs = r;
    memset(&r[i], 0, sizeof r[i]);
    kn_buf_init(&r[i].agg);
    kn_buf_init(&r[i].sids);
    q->nreqs++;
  }
  q->reqs[i].used = 1;
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 1;
}

static pentry *new_entry(lua_State *L, preq *rq)
{
  pentry *e;
  rq->e = (pentry *)grow(L, rq->e, &rq->ecap, rq->ne + 1, sizeof *rq->e);
  e = &rq->e[rq->ne++];
  memset(e, 0, sizeof *e);
  e->take = (uint32_t)rq->ntakes;
  return e;
}

/* Conservative bytes a record adds to an aggregate (varints at their
 * widest), so an aggregate filled by this estimate stays in its limit. */
static size_t agg_cost(const prec *r, int new_key)
{
  size_t c = (size_t)r->data_len + 24;
  if (new_key) c += (size_t)r->pk_len + 4;
  if (r->ehk_len) c += (size_t)r->ehk_len + 10;
  return c;
}

/* Encodes the nrec records from `first` as one aggregate at the end of
 * rq->agg: the key tables in order of first use, as kinesis.kpl does. */
static void encode_aggregate(lua_State *L, pq *q, preq *rq, pentry *e)
{
  kn_kpl_message msg;
  size_t npk = 0, nehk = 0, i = 0, size = 0, written = 0;
  prec *r;
  int added, rc;
  if (e->nrec > q->kcap) {
    size_t c = q->kcap * 2 > e->nrec ? q->kcap * 2 : e->nrec;
    void *a = realloc(q->pks, c * sizeof *q->pks), *b, *d;
    if (a == NULL) nomem(L);
    q->pks = (kn_kpl_bytes *)a;
    b = realloc(q->ehk_tab, c * sizeof *q->ehk_tab);
    if (b == NULL) nomem(L);
    q->ehk_tab = (kn_kpl_bytes *)b;
    d = realloc(q->krecs, c * sizeof *q->krecs);
    if (d == NULL) nomem(L);
    q->krecs = (kn_kpl_record *)d;
    q->kcap = c;
  }
  kset_clear(L, &q->keys, e->nrec);
  kset_clear(L, &q->ehks, 4);
  for (r = e->first; r; r = r->next, i++) {
    kslot *s = kset_add(L, &q->keys, PK(r), r->pk_len, hash_bytes(PK(r), r->pk_len), (uint32_t)npk, &added);
    kn_kpl_record *k = &q->krecs[i];
    if (added) {
      q->pks[npk].ptr = (const uint8_t *)PK(r);
      q->pks[npk].len = r->pk_len;
      npk++;
    }
    k->pk_index = s->val;
    k->has_ehk = r->ehk_len != 0;
    k->ehk_index = 0;
    if (r->ehk_len) {
      kslot *t = kset_add(L, &q->ehks, EHK(r), r->ehk_len, hash_bytes(EHK(r), r->ehk_len), (uint32_t)nehk, &added);
      if (added) {
        q->ehk_tab[nehk].ptr = (const uint8_t *)EHK(r);
        q->ehk_tab[nehk].len = r->ehk_len;
        nehk++;
      }
      k->ehk_index = t->val;
    }
    k->data.ptr = (const uint8_t *)DATA(r);
    k->data.len = r->data_len;
  }
  msg.pks = q->pks;
  msg.pk_count = npk;
  msg.ehks = q->ehk_tab;
  msg.ehk_count = nehk;
  msg.records = q->krecs;
  msg.record_count = e->nrec;
  rc = kn_kpl_encoded_size(&msg, &size);
  if (rc != KN_KPL_OK) luaL_error(L, "producer queue: aggregate: %s", kn_kpl_strerror(rc));
  if (kn_buf_reserve(&rq->agg, size) != 0) nomem(L);
  rc = kn_kpl_encode(&msg, (uint8_t *)rq->agg.data + rq->agg.len, size, &written);
  if (rc != KN_KPL_OK) luaL_error(L, "producer queue: aggregate: %s", kn_kpl_strerror(rc));
  e->agg_off = rq->agg.len;
  e->agg_len = written;
  rq->agg.len += written;
  e->size = written + e->first->pk_len;
}

/* pq:take(h, i, shard_id, max_entries, max_bytes, rtok, btok, agg_max,
 *         agg_count, ordered)
 *   -> entries, bytes, records, aggregates, aggregated records, out_of_tokens
 * Moves fresh records of shard queue i into request h, oldest first, as
 * PutRecords entries: at most max_entries of them and max_bytes in all;
 * each costs a token of rtok and its bytes of btok, and none is taken
 * once rtok < 1 or btok <= 0 (out_of_tokens is then true). agg_max > 0
 * packs records in aggregates of at most agg_max bytes and agg_count
 * records (a record too large to share one goes alone); ordered takes no
 * partition key that an earlier entry of this take already holds. */
static int pq_take(lua_State *L)
{
  pq *q = check_pq(L);
  preq *rq = check_req(L, q, 2);
  pfifo *f = check_fifo(L, q, 3);
  size_t sid_len;
  const char *sid = luaL_checklstring(L, 4, &sid_len);
  lua_Integer max_entries = luaL_checkinteger(L, 5);
  double max_bytes = luaL_checknumber(L, 6), rtok = luaL_checknumber(L, 7), btok = luaL_checknumber(L, 8);
  double agg_max = luaL_checknumber(L, 9), agg_count = luaL_checknumber(L, 10);
  int ordered = lua_toboolean(L, 11);
  lua_Integer ne = 0, nrecs = 0, naggs = 0, nagg_recs = 0;
  double bytes = 0;
  int out_of_tokens = 0, added;

  rq->sid_off = (size_t *)grow(L, rq->sid_off, &rq->tcap, rq->ntakes + 1, sizeof *rq->sid_off);
  rq->sid_off[rq->ntakes] = rq->sids.len;
  if (kn_buf_append(&rq->sids, sid, sid_len) != 0 || kn_buf_append(&rq->sids, "", 1) != 0) nomem(L);
  rq->ntakes++;
  if (ordered) kset_clear(L, &q->seen, f->n < 4096 ? f->n + 1 : 4096);

  while (f->head && ne < max_entries) {
    prec *first = f->head;
    pentry *e;
    if (rtok < 1 || btok <= 0) {
      out_of_tokens = 1;
      break;
    }
    if (ordered && kset_has(&q->seen, PK(first), first->pk_len, hash_bytes(PK(first), first->pk_len))) break;
    if (bytes + (double)SIZE(first) > max_bytes) break;
    if (agg_max <= 0 || (double)first->pk_len + first->data_len + 64 > agg_max) {
      /* alone: not aggregated, or too large to share an aggregate */
      e = new_entry(L, rq);
      e->first = fifo_pop(q, f);
      e->nrec = 1;
      e->size = SIZE(first);
      first->attempts++;
      if (ordered) kset_add(L, &q->seen, PK(first), first->pk_len, hash_bytes(PK(first), first->pk_len), 0, &added);
    } else {
      /* an aggregate: this shard's records in order while they fit */
      double room = agg_max < max_bytes - bytes ? agg_max : max_bytes - bytes;
      double est = 20 + (double)first->pk_len + (double)agg_cost(first, 1);
      prec *r = first->next, *last = first;
      uint32_t m = 1;
      kset_clear(L, &q->keys, 64);
      kset_add(L, &q->keys, PK(first), first->pk_len, hash_bytes(PK(first), first->pk_len), 0, &added);
      while (r && (double)m < agg_count) {
        uint32_t h = hash_bytes(PK(r), r->pk_len);
        int newk = !kset_has(&q->keys, PK(r), r->pk_len, h);
        double c;
        if (newk && ordered && kset_has(&q->seen, PK(r), r->pk_len, h)) break;
        c = (double)agg_cost(r, newk);
        if (est + c > room) break;
        est += c;
        m++;
        if (newk) kset_add(L, &q->keys, PK(r), r->pk_len, h, 0, &added);
        last = r;
        r = r->next;
      }
      /* detach first..last from the FIFO */
      {
        uint32_t k;
        size_t got = 0;
        prec *x = first;
        for (k = 0; k < m; k++, x = x->next) {
          x->attempts++;
          got += SIZE(x);
        }
        f->head = last->next;
        if (f->head == NULL) {
          f->tail = NULL;
          f->mixed = 0;
        }
        last->next = NULL;
        f->n -= m;
        f->bytes -= got;
        q->fresh_n -= m;
        q->fresh_bytes -= got;
      }
      e = new_entry(L, rq);
      e->first = first;
      e->nrec = m;
      if (m == 1) {
        e->size = SIZE(first);
      } else {
        encode_aggregate(L, q, rq, e);
        if ((double)e->size > agg_max)
          return luaL_error(L, "producer queue: aggregate of %d bytes over its limit", (int)e->size);
        naggs++;
        nagg_recs += m;
      }
      if (ordered) {
        prec *x;
        for (x = first; x; x = x->next)
          kset_add(L, &q->seen, PK(x), x->pk_len, hash_bytes(PK(x), x->pk_len), 0, &added);
      }
    }
    ne++;
    nrecs += e->nrec;
    bytes += (double)e->size;
    rtok -= 1;
    btok -= (double)e->size;
  }
  if (ne > 0) recompute_first(q);
  lua_pushinteger(L, ne);
  lua_pushnumber(L, bytes);
  lua_pushinteger(L, nrecs);
  lua_pushinteger(L, naggs);
  lua_pushinteger(L, nagg_recs);
  lua_pushboolean(L, out_of_tokens);
  return 6;
}

/* pq:size(h) -> entries, records of request h's C part */
static int pq_size(lua_State *L)
{
  pq *q = check_pq(L);
  preq *rq = check_req(L, q, 2);
  size_t i, n = 0;
  for (i = 0; i < rq->ne; i++) n += rq->e[i].nrec;
  lua_pushinteger(L, (lua_Integer)rq->ne);
  lua_pushinteger(L, (lua_Integer)n);
  return 2;
}

#define PUT(s, n) \
  do { if (kn_buf_append(&q->body, (s), (n)) != 0) nomem(L); } while (0)
#define PUT_LIT(s) PUT(s, sizeof(s) - 1)

#define LIT(o, s) (memcpy((o), (s), sizeof(s) - 1), (o) + sizeof(s) - 1)

/* Writes one entry {"Data":"<base64>","PartitionKey":<JSON>[,"ExplicitHashKey":"<decimal>"]}
 * after a comma when `comma`, with one reservation for all of it. */
static void put_entry(lua_State *L, pq *q, int comma, const char *data, size_t dlen, const char *pk,
                      size_t plen, const char *ehk, size_t elen)
{
  size_t b64len = 4 * ((dlen + 2) / 3);
  char *o;
  /* ,{"Data":" b64 ","PartitionKey": (the key: kn_json_put_string reserves) */
  if (kn_buf_reserve(&q->body, 1 + 9 + b64len + 17) != 0) nomem(L);
  o = q->body.data + q->body.len;
  if (comma) *o++ = ',';
  o = LIT(o, "{\"Data\":\"");
  kn_b64_fast_encode(&q->b64, (const unsigned char *)data, dlen, o);
  o += b64len;
  o = LIT(o, "\",\"PartitionKey\":");
  q->body.len = (size_t)(o - q->body.data);
  if (kn_json_put_string(&q->body, pk, plen) != 0) nomem(L);
  if (kn_buf_reserve(&q->body, 21 + elen + 2) != 0) nomem(L);
  o = q->body.data + q->body.len;
  if (ehk) {
    o = LIT(o, ",\"ExplicitHashKey\":\"");
    memcpy(o, ehk, elen);
    o += elen;
    *o++ = '"';
  }
  *o++ = '}';
  *o = '\0';
  q->body.len = (size_t)(o - q->body.data);
}

/* pq:body(h, head, entries, n) -> the PutRecords body
 *   head .. entries[1..n] .. request h's entries .. "]}"
 * entries are Lua tables (retries) with string Data and PartitionKey and
 * an optional ExplicitHashKey; every record was checked at put, so
 * nothing is validated again: a missing field raises (a caller's bug). */
static int pq_body(lua_State *L)
{
  pq *q = check_pq(L);
  preq *rq = check_req(L, q, 2);
  size_t hlen, i;
  const char *head = luaL_checklstring(L, 3, &hlen);
  lua_Integer n = luaL_checkinteger(L, 5), j;
  int first = 1;
  luaL_checktype(L, 4, LUA_TTABLE);
  kn_buf_reset(&q->body);
  PUT(head, hlen);
  for (j = 1; j <= n; j++) {
    size_t dlen, plen, elen;
    const char *data, *pk, *ehk;
    int top = lua_gettop(L), e;
    lua_rawgeti(L, 4, (int)j);
    if (lua_type(L, -1) != LUA_TTABLE) return luaL_error(L, "producer queue: entry %d is not a table", (int)j);
    e = lua_gettop(L);
    data = str_field(L, e, "Data", &dlen, 0);
    pk = str_field(L, e, "PartitionKey", &plen, 0);
    ehk = str_field(L, e, "ExplicitHashKey", &elen, 1);
    put_entry(L, q, !first, data, dlen, pk, plen, ehk, elen);
    first = 0;
    lua_settop(L, top);
  }
  for (i = 0; i < rq->ne; i++) {
    pentry *e = &rq->e[i];
    prec *r = e->first;
    if (e->agg_len) {
      char dec[KN_U128_DEC_MAX + 1];
      size_t dl = 0;
      kn_u128_format(r->hk, dec, sizeof dec, &dl);
      put_entry(L, q, !first, rq->agg.data + e->agg_off, e->agg_len, PK(r), r->pk_len, dec, dl);
    } else {
      put_entry(L, q, !first, DATA(r), r->data_len, PK(r), r->pk_len, r->ehk_len ? EHK(r) : NULL, r->ehk_len);
    }
    first = 0;
  }
  PUT_LIT("]}");
  lua_pushlstring(L, q->body.data, q->body.len);
  return 1;
}

/* pq:parse(h, answer, expected) -> entries | nil, why
 * Reads a PutRecords answer for request h (answer must stay referenced
 * until settle). */
static int pq_parse(lua_State *L)
{
  pq *q = check_pq(L);
  preq *rq = check_req(L, q, 2);
  size_t len, n = 0;
  const char *body = luaL_checklstring(L, 3, &len);
  lua_Integer expected = luaL_checkinteger(L, 4);
  const char *why = NULL;
  size_t cap = (size_t)(expected > 0 ? expected : 0) + 1;
  rq->ans = (kn_pr_entry *)grow(L, rq->ans, &rq->acap, cap, sizeof *rq->ans);
  if (kn_pr_scan(body, len, rq->ans, cap, &n, &why) != 0) {
    rq->nans = 0;
    rq->body = NULL;
    lua_pushnil(L);
    lua_pushstring(L, why ? why : "PutRecords answer: malformed");
    return 2;
  }
  rq->nans = n;
  rq->body = body;
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* Pushes a string of the answer (unescaped) or nil. */
static void push_span(lua_State *L, pq *q, const char *p, size_t n, int esc)
{
  if (p == NULL) {
    lua_pushnil(L);
    return;
  }
  if (!esc) {
    lua_pushlstring(L, p, n);
    return;
  }
  if (q->scratch_cap < n + 1) {
    char *s = (char *)realloc(q->scratch, n + 1);
    if (s == NULL) nomem(L);
    q->scratch = s;
    q->scratch_cap = n + 1;
  }
  lua_pushlstring(L, q->scratch, kn_json_unescape(p, n, q->scratch));
}

static void push_answer(lua_State *L, pq *q, const kn_pr_entry *a)
{
  lua_createtable(L, 0, 4);
  push_span(L, q, a->seq, a->seq_len, a->seq_esc);
  lua_setfield(L, -2, "SequenceNumber");
  push_span(L, q, a->shard, a->shard_len, a->shard_esc);
  lua_setfield(L, -2, "ShardId");
  push_span(L, q, a->code, a->code_len, a->code_esc);
  lua_setfield(L, -2, "ErrorCode");
  push_span(L, q, a->msg, a->msg_len, a->msg_esc);
  lua_setfield(L, -2, "ErrorMessage");
}

/* Pushes the Lua form of entry e (a record table, or an entry table for
 * an aggregate) and frees its records. */
static void push_entry(lua_State *L, pq *q, preq *rq, int ridx, pentry *e)
{
  prec *r = e->first, *next;
  int k = 0;
  if (e->agg_len == 0) {
    e->first = NULL;
    materialize(L, q, ridx, r);
    return;
  }
  lua_createtable(L, 0, 7);
  lua_pushlstring(L, rq->agg.data + e->agg_off, e->agg_len);
  lua_setfield(L, -2, "Data");
  lua_pushlstring(L, PK(r), r->pk_len);
  lua_setfield(L, -2, "PartitionKey");
  {
    char dec[KN_U128_DEC_MAX + 1];
    size_t dl = 0;
    kn_u128_format(r->hk, dec, sizeof dec, &dl);
    lua_pushlstring(L, dec, dl);
    lua_setfield(L, -2, "ExplicitHashKey");
  }
  lua_pushinteger(L, (lua_Integer)e->size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)r->attempts);
  lua_setfield(L, -2, "attempts");
  lua_createtable(L, (int)e->nrec, 0);
  e->first = NULL;
  for (; r; r = next) {
    next = r->next;
    r->next = NULL;
    materialize(L, q, ridx, r);
    lua_rawseti(L, -2, ++k);
  }
  lua_setfield(L, -2, "recs");
}

static int span_is(const char *p, size_t n, int esc, const char *s)
{
  return p != NULL && !esc && n == strlen(s) && memcmp(p, s, n) == 0;
}

/* The stride of settle()'s `acknowledged` array: per record, its caller's
 * table, ShardId, SequenceNumber, SubSequenceNumber (false when not
 * aggregated) and attempts. */
#define ACK_STRIDE 5

/* pq:settle(h, answer, nlua, want, want_ids) -> count, bytes, memory, answers, failed, acknowledged, ids
 * Settles request h after parse(h, answer, ...). Answer entries 1..nlua
 * (the Lua entries body() wrote first) come back as tables in `answers`,
 * for the caller. A C entry acknowledged on the shard it was taken for
 * acknowledges its records: `count` of them, `bytes` and `memory` the sums
 * of their sizes (they leave the pending count and the bytes held); with `want` true `acknowledged` describes each in
 * ACK_STRIDE consecutive slots (else it is nil): the caller builds the
 * result tables, which Lua's constructors do faster than the C API; with
 * `want_ids` true `ids` lists their ids in the same order. Every
 * other C entry leaves C: `failed` is a flat array of triples (its Lua
 * form, its answer table, its take number). Frees the request. */
static int pq_settle(lua_State *L)
{
  pq *q = check_pq(L);
  preq *rq = check_req(L, q, 2);
  size_t len, i;
  const char *body = luaL_checklstring(L, 3, &len);
  lua_Integer nlua = luaL_checkinteger(L, 4);
  int want = lua_toboolean(L, 5), want_ids = lua_toboolean(L, 6);
  int ridx, out_idx = 0, ids_idx = 0, ans_idx, fail_idx, sid_idx, k = 0;
  const char *last_sid = NULL;
  size_t last_sid_len = 0;
  lua_Integer nres = 0, nfail = 0;
  double bytes = 0, mem = 0;
  if (rq->body != body || nlua < 0 || rq->nans != (size_t)nlua + rq->ne)
    return luaL_error(L, "producer queue: settle without a matching parse");
  lua_settop(L, 6);
  ridx = push_refs(L);
  lua_createtable(L, (int)nlua, 0);
  ans_idx = lua_gettop(L);
  for (i = 0; i < (size_t)nlua; i++) {
    push_answer(L, q, &rq->ans[i]);
    lua_rawseti(L, ans_idx, (int)i + 1);
  }
  lua_newtable(L);
  fail_idx = lua_gettop(L);
  if (want) {
    size_t nrec = 0;
    for (i = 0; i < rq->ne; i++) nrec += rq->e[i].nrec;
    lua_createtable(L, (int)(nrec * ACK_STRIDE), 0);
    out_idx = lua_gettop(L);
  }
  if (want_ids) {
    lua_createtable(L, (int)rq->ne, 0);
    ids_idx = lua_gettop(L);
  }
  /* the last ShardId string made, reused while entries name the same */
  lua_pushnil(L);
  sid_idx = lua_gettop(L);
  for (i = 0; i < rq->ne; i++) {
    pentry *e = &rq->e[i];
    const kn_pr_entry *a = &rq->ans[(size_t)nlua + i];
    const char *sid = rq->sids.data + rq->sid_off[e->take - 1];
    if (a->code == NULL && a->seq != NULL && span_is(a->shard, a->shard_len, a->shard_esc, sid)) {
      prec *r = e->first, *next;
      lua_Integer sub = 0;
      int seq_idx = 0;
      if (want) {
        /* the entry's ShardId and SequenceNumber, shared by its records */
        if (last_sid == NULL || last_sid_len != a->shard_len || memcmp(last_sid, a->shard, a->shard_len) != 0) {
          push_span(L, q, a->shard, a->shard_len, 0);
          lua_replace(L, sid_idx);
          last_sid = a->shard;
          last_sid_len = a->shard_len;
        }
        push_span(L, q, a->seq, a->seq_len, a->seq_esc);
        seq_idx = lua_gettop(L);
      }
      for (; r; r = next) {
        next = r->next;
        nres++;
        bytes += (double)SIZE(r);
        mem += (double)SIZE(r) + r->ehk_len;
        if (want) {
          lua_rawgeti(L, ridx, (int)(2 * r->ref - 1));
          lua_rawseti(L, out_idx, ++k);
          lua_pushvalue(L, sid_idx);
          lua_rawseti(L, out_idx, ++k);
          lua_pushvalue(L, seq_idx);
          lua_rawseti(L, out_idx, ++k);
          if (e->agg_len) lua_pushinteger(L, sub++); else lua_pushboolean(L, 0);
          lua_rawseti(L, out_idx, ++k);
          lua_pushinteger(L, (lua_Integer)r->attempts);
          lua_rawseti(L, out_idx, ++k);
        }
        if (want_ids) {
          lua_pushinteger(L, (lua_Integer)r->id);
          lua_rawseti(L, ids_idx, (int)nres);
        }
        ref_free(L, q, ridx, r->ref, (int)r->has_err);
        rec_free(q, r);
      }
      if (seq_idx) lua_settop(L, seq_idx - 1);
      e->first = NULL;
    } else {
      push_entry(L, q, rq, ridx, e);
      lua_rawseti(L, fail_idx, (int)++nfail);
      push_answer(L, q, a);
      lua_rawseti(L, fail_idx, (int)++nfail);
      lua_pushinteger(L, (lua_Integer)e->take);
      lua_rawseti(L, fail_idx, (int)++nfail);
    }
  }
  req_release(q, rq);
  q->pending -= (double)nres;
  q->buffered -= mem;
  lua_pushinteger(L, nres);
  lua_pushnumber(L, bytes);
  lua_pushnumber(L, mem);
  lua_pushvalue(L, ans_idx);
  lua_pushvalue(L, fail_idx);
  if (want) lua_pushvalue(L, out_idx); else lua_pushnil(L);
  if (want_ids) lua_pushvalue(L, ids_idx); else lua_pushnil(L);
  return 7;
}

/* pq:abandon(h) -> entries, takes
 * Request h failed as a whole (or was never sent): every C entry leaves C
 * as its Lua form, with the take number of each. Frees the request. */
static int pq_abandon(lua_State *L)
{
  pq *q = check_pq(L);
  preq *rq = check_req(L, q, 2);
  int ridx = push_refs(L);
  size_t i;
  lua_createtable(L, (int)rq->ne, 0);
  lua_createtable(L, (int)rq->ne, 0);
  for (i = 0; i < rq->ne; i++) {
    push_entry(L, q, rq, ridx, &rq->e[i]);
    lua_rawseti(L, ridx + 1, (int)i + 1);
    lua_pushinteger(L, (lua_Integer)rq->e[i].take);
    lua_rawseti(L, ridx + 2, (int)i + 1);
  }
  req_release(q, rq);
  return 2;
}

/* core.producer_queue() -> pq */
static int l_producer_queue(lua_State *L)
{
  pq *q = (pq *)kn_newuserdata(L, sizeof *q);
  memset(q, 0, sizeof *q);
  q->magic = PQ_MAGIC;
  q->next_retry = HUGE_VAL;
  kn_buf_init(&q->body);
  luaL_setmetatable(L, PQ_MT);
  lua_newtable(L);
  kn_setuservalue(L, -2);
  kn_b64_tables_init(&q->b64);
  return 1;
}

int kn_open_pqueue(lua_State *L)
{
  static const luaL_Reg methods[] = {
    {"put", pq_put},
    {"configure", pq_configure},
    {"set_next_retry", pq_set_next_retry},
    {"set_plain", pq_set_plain},
    {"set_driver", pq_set_driver},
    {"account", pq_account},
    {"outstanding", pq_outstanding},
    {"counts", pq_counts},
    {"push", pq_push},
    {"new_id", pq_new_id},
    {"last_id", pq_last_id},
    {"fresh", pq_fresh},
    {"queued", pq_queued},
    {"drain", pq_drain},
    {"expire", pq_expire},
    {"set_shards", pq_set_shards},
    {"request", pq_request},
    {"take", pq_take},
    {"size", pq_size},
    {"body", pq_body},
    {"parse", pq_parse},
    {"settle", pq_settle},
    {"abandon", pq_abandon},
    {"close", pq_destroy},
    {NULL, NULL}
  };
  /* put()'s field names, as the methods' upvalues 1-3 */
  lua_pushliteral(L, "PartitionKey");
  lua_pushliteral(L, "Data");
  lua_pushliteral(L, "ExplicitHashKey");
  kn_newclass_up(L, PQ_MT, methods, pq_destroy, 3);
  lua_pushcfunction(L, l_producer_queue);
  lua_setfield(L, -2, "producer_queue");
  return 0;
}
