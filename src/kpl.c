/* kpl.c - KPL aggregated records: framing (magic, MD5) and a hand-written
 * protobuf codec for AggregatedRecord/Record/Tag. The decoder follows what
 * protobuf-java (and so the KCL) accepts: a known field number with an
 * unexpected wire type is an unknown field and is skipped; the last value of
 * a repeated scalar wins; a missing required field fails the whole message,
 * but only after the wire format has been read to the end. */
#include "kpl.h"

#include <string.h>

#include "md5.h"

const uint8_t kn_kpl_magic[KN_KPL_MAGIC_LEN] = {0xF3, 0x89, 0x9A, 0xC2};

/* Wire types (protobuf encoding guide, "Message Structure"). */
enum {
  WT_VARINT = 0,
  WT_I64 = 1,
  WT_LEN = 2,
  WT_SGROUP = 3,
  WT_EGROUP = 4,
  WT_I32 = 5
};

/* Field tags written by the encoder: (field number << 3) | wire type. */
#define TAG_PK_TABLE 0x0a   /* AggregatedRecord.partition_key_table, LEN */
#define TAG_EHK_TABLE 0x12  /* AggregatedRecord.explicit_hash_key_table, LEN */
#define TAG_RECORDS 0x1a    /* AggregatedRecord.records, LEN */
#define TAG_PK_INDEX 0x08   /* Record.partition_key_index, VARINT */
#define TAG_EHK_INDEX 0x10  /* Record.explicit_hash_key_index, VARINT */
#define TAG_DATA 0x1a       /* Record.data, LEN */

/* Deepest nesting of messages and groups read; protobuf's default
 * recursion limit is the same 100. */
#define MAX_DEPTH 100

const char *kn_kpl_strerror(int status)
{
  switch (status) {
  case KN_KPL_OK: return "success";
  case KN_KPL_ENOTAGG: return "not an aggregated record (no magic, or too short)";
  case KN_KPL_ECHECKSUM: return "MD5 checksum mismatch";
  case KN_KPL_EPARSE: return "malformed protobuf";
  case KN_KPL_EREQUIRED: return "a required protobuf field is missing";
  case KN_KPL_EINDEX: return "key index outside its table";
  case KN_KPL_ESPACE: return "buffer too small";
  case KN_KPL_ETOOBIG: return "aggregate too large";
  default: return "unknown KPL status";
  }
}

/* ---- framing --------------------------------------------------------------- */

int kn_kpl_unwrap(const void *data, size_t len, const uint8_t **pb, size_t *pb_len)
{
  const uint8_t *d = (const uint8_t *)data;
  uint8_t digest[KN_KPL_DIGEST_LEN];
  size_t n;
  if (len < KN_KPL_MAGIC_LEN || memcmp(d, kn_kpl_magic, KN_KPL_MAGIC_LEN) != 0)
    return KN_KPL_ENOTAGG;
  /* AggregatorUtil.deaggregate: "bb.remaining() <= DIGEST_SIZE" is not an
   * aggregate, so magic + MD5 of an empty protobuf is a plain record. */
  if (len - KN_KPL_MAGIC_LEN <= KN_KPL_DIGEST_LEN) return KN_KPL_ENOTAGG;
  n = len - KN_KPL_OVERHEAD;
  kn_md5(d + KN_KPL_MAGIC_LEN, n, digest);
  if (memcmp(digest, d + KN_KPL_MAGIC_LEN + n, KN_KPL_DIGEST_LEN) != 0)
    return KN_KPL_ECHECKSUM;
  *pb = d + KN_KPL_MAGIC_LEN;
  *pb_len = n;
  return KN_KPL_OK;
}

/* ---- decoder --------------------------------------------------------------- */

/* The unread part of one message: [p, end). Never read at or past end. */
typedef struct cursor {
  const uint8_t *p, *end;
} cursor;

static size_t remaining(const cursor *c)
{
  return (size_t)(c->end - c->p);
}

/* A base-128 varint of at most 64 bits: at most 10 bytes, and the 10th may
 * only carry the top bit. */
