/* answer.h - a strict scanner for the body of a PutRecords answer: it
 * finds the four members of every Records entry (SequenceNumber, ShardId,
 * ErrorCode, ErrorMessage) without building any table, so the producer can
 * settle a 500-entry answer in one pass. No Lua, no I/O, no allocation:
 * the caller lends every array, and what is found points into the body. */
#ifndef KN_ANSWER_H
#define KN_ANSWER_H

#include <stddef.h>
#include <stdint.h>

/* Member values nested deeper than this are refused; the count is the one
 * kinesis.codec keeps (the top object's member values are at depth 1, the
 * members of a Records entry at depth 3), so both refuse the same bodies. */
#define KN_PR_MAX_DEPTH 500

/* One entry of Records. Each pointer borrows from the body given to
 * kn_pr_scan (valid while the body is): the raw bytes between the quotes,
 * escapes still in; NULL (and length 0) when the member is absent or JSON
 * null. *_esc is 1 when that raw text holds a backslash escape (decode it
 * with kn_json_unescape), 0 when the raw bytes are the value. */
typedef struct kn_pr_entry {
  const char *seq, *shard, *code, *msg;
  uint32_t seq_len, shard_len, code_len, msg_len;
  uint8_t seq_esc, shard_esc, code_esc, msg_esc;
} kn_pr_entry;

/* Scans body[0..len) (borrowed, not modified), a PutRecords answer:
 * a JSON object (RFC 8259, strict: no trailing commas, no comments, valid
 * escapes with \uXXXX surrogates paired, no control character below 0x20
 * inside strings; UTF-8 is not checked, as kinesis.codec does not) whose
 * member "Records" is an array of objects. Of each entry the members
 * SequenceNumber, ShardId, ErrorCode and ErrorMessage are read (a string or
 * null, any other type is an error); every other member, of an entry or of
 * the top object (FailedRecordCount, EncryptionType, unknown ones), is
 * skipped whatever its JSON value, up to KN_PR_MAX_DEPTH. A member named
 * twice: the last wins.
 * Where kinesis.codec reads more than a strict parser would, so does this:
 * an empty body or a JSON null body reads as no Records; an empty {} or []
 * where the other kind of container is expected reads as an empty one.
 * Stricter than kinesis.codec: a null entry in Records is an error (the
 * codec drops it, which shifts every later entry one position).
 * Returns 0 and sets *n to the entries written to out[0..*n) (the caller's
 * array of cap entries); a Records absent or null gives *n = 0. Returns -1
 * when the body is malformed or has more than cap entries: *why (may be
 * NULL) then gets a static English text naming the problem. */
int kn_pr_scan(const char *body, size_t len, kn_pr_entry *out, size_t cap, size_t *n,
               const char **why);

/* kn_pr_scan that also sets *at (may be NULL) to the byte offset in body
 * where a failure was found (left unchanged on success). */
int kn_pr_scan_at(const char *body, size_t len, kn_pr_entry *out, size_t cap, size_t *n,
                  const char **why, size_t *at);

/* Decodes the JSON string escapes of raw[0..len) (a string's raw text as
 * kn_pr_scan returns it) into out, the caller's, with room for len bytes
 * (always enough: no escape is shorter than what it stands for). Returns
 * the bytes written. \uXXXX becomes UTF-8 and surrogate pairs are joined.
 * Text kn_pr_scan did not validate is still read within raw[0..len) and
 * written within out[0..len): a broken escape is copied as it is, a lone
 * surrogate written as its three-byte form. */
size_t kn_json_unescape(const char *raw, size_t len, char *out);

#endif
