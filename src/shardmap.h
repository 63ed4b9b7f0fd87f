/* shardmap.h - which shard owns a hash key: the inclusive HashKeyRanges of a
 * stream's shards, sorted and checked to tile [0, 2^128-1] exactly (no gap,
 * no overlap), searched by bisection. Shards are named by the caller's ids:
 * the position in which each was added (0, 1, 2, ...). No Lua, no I/O.
 *
 * Use: kn_shardmap_new(n) -> n x kn_shardmap_add -> kn_shardmap_seal ->
 * lookups -> kn_shardmap_free. The map owns its memory; the caller owns the
 * kn_shardmap returned by kn_shardmap_new and frees it exactly once. */
#ifndef KN_SHARDMAP_H
#define KN_SHARDMAP_H

#include <stddef.h>

#include "u128.h"

#define KN_SHARDMAP_OK        0
#define KN_SHARDMAP_ENOMEM   -1 /* allocation failed */
#define KN_SHARDMAP_EFULL    -2 /* add: more shards than the capacity */
#define KN_SHARDMAP_ESTATE   -3 /* add after seal, or lookup before it */
#define KN_SHARDMAP_EEMPTY   -4 /* seal: no shards */
#define KN_SHARDMAP_EINVERTED -5 /* seal: a range with start > end */
#define KN_SHARDMAP_EOVERLAP -6 /* seal: two ranges share keys */
#define KN_SHARDMAP_EGAP     -7 /* seal: keys covered by no range */
#define KN_SHARDMAP_ENOTFOUND -8 /* adjacent: no such id */

/* Ids in a seal problem report: SIZE_MAX stands for "no shard" (a gap
 * before the first range or after the last). */
typedef struct kn_shardmap_problem {
  size_t a, b;         /* the shards involved, in hash key order */
  kn_u128 from, to;    /* the uncovered (gap) or shared (overlap) keys */
} kn_shardmap_problem;

typedef struct kn_shardmap kn_shardmap;

/* Allocates an empty map for up to capacity shards (capacity >= 1) into
 * *out, which the caller then owns. */
int kn_shardmap_new(size_t capacity, kn_shardmap **out);

/* Frees m and everything it holds; NULL is allowed. */
void kn_shardmap_free(kn_shardmap *m);

/* Adds the inclusive range [start, end]; its id is the number of shards
 * added before it. */
int kn_shardmap_add(kn_shardmap *m, kn_u128 start, kn_u128 end);

/* Sorts the ranges and checks that they tile [0, 2^128-1]. On an error the
 * map stays unsealed and, if problem is not NULL, *problem (the caller's)
 * describes the first fault found in hash key order. */
int kn_shardmap_seal(kn_shardmap *m, kn_shardmap_problem *problem);

/* Number of shards added. */
size_t kn_shardmap_count(const kn_shardmap *m);

/* Sealed map: *id = the shard whose range contains key (there always is
 * one), in O(log n). */
int kn_shardmap_lookup(const kn_shardmap *m, kn_u128 key, size_t *id);

/* Sealed map: the shard at position pos (0-based) in hash key order, with
 * its range. KN_SHARDMAP_ENOTFOUND when pos >= count. */
int kn_shardmap_at(const kn_shardmap *m, size_t pos, size_t *id,
                   kn_u128 *start, kn_u128 *end);

/* Sealed map: the neighbours of shard id, whose ranges end just below and
 * start just above its own (the shards MergeShards accepts with it);
 * SIZE_MAX where there is none (the first and the last shard). */
int kn_shardmap_adjacent(const kn_shardmap *m, size_t id, size_t *lower,
                         size_t *upper);

#endif