static int read_varint(cursor *c, uint64_t *out)
{
  uint64_t v = 0;
  unsigned i;
  for (i = 0; i < 10; i++) {
    uint8_t b;
    if (c->p == c->end) return KN_KPL_EPARSE;
    b = *c->p++;
    if (i == 9 && b > 1) return KN_KPL_EPARSE;
    v |= (uint64_t)(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      *out = v;
      return KN_KPL_OK;
    }
  }
  return KN_KPL_EPARSE;
}

/* A field key: tags are 32-bit and field number 0 does not exist. */
static int read_key(cursor *c, uint32_t *field, unsigned *wt)
{
  uint64_t v;
  int rc = read_varint(c, &v);
  if (rc != KN_KPL_OK) return rc;
  if (v > 0xffffffffu || (v >> 3) == 0) return KN_KPL_EPARSE;
  *field = (uint32_t)(v >> 3);
  *wt = (unsigned)(v & 7);
  return KN_KPL_OK;
}

/* A length-delimited payload; its bytes must all be inside the cursor. */
static int read_bytes(cursor *c, kn_kpl_bytes *out)
{
  uint64_t n;
  int rc = read_varint(c, &n);
  if (rc != KN_KPL_OK) return rc;
  if (n > (uint64_t)remaining(c)) return KN_KPL_EPARSE;
  out->ptr = c->p;
  out->len = (size_t)n;
  c->p += (size_t)n;
  return KN_KPL_OK;
}

/* Skips the value of a field whose key was just read. A group (wire type 3)
 * runs to the end-group key of the same field number, skipping what it holds. */
static int skip_value(cursor *c, uint32_t field, unsigned wt, int depth)
{
  uint64_t v;
  kn_kpl_bytes b;
  switch (wt) {
  case WT_VARINT:
    return read_varint(c, &v);
  case WT_I64:
    if (remaining(c) < 8) return KN_KPL_EPARSE;
    c->p += 8;
    return KN_KPL_OK;
  case WT_I32:
    if (remaining(c) < 4) return KN_KPL_EPARSE;
    c->p += 4;
    return KN_KPL_OK;
  case WT_LEN:
    return read_bytes(c, &b);
  case WT_SGROUP:
    if (depth >= MAX_DEPTH) return KN_KPL_EPARSE;
    for (;;) {
      uint32_t f;
      unsigned w;
      int rc = read_key(c, &f, &w); /* EPARSE at the end: group not closed */
      if (rc != KN_KPL_OK) return rc;
      if (w == WT_EGROUP) return f == field ? KN_KPL_OK : KN_KPL_EPARSE;
      rc = skip_value(c, f, w, depth + 1);
      if (rc != KN_KPL_OK) return rc;
    }
  default: /* an end-group with no group open, or wire type 6 or 7 */
    return KN_KPL_EPARSE;
  }
}

/* message Tag { required string key = 1; optional string value = 2; } */
static int parse_tag(kn_kpl_bytes body, int depth, int *missing)
{
  cursor c;
  int has_key = 0;
  c.p = body.ptr;
  c.end = body.ptr + body.len;
  while (c.p < c.end) {
    uint32_t f;
    unsigned wt;
    kn_kpl_bytes b;
    int rc = read_key(&c, &f, &wt);
    if (rc != KN_KPL_OK) return rc;
    if ((f == 1 || f == 2) && wt == WT_LEN) {
      rc = read_bytes(&c, &b);
      if (f == 1) has_key = 1;
    } else {
      rc = skip_value(&c, f, wt, depth + 1);
    }
    if (rc != KN_KPL_OK) return rc;
  }
  if (!has_key) *missing = 1;
  return KN_KPL_OK;
}

/* message Record { required uint64 partition_key_index = 1;
 *   optional uint64 explicit_hash_key_index = 2; required bytes data = 3;
 *   repeated Tag tags = 4; } */
