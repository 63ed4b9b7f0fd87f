/* shardmap.c - sorted, validated shard hash key ranges (see shardmap.h).
 * Validation insists on an exact tiling of [0, 2^128-1] because that is what
 * the open shards of a stream always form; anything else (a missing page of
 * ListShards, a closed parent next to its children) would route some keys
 * wrongly or ambiguously, so it is reported instead of guessed around. */
#include "shardmap.h"

#include <stdlib.h>

typedef struct entry {
  kn_u128 start, end;
  size_t id;
} entry;

struct kn_shardmap {
  size_t capacity, count;
  int sealed;
  entry *entries; /* hash key order once sealed */
  size_t *pos;    /* pos[id] = index in entries, filled by seal */
};

int kn_shardmap_new(size_t capacity, kn_shardmap **out)
{
  kn_shardmap *m;
  if (capacity == 0 || capacity > SIZE_MAX / sizeof(entry)) return KN_SHARDMAP_ENOMEM;
  m = calloc(1, sizeof *m);
  if (m == NULL) return KN_SHARDMAP_ENOMEM;
  m->entries = malloc(capacity * sizeof *m->entries);
  m->pos = malloc(capacity * sizeof *m->pos);
  if (m->entries == NULL || m->pos == NULL) {
    kn_shardmap_free(m);
    return KN_SHARDMAP_ENOMEM;
  }
  m->capacity = capacity;
  *out = m;
  return KN_SHARDMAP_OK;
}

void kn_shardmap_free(kn_shardmap *m)
{
  if (m == NULL) return;
  free(m->entries);
  free(m->pos);
  free(m);
}

int kn_shardmap_add(kn_shardmap *m, kn_u128 start, kn_u128 end)
{
  entry *e;
  if (m->sealed) return KN_SHARDMAP_ESTATE;
  if (m->count == m->capacity) return KN_SHARDMAP_EFULL;
  e = &m->entries[m->count];
  e->start = start;
  e->end = end;
  e->id = m->count++;
  return KN_SHARDMAP_OK;
}

size_t kn_shardmap_count(const kn_shardmap *m)
{
  return m->count;
}

/* By start, then end, then id, so the order (and the fault reported) does
 * not depend on the qsort implementation. */
static int entry_cmp(const void *pa, const void *pb)
{
  const entry *a = pa, *b = pb;
  int c = kn_u128_cmp(a->start, b->start);
  if (c == 0) c = kn_u128_cmp(a->end, b->end);
  if (c == 0) c = a->id < b->id ? -1 : a->id > b->id;
  return c;
}

static int report(kn_shardmap_problem *p, int status, size_t a, size_t b,
                  kn_u128 from, kn_u128 to)
{
  if (p != NULL) {
    p->a = a;
    p->b = b;
    p->from = from;
    p->to = to;
  }
  return status;
}

int kn_shardmap_seal(kn_shardmap *m, kn_shardmap_problem *problem)
{
  const kn_u128 zero = kn_u128_make(0, 0), one = kn_u128_make(0, 1);
  const kn_u128 max = kn_u128_max();
  entry *e = m->entries;
  size_t n = m->count, i;
  kn_u128 t;

  if (m->sealed) return KN_SHARDMAP_ESTATE;
  if (n == 0) return report(problem, KN_SHARDMAP_EEMPTY, SIZE_MAX, SIZE_MAX, zero, max);
  qsort(e, n, sizeof *e, entry_cmp);

  for (i = 0; i < n; i++)
    if (kn_u128_cmp(e[i].start, e[i].end) > 0)
      return report(problem, KN_SHARDMAP_EINVERTED, e[i].id, e[i].id, e[i].start, e[i].end);

  if (kn_u128_cmp(e[0].start, zero) != 0) {
    kn_u128_sub(e[0].start, one, &t);
    return report(problem, KN_SHARDMAP_EGAP, SIZE_MAX, e[0].id, zero, t);
  }
  for (i = 1; i < n; i++) {
    const entry *prev = &e[i - 1], *cur = &e[i];
    if (kn_u128_cmp(cur->start, prev->end) <= 0) {
      /* Sorted by start and contiguous so far: prev->end is the highest key
       * covered yet, and the shared keys run from cur->start. */
      t = kn_u128_cmp(cur->end, prev->end) < 0 ? cur->end : prev->end;
      return report(problem, KN_SHARDMAP_EOVERLAP, prev->id, cur->id, cur->start, t);
    }
    /* prev->end < cur->start <= max, so prev->end + 1 cannot overflow. */
    kn_u128_add(prev->end, one, &t);
    if (kn_u128_cmp(cur->start, t) != 0) {
      kn_u128 to;
      kn_u128_sub(cur->start, one, &to);
      return report(problem, KN_SHARDMAP_EGAP, prev->id, cur->id, t, to);
    }
  }
  if (kn_u128_cmp(e[n - 1].end, max) != 0) {
    kn_u128_add(e[n - 1].end, one, &t);
    return report(problem, KN_SHARDMAP_EGAP, e[n - 1].id, SIZE_MAX, t, max);
  }

  for (i = 0; i < n; i++) m->pos[e[i].id] = i;
  m->sealed = 1;
  return KN_SHARDMAP_OK;
}

int kn_shardmap_lookup(const kn_shardmap *m, kn_u128 key, size_t *id)
{
  size_t lo = 0, hi;
  if (!m->sealed) return KN_SHARDMAP_ESTATE;
  /* The last range whose start <= key; the tiling guarantees it holds key.
   * Invariant: entries[lo].start <= key (entries[0].start is 0). */
  hi = m->count;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (kn_u128_cmp(m->entries[mid].start, key) <= 0)
      lo = mid;
    else
      hi = mid;
  }
  *id = m->entries[lo].id;
  return KN_SHARDMAP_OK;
}

int kn_shardmap_at(const kn_shardmap *m, size_t pos, size_t *id,
                   kn_u128 *start, kn_u128 *end)
{
  if (!m->sealed) return KN_SHARDMAP_ESTATE;
  if (pos >= m->count) return KN_SHARDMAP_ENOTFOUND;
  *id = m->entries[pos].id;
  *start = m->entries[pos].start;
  *end = m->entries[pos].end;
  return KN_SHARDMAP_OK;
}

int kn_shardmap_adjacent(const kn_shardmap *m, size_t id, size_t *lower,
                         size_t *upper)
{
  size_t p;
  if (!m->sealed) return KN_SHARDMAP_ESTATE;
  if (id >= m->count) return KN_SHARDMAP_ENOTFOUND;
  p = m->pos[id];
  *lower = p > 0 ? m->entries[p - 1].id : SIZE_MAX;
  *upper = p + 1 < m->count ? m->entries[p + 1].id : SIZE_MAX;
  return KN_SHARDMAP_OK;
}
