/* fuzz_shardmap.c - libFuzzer harness for the shard-map builder
 * (src/shardmap.c): the ranges of a ListShards answer in, a sorted map that
 * must tile [0, 2^128-1] out, or a precise report of what is wrong.
 *
 * Input: lines "StartingHashKey EndingHashKey" in decimal (the seeds are the
 * real shard maps of ../shared/vectors); a line whose keys do not parse is
 * skipped. Every answer is checked against a model computed here: seal
 * succeeds exactly when the ranges tile the key space; a sealed map's
 * order, lookups (both ends and the middle of every range) and neighbours
 * agree with the model; a failed seal's report names a real inversion,
 * overlap or maximal gap; the state machine refuses out-of-order calls. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardmap.h"
#include "u128.h"

#define MAX_SHARDS 4096

typedef struct range {
  kn_u128 start, end;
  size_t id;
} range;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, size_t a, size_t b)
{
  fprintf(stderr, "fuzz_shardmap: %s (%zu, %zu)\n", what, a, b);
  abort();
}

static int lt(kn_u128 a, kn_u128 b) { return kn_u128_cmp(a, b) < 0; }
static int le(kn_u128 a, kn_u128 b) { return kn_u128_cmp(a, b) <= 0; }
static int eq(kn_u128 a, kn_u128 b) { return kn_u128_cmp(a, b) == 0; }

static int by_start(const void *pa, const void *pb)
{
  const range *a = pa, *b = pb;
  int c = kn_u128_cmp(a->start, b->start);
  return c != 0 ? c : kn_u128_cmp(a->end, b->end);
}

static int covers(const range *r, kn_u128 k)
{
  return le(r->start, k) && le(k, r->end);
}

/* Reads the next whitespace-free token at *p; 0 at the end of the line. */
static size_t token(const char **p, const char *end, const char **tok)
{
  const char *s = *p;
  while (s < end && *s == ' ') s++;
  *tok = s;
  while (s < end && *s != ' ' && *s != '\n') s++;
  *p = s;
  return (size_t)(s - *tok);
}

static size_t parse_input(const char *s, size_t size, range *out)
{
  const char *p = s, *end = s + size;
  size_t n = 0;
  while (p < end && n < MAX_SHARDS) {
    const char *a, *b;
    size_t alen = token(&p, end, &a), blen = token(&p, end, &b);
    kn_u128 start, stop;
    int ok = alen > 0 && blen > 0 && kn_u128_parse(a, alen, &start) == KN_U128_OK &&
             kn_u128_parse(b, blen, &stop) == KN_U128_OK;
    while (p < end && *p != '\n') p++;   /* rest of the line */
    if (p < end) p++;
    if (ok) {
      out[n].start = start;
      out[n].end = stop;
      out[n].id = n;
      n++;
    }
  }
  return n;
}

static void check_sealed(kn_shardmap *m, const range *sorted, size_t n)
{
  size_t pos, id = 0, lower = 0, upper = 0;
  kn_u128 s, e, mid;
  if (kn_shardmap_count(m) != n) die("count", kn_shardmap_count(m), n);
  for (pos = 0; pos < n; pos++) {
    const range *r = &sorted[pos];
    if (kn_shardmap_at(m, pos, &id, &s, &e) != KN_SHARDMAP_OK) die("at", pos, n);
    if (id != r->id || !eq(s, r->start) || !eq(e, r->end)) die("order differs from the model", pos, id);
    if (kn_shardmap_lookup(m, r->start, &id) != KN_SHARDMAP_OK || id != r->id)
      die("lookup of a range's first key", pos, id);
    if (kn_shardmap_lookup(m, r->end, &id) != KN_SHARDMAP_OK || id != r->id)
      die("lookup of a range's last key", pos, id);
    if (kn_u128_midpoint(r->start, r->end, &mid) != KN_U128_OK ||
        kn_shardmap_lookup(m, mid, &id) != KN_SHARDMAP_OK || id != r->id)
      die("lookup of a range's middle key", pos, id);
    if (kn_shardmap_adjacent(m, r->id, &lower, &upper) != KN_SHARDMAP_OK)
      die("adjacent", pos, r->id);
    if (lower != (pos > 0 ? sorted[pos - 1].id : SIZE_MAX) ||
        upper != (pos + 1 < n ? sorted[pos + 1].id : SIZE_MAX))
      die("neighbours differ from the model", pos, r->id);
  }
  if (kn_shardmap_at(m, n, &id, &s, &e) != KN_SHARDMAP_ENOTFOUND) die("at past the end", n, 0);
  if (kn_shardmap_adjacent(m, n, &lower, &upper) != KN_SHARDMAP_ENOTFOUND)
    die("adjacent of an unknown id", n, 0);
  if (kn_shardmap_seal(m, NULL) != KN_SHARDMAP_ESTATE) die("sealed twice", n, 0);
  if (kn_shardmap_add(m, s, e) != KN_SHARDMAP_ESTATE) die("add after seal", n, 0);
}