static int parse_record(kn_kpl_bytes body, int depth, kn_kpl_record *out, int *missing)
{
  cursor c;
  int has_pk = 0, has_data = 0;
  c.p = body.ptr;
  c.end = body.ptr + body.len;
  out->pk_index = 0;
  out->ehk_index = 0;
  out->has_ehk = 0;
  out->data.ptr = NULL;
  out->data.len = 0;
  while (c.p < c.end) {
    uint32_t f;
    unsigned wt;
    kn_kpl_bytes b;
    int rc = read_key(&c, &f, &wt);
    if (rc != KN_KPL_OK) return rc;
    if (f == 1 && wt == WT_VARINT) {
      rc = read_varint(&c, &out->pk_index);
      has_pk = 1;
    } else if (f == 2 && wt == WT_VARINT) {
      rc = read_varint(&c, &out->ehk_index);
      out->has_ehk = 1;
    } else if (f == 3 && wt == WT_LEN) {
      rc = read_bytes(&c, &out->data);
      has_data = 1;
    } else if (f == 4 && wt == WT_LEN) {
      rc = read_bytes(&c, &b);
      if (rc == KN_KPL_OK) rc = parse_tag(b, depth + 1, missing);
    } else {
      rc = skip_value(&c, f, wt, depth + 1);
    }
    if (rc != KN_KPL_OK) return rc;
  }
  if (!has_pk || !has_data) *missing = 1;
  return KN_KPL_OK;
}

/* Reads a whole AggregatedRecord. With msg NULL it only validates and
 * counts; otherwise it also fills msg's arrays, whose capacities are cap. */
static int walk(const uint8_t *pb, size_t len, kn_kpl_message *msg,
                const kn_kpl_counts *cap, kn_kpl_counts *n)
{
  cursor c;
  int missing = 0;
  n->pks = n->ehks = n->records = 0;
  if (len == 0) return KN_KPL_OK; /* every field is optional or repeated */
  if (pb == NULL) return KN_KPL_EPARSE;
  c.p = pb;
  c.end = pb + len;
  while (c.p < c.end) {
    uint32_t f;
    unsigned wt;
    kn_kpl_bytes b;
    kn_kpl_record r;
    int rc = read_key(&c, &f, &wt);
    if (rc != KN_KPL_OK) return rc;
    if (f == 1 && wt == WT_LEN) {
      rc = read_bytes(&c, &b);
      if (rc != KN_KPL_OK) return rc;
      if (msg != NULL) {
        if (n->pks >= cap->pks) return KN_KPL_ESPACE;
        msg->pks[n->pks] = b;
      }
      n->pks++;
    } else if (f == 2 && wt == WT_LEN) {
      rc = read_bytes(&c, &b);
      if (rc != KN_KPL_OK) return rc;
      if (msg != NULL) {
        if (n->ehks >= cap->ehks) return KN_KPL_ESPACE;
        msg->ehks[n->ehks] = b;
      }
      n->ehks++;
    } else if (f == 3 && wt == WT_LEN) {
      rc = read_bytes(&c, &b);
      if (rc == KN_KPL_OK) rc = parse_record(b, 1, &r, &missing);
      if (rc != KN_KPL_OK) return rc;
      if (msg != NULL) {
        if (n->records >= cap->records) return KN_KPL_ESPACE;
        msg->records[n->records] = r;
      }
      n->records++;
    } else {
      rc = skip_value(&c, f, wt, 0);
      if (rc != KN_KPL_OK) return rc;
    }
  }
  /* protobuf-java checks required fields once the bytes are parsed. */
  return missing ? KN_KPL_EREQUIRED : KN_KPL_OK;
}

int kn_kpl_scan(const uint8_t *pb, size_t len, kn_kpl_counts *counts)
{
  return walk(pb, len, NULL, NULL, counts);
}

int kn_kpl_parse(const uint8_t *pb, size_t len, kn_kpl_message *msg)
{
  kn_kpl_counts cap, n;
  int rc;
  cap.pks = msg->pk_count;
  cap.ehks = msg->ehk_count;
  cap.records = msg->record_count;
  rc = walk(pb, len, msg, &cap, &n);
  if (rc != KN_KPL_OK) return rc;
  msg->pk_count = n.pks;
  msg->ehk_count = n.ehks;
  msg->record_count = n.records;
  return KN_KPL_OK;
}

int kn_kpl_record_check(const kn_kpl_message *msg, size_t i)
{
  const kn_kpl_record *r;
  if (i >= msg->record_count) return KN_KPL_ESPACE;
  r = &msg->records[i];
  if (r->pk_index >= (uint64_t)msg->pk_count) return KN_KPL_EINDEX;
  if (r->has_ehk && r->ehk_index >= (uint64_t)msg->ehk_count) return KN_KPL_EINDEX;
  return KN_KPL_OK;
}

/* ---- encoder --------------------------------------------------------------- */

