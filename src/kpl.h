/* kpl.h - the KPL aggregated-record format: magic F3 89 9A C2, then a
 * protobuf AggregatedRecord, then the 16-byte MD5 of those protobuf bytes
 * (amazon-kinesis-producer aggregation-format.md, messages.proto). An
 * encoder and a strict, bounds-checked decoder for exactly the messages
 * AggregatedRecord, Record and Tag; unknown fields are skipped by wire type.
 * No Lua, no I/O, no allocation: the caller lends every array and buffer. */
#ifndef KN_KPL_H
#define KN_KPL_H

#include <stddef.h>
#include <stdint.h>

#define KN_KPL_MAGIC_LEN 4
#define KN_KPL_DIGEST_LEN 16
/* Bytes an aggregate adds around its protobuf: magic + MD5. */
#define KN_KPL_OVERHEAD (KN_KPL_MAGIC_LEN + KN_KPL_DIGEST_LEN)

/* The four magic bytes, F3 89 9A C2. */
extern const uint8_t kn_kpl_magic[KN_KPL_MAGIC_LEN];

/* Status codes: 0 is success, every error is negative. */
enum {
  KN_KPL_OK = 0,
  KN_KPL_ENOTAGG = -1,   /* unwrap: no magic, or not more than 16 bytes after it */
  KN_KPL_ECHECKSUM = -2, /* unwrap: the trailing MD5 is not that of the protobuf */
  KN_KPL_EPARSE = -3,    /* not a protobuf encoding: truncated varint or field,
                            length past the end, bad tag or wire type, group
                            not closed or nested too deep */
  KN_KPL_EREQUIRED = -4, /* a proto2 required field is missing */
  KN_KPL_EINDEX = -5,    /* encode: a key index outside its table */
  KN_KPL_ESPACE = -6,    /* a lent array or output buffer is too small */
  KN_KPL_ETOOBIG = -7    /* encode: the size does not fit in size_t */
};

/* A borrowed byte range; ptr may be NULL when len is 0. */
typedef struct kn_kpl_bytes {
  const uint8_t *ptr;
  size_t len;
} kn_kpl_bytes;

/* One user record (message Record). Indexes are the 0-based wire values;
 * ehk_index means something only when has_ehk. Tags are validated by the
 * decoder (a Tag needs its key) but not kept, and never encoded. */
typedef struct kn_kpl_record {
  uint64_t pk_index;
  uint64_t ehk_index;
  int has_ehk;
  kn_kpl_bytes data;
} kn_kpl_record;

/* One AggregatedRecord as three arrays, all owned by the caller. The byte
 * ranges borrow from whatever the caller pointed them at (the encoder's
 * inputs, or the decoder's input buffer, which must outlive them). */
typedef struct kn_kpl_message {
  kn_kpl_bytes *pks;        /* partition_key_table */
  size_t pk_count;
  kn_kpl_bytes *ehks;       /* explicit_hash_key_table */
  size_t ehk_count;
  kn_kpl_record *records;   /* records */
  size_t record_count;
} kn_kpl_message;

/* How many entries each array of a message needs. */
typedef struct kn_kpl_counts {
  size_t pks, ehks, records;
} kn_kpl_counts;

/* A static English text for a status code; never NULL. */
const char *kn_kpl_strerror(int status);

/* Checks the framing of len bytes at data (caller's; NULL only if len is 0)
 * the way the KCL does: KN_KPL_ENOTAGG unless it starts with the magic and
 * has more than KN_KPL_DIGEST_LEN bytes after it, KN_KPL_ECHECKSUM unless
 * the last 16 bytes are the MD5 of the bytes between. On success *pb and
 * *pb_len give the protobuf slice (inside data, borrowed). */
int kn_kpl_unwrap(const void *data, size_t len, const uint8_t **pb, size_t *pb_len);

/* Validates the protobuf AggregatedRecord of len bytes at pb completely
 * (wire format, unknown fields, required fields of every Record and Tag) and
 * counts its table entries and records into *counts. Reads nothing outside
 * [pb, pb + len). Index ranges are not checked: that is a per-record matter
 * for the caller (kn_kpl_record_check). */
int kn_kpl_scan(const uint8_t *pb, size_t len, kn_kpl_counts *counts);

/* Decodes the same bytes into msg. On entry msg's three arrays are the
 * caller's and pk_count, ehk_count and record_count hold their capacities
 * (kn_kpl_scan's counts suffice); on return the counts are the numbers
 * filled. Every kn_kpl_bytes points into pb. KN_KPL_ESPACE if an array is
 * too small; other errors as kn_kpl_scan. msg is unspecified on error. */
int kn_kpl_parse(const uint8_t *pb, size_t len, kn_kpl_message *msg);

/* KN_KPL_OK when record i of msg has its key indexes inside the tables,
 * else KN_KPL_EINDEX (KN_KPL_ESPACE when i itself is out of range). */
int kn_kpl_record_check(const kn_kpl_message *msg, size_t i);

/* Size of the whole aggregate msg encodes to (magic + protobuf + MD5) in
 * *size. KN_KPL_EINDEX if a record's index is outside its table (such an
 * aggregate would be refused by every reader), KN_KPL_ETOOBIG on overflow. */
int kn_kpl_encoded_size(const kn_kpl_message *msg, size_t *size);

/* Writes the aggregate of msg into out (caller's, out_len bytes) and its
 * length into *written: magic, then the key tables and records in field
 * order (tables deduplicated by the caller; inside a Record field 1 always,
 * field 2 only when has_ehk, field 3 always), then the MD5. This is the
 * byte layout of aws-kinesis-agg. KN_KPL_ESPACE if out_len is too small. */
int kn_kpl_encode(const kn_kpl_message *msg, uint8_t *out, size_t out_len, size_t *written);

#endif