static void check_problem(int rc, const kn_shardmap_problem *p, const range *sorted,
                          const range *given, size_t n)
{
  const kn_u128 one = kn_u128_make(0, 1);
  size_t i;
  int inverted = 0;
  for (i = 0; i < n; i++)
    if (lt(given[i].end, given[i].start)) inverted = 1;

  switch (rc) {
  case KN_SHARDMAP_EEMPTY:
    if (n != 0) die("empty reported for shards", n, 0);
    break;
  case KN_SHARDMAP_EINVERTED:
    if (p->a >= n || p->a != p->b) die("inverted: bad ids", p->a, p->b);
    if (!eq(p->from, given[p->a].start) || !eq(p->to, given[p->a].end) || !lt(p->to, p->from))
      die("inverted: not that shard's inverted range", p->a, 0);
    break;
  case KN_SHARDMAP_EOVERLAP:
    if (inverted) die("overlap reported before an inverted range", p->a, p->b);
    if (p->a >= n || p->b >= n || p->a == p->b) die("overlap: bad ids", p->a, p->b);
    if (!le(p->from, p->to)) die("overlap: empty key span", p->a, p->b);
    if (!covers(&given[p->a], p->from) || !covers(&given[p->a], p->to) ||
        !covers(&given[p->b], p->from) || !covers(&given[p->b], p->to))
      die("overlap: the keys are not shared by both shards", p->a, p->b);
    break;
  case KN_SHARDMAP_EGAP: {
    kn_u128 t;
    if (inverted) die("gap reported before an inverted range", p->a, p->b);
    if (!le(p->from, p->to)) die("gap: empty key span", p->a, p->b);
    for (i = 0; i < n; i++)
      if (le(sorted[i].start, p->to) && le(p->from, sorted[i].end))
        die("gap: a shard covers keys of the reported gap", sorted[i].id, 0);
    if (p->a == SIZE_MAX) {
      if (!eq(p->from, kn_u128_make(0, 0))) die("gap without a lower shard does not start at 0", 0, 0);
    } else {
      if (p->a >= n) die("gap: bad lower id", p->a, n);
      if (kn_u128_add(given[p->a].end, one, &t) != KN_U128_OK || !eq(t, p->from))
        die("gap does not start right after its lower shard", p->a, 0);
    }
    if (p->b == SIZE_MAX) {
      if (!eq(p->to, kn_u128_max())) die("gap without an upper shard does not reach the top", 0, 0);
    } else {
      if (p->b >= n) die("gap: bad upper id", p->b, n);
      if (kn_u128_add(p->to, one, &t) != KN_U128_OK || !eq(t, given[p->b].start))
        die("gap does not end right before its upper shard", p->b, 0);
    }
    break;
  }
  default:
    die("unexpected seal status", (size_t)-rc, n);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static range given[MAX_SHARDS], sorted[MAX_SHARDS];
  const kn_u128 one = kn_u128_make(0, 1);
  kn_shardmap *m = NULL;
  kn_shardmap_problem problem;
  size_t n = parse_input((const char *)data, size, given), i, id;
  int rc, tiles;

  memcpy(sorted, given, n * sizeof *given);
  qsort(sorted, n, sizeof *sorted, by_start);
  tiles = n > 0 && eq(sorted[0].start, kn_u128_make(0, 0)) && eq(sorted[n - 1].end, kn_u128_max());
  for (i = 0; tiles && i < n; i++) {
    kn_u128 next;
    if (lt(sorted[i].end, sorted[i].start)) tiles = 0;
    else if (i + 1 < n &&
             (kn_u128_add(sorted[i].end, one, &next) != KN_U128_OK || !eq(next, sorted[i + 1].start)))
      tiles = 0;
  }

  if (kn_shardmap_new(n > 0 ? n : 1, &m) != KN_SHARDMAP_OK) die("new", n, 0);
  for (i = 0; i < n; i++)
    if (kn_shardmap_add(m, given[i].start, given[i].end) != KN_SHARDMAP_OK) die("add", i, n);
  if (n > 0 && kn_shardmap_add(m, given[0].start, given[0].end) != KN_SHARDMAP_EFULL)
    die("add past the capacity", n, 0);
  if (kn_shardmap_lookup(m, kn_u128_make(0, 0), &id) != KN_SHARDMAP_ESTATE)
    die("lookup before seal", n, 0);
  memset(&problem, 0xa5, sizeof problem);
  rc = kn_shardmap_seal(m, &problem);
  if ((rc == KN_SHARDMAP_OK) != tiles) die("seal disagrees with the model", (size_t)-rc, n);
  if (rc == KN_SHARDMAP_OK) check_sealed(m, sorted, n);
  else check_problem(rc, &problem, sorted, given, n);
  kn_shardmap_free(m);
  return 0;
}