static size_t varint_size(uint64_t v)
{
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

/* *acc += v, or 0 when that would wrap. */
static int add_size(size_t *acc, size_t v)
{
  if (v > SIZE_MAX - *acc) return 0;
  *acc += v;
  return 1;
}

/* Size of a LEN field (1-byte key, length varint, body) holding n bytes. */
static int len_field_size(size_t n, size_t *out)
{
  size_t s = 1 + varint_size((uint64_t)n);
  if (!add_size(&s, n)) return 0;
  *out = s;
  return 1;
}

/* Size of a Record's body (without its own key and length). */
static int record_body_size(const kn_kpl_record *r, size_t *out)
{
  size_t s = 1 + varint_size(r->pk_index), d;
  if (r->has_ehk) s += 1 + varint_size(r->ehk_index);
  if (!len_field_size(r->data.len, &d) || !add_size(&s, d)) return 0;
  *out = s;
  return 1;
}

/* Size of the protobuf part alone. */
static int protobuf_size(const kn_kpl_message *msg, size_t *out)
{
  size_t s = 0, f, body, i;
  for (i = 0; i < msg->pk_count; i++)
    if (!len_field_size(msg->pks[i].len, &f) || !add_size(&s, f)) return KN_KPL_ETOOBIG;
  for (i = 0; i < msg->ehk_count; i++)
    if (!len_field_size(msg->ehks[i].len, &f) || !add_size(&s, f)) return KN_KPL_ETOOBIG;
  for (i = 0; i < msg->record_count; i++) {
    if (kn_kpl_record_check(msg, i) != KN_KPL_OK) return KN_KPL_EINDEX;
    if (!record_body_size(&msg->records[i], &body) || !len_field_size(body, &f) ||
        !add_size(&s, f))
      return KN_KPL_ETOOBIG;
  }
  *out = s;
  return KN_KPL_OK;
}

int kn_kpl_encoded_size(const kn_kpl_message *msg, size_t *size)
{
  size_t s;
  int rc = protobuf_size(msg, &s);
  if (rc != KN_KPL_OK) return rc;
  if (!add_size(&s, KN_KPL_OVERHEAD)) return KN_KPL_ETOOBIG;
  *size = s;
  return KN_KPL_OK;
}

static uint8_t *put_len_field(uint8_t *p, uint8_t key, const kn_kpl_bytes *b)
{
  *p++ = key;
  p = put_varint(p, (uint64_t)b->len);
  if (b->len > 0) memcpy(p, b->ptr, b->len);
  return p + b->len;
}

int kn_kpl_encode(const kn_kpl_message *msg, uint8_t *out, size_t out_len, size_t *written)
{
  size_t pb_len, i;
  uint8_t *p, *pb;
  int rc = protobuf_size(msg, &pb_len);
  if (rc != KN_KPL_OK) return rc;
  if (pb_len > SIZE_MAX - KN_KPL_OVERHEAD) return KN_KPL_ETOOBIG;
  if (out_len < pb_len + KN_KPL_OVERHEAD) return KN_KPL_ESPACE;

  memcpy(out, kn_kpl_magic, KN_KPL_MAGIC_LEN);
  pb = p = out + KN_KPL_MAGIC_LEN;
  for (i = 0; i < msg->pk_count; i++) p = put_len_field(p, TAG_PK_TABLE, &msg->pks[i]);
  for (i = 0; i < msg->ehk_count; i++) p = put_len_field(p, TAG_EHK_TABLE, &msg->ehks[i]);
  for (i = 0; i < msg->record_count; i++) {
    const kn_kpl_record *r = &msg->records[i];
    size_t body = 0;
    record_body_size(r, &body); /* cannot fail: protobuf_size checked it */
    *p++ = TAG_RECORDS;
    p = put_varint(p, (uint64_t)body);
    *p++ = TAG_PK_INDEX;
    p = put_varint(p, r->pk_index);
    if (r->has_ehk) {
      *p++ = TAG_EHK_INDEX;
      p = put_varint(p, r->ehk_index);
    }
    p = put_len_field(p, TAG_DATA, &r->data);
  }
  kn_md5(pb, pb_len, p);
  *written = pb_len + KN_KPL_OVERHEAD;
  return KN_KPL_OK;
}
