/* codec.h - the pure C half of the request/response codec: the model's
 * shapes compiled into a compact table, the small ECMAScript regex subset
 * of the model's pattern traits (a Pike VM: linear time, no backtracking),
 * strict UTF-8 counting and the JSON text writers. No Lua, no I/O, no
 * globals; src/l_codec.c walks Lua tables and JSON text with these. */
#ifndef KN_CODEC_H
#define KN_CODEC_H

#include <stddef.h>

#include "buf.h"

enum {
  KN_CT_OTHER = 0,
  KN_CT_STRING,
  KN_CT_BLOB,
  KN_CT_BOOLEAN,
  KN_CT_INTEGER,
  KN_CT_LONG,
  KN_CT_TIMESTAMP,
  KN_CT_DOUBLE,
  KN_CT_STRUCTURE,
  KN_CT_UNION,
  KN_CT_LIST,
  KN_CT_MAP
};

typedef struct kn_regex kn_regex;

typedef struct kn_member {
  char *name;       /* owned, NUL-terminated wire name */
  size_t name_len;
  char *key_json;   /* owned: the JSON text "\"Name\":" */
  size_t key_json_len;
  int target;       /* shape index */
  int required;
  int id;           /* 1-based index into the binding's key-string table */
  int seen_next;    /* decode: index of the member that followed this one
                     * in the last object read (a guess, checked) */
} kn_member;

typedef struct kn_shape {
  char *name;       /* owned */
  int type;         /* KN_CT_* */
  int has_min, has_max;
  double min, max;
  char **enums;     /* owned array of owned strings */
  size_t *enum_lens;
  size_t nenum;
  kn_regex *re;     /* owned; NULL without a pattern trait */
  int hash_key;     /* the 128-bit decimal bound applies (shape HashKey) */
  kn_member *members; /* owned, sorted by name (structure, union) */
  size_t nmembers;
  int member;       /* list: element shape index */
  int key, value;   /* map: key and value shape indexes */
  int seen_first;   /* decode: index of the member read first last time */
} kn_shape;

typedef struct kn_model {
  kn_shape *shapes; /* owned array */
  size_t nshapes;
  int nkeys;        /* member ids handed out */
} kn_model;

/* Frees everything the model owns and zeroes it; idempotent. */
void kn_model_free(kn_model *m);

/* The KN_CT_* code of a model type name; KN_CT_OTHER when unknown. */
int kn_codec_type(const char *name);

/* Member of structure s named key[0..n), or NULL (binary search). */
const kn_member *kn_codec_member(const kn_shape *s, const char *key, size_t n);

/* Compiles the pattern src[0..n) into *out (owned by the caller, freed
 * with kn_re_free). 0 ok; -1 out of memory; -2 syntax outside the subset
 * (anchors, classes, \d \w \s and their negations, groups, alternation,
 * greedy * + ? {m} {m,} {m,n}); *why (may be NULL) then gets a static text. */
int kn_re_compile(const char *src, size_t n, kn_regex **out, const char **why);
/* 1 when s[0..n) contains a match (ECMAScript RegExp.test on bytes), 0 when
 * not. The regex's own scratch is used: not reentrant per regex. */
int kn_re_test(kn_regex *re, const char *s, size_t n);
void kn_re_free(kn_regex *re);

/* Code points in s[0..n) under the strict UTF-8 rules (no overlongs, no
 * surrogates, nothing above U+10FFFF); -1 when s is not valid UTF-8. */
long kn_utf8_length(const char *s, size_t n);

/* Appends s[0..n) as a JSON string, quotes included, escaped exactly as
 * lua-cjson does ('/' and DEL escaped too). 0 ok, -1 out of memory. */
int kn_json_put_string(kn_buf *b, const char *s, size_t n);
/* Appends a number as kinesis.codec always wrote it: integral values in
 * (-2^63, 2^63) as integers, others "%.6f" with trailing zeros removed. */
int kn_json_put_number(kn_buf *b, double v);
int kn_json_put_integer(kn_buf *b, long long v);

/* Tables for the codec's base64 (RFC 4648, '=' padding), built once into
 * the caller's state: two output characters per 12 input bits, and the
 * value of every input byte (0xFF for a byte outside the alphabet). */
typedef struct kn_b64_tables {
  char pair[4096][2];
  unsigned char value[256];
} kn_b64_tables;

void kn_b64_tables_init(kn_b64_tables *t);
/* Encodes in[0..n) into out (4 * ceil(n / 3) bytes, the caller's). */
void kn_b64_fast_encode(const kn_b64_tables *t, const unsigned char *in, size_t n, char *out);
/* Decodes in[0..n) into out (kn_b64_decoded_len bytes) with exactly the
 * rules of kn_b64_decode; 0 ok (*out_len set), -1 not canonical base64. */
int kn_b64_fast_decode(const kn_b64_tables *t, const char *in, size_t n, unsigned char *out,
                       size_t *out_len);

#endif
