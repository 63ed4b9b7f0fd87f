/* fuzz_answer.c - libFuzzer harness for the PutRecords answer scanner
 * (src/answer.c): the producer runs it on every answer body a server
 * sends. Input: any bytes, scanned as a body. Checked:
 *   - a failure leaves no entries and says why (a "PutRecords answer: "
 *     text) and where (an offset inside the body);
 *   - a success fills at most cap entries, the same with more room, and
 *     fails with one slot fewer than it filled;
 *   - every field found lies inside the body, between two quotes, holds no
 *     raw control character, and is flagged escaped exactly when it holds
 *     a backslash;
 *   - kn_json_unescape of an escaped field writes no more than its raw
 *     length (into a buffer of exactly that size), of a plain one the same
 *     bytes; of the whole input (not validated) it stays in bounds too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"

#define CAP 8
#define PREFIX "PutRecords answer: "

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, size_t a, size_t b)
{
  fprintf(stderr, "fuzz_answer: %s (%zu, %zu)\n", what, a, b);
  abort();
}

static void check_field(const char *body, size_t size, const char *raw, uint32_t len, uint8_t esc)
{
  const char *bs;
  char *buf;
  size_t got, i;
  if (raw == NULL) {
    if (len != 0 || esc != 0) die("an absent field with a length or escape flag", len, esc);
    return;
  }
  if (raw <= body || raw + len >= body + size) die("a field outside the body", (size_t)(raw - body), len);
  if (raw[-1] != '"' || raw[len] != '"') die("a field not between quotes", (size_t)(raw - body), len);
  for (i = 0; i < len; i++)
    if ((unsigned char)raw[i] < 0x20) die("a raw control character in a field", i, len);
  bs = memchr(raw, '\\', len);
  if ((bs != NULL) != (esc != 0)) die("the escape flag is wrong", (size_t)(raw - body), esc);
  /* exactly len bytes, so writing past them is a heap overflow ASan sees */
  buf = malloc(len > 0 ? len : 1);
  if (buf == NULL) die("out of memory", len, 0);
  got = kn_json_unescape(raw, len, buf);
  if (got > len) die("unescape wrote more than the raw length", got, len);
  if (!esc && (got != len || memcmp(buf, raw, len) != 0)) die("unescape changed plain text", got, len);
  if (esc && got == len) die("an escape that did not shorten the text", got, len);
  free(buf);
}

static int same(const kn_pr_entry *a, const kn_pr_entry *b)
{
  return a->seq == b->seq && a->shard == b->shard && a->code == b->code && a->msg == b->msg &&
         a->seq_len == b->seq_len && a->shard_len == b->shard_len && a->code_len == b->code_len &&
         a->msg_len == b->msg_len && a->seq_esc == b->seq_esc && a->shard_esc == b->shard_esc &&
         a->code_esc == b->code_esc && a->msg_esc == b->msg_esc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *body = (const char *)data, *why = NULL;
  kn_pr_entry out[CAP], more[4 * CAP];
  size_t n = 12345, n2 = 0, at = (size_t)-1, i;
  char *buf;
  int rc;

  /* unvalidated text: in bounds, never longer */
  buf = malloc(size > 0 ? size : 1);
  if (buf == NULL) die("out of memory", size, 0);
  if (kn_json_unescape(body, size, buf) > size) die("unescape of raw input grew", size, 0);
  free(buf);

  rc = kn_pr_scan_at(body, size, out, CAP, &n, &why, &at);
  if (rc != 0) {
    const char *why2 = NULL;
    if (rc != -1) die("a status other than 0 or -1", (size_t)rc, 0);
    if (n != 0) die("a failure leaves entries", n, 0);
    if (why == NULL || strncmp(why, PREFIX, sizeof PREFIX - 1) != 0) die("a failure without a reason", 0, 0);
    if (at > size) die("a failure offset past the end", at, size);
    if (kn_pr_scan(body, size, out, CAP, &n2, &why2) != -1 || why2 != why)
      die("kn_pr_scan and kn_pr_scan_at differ", n2, 0);
    /* more room changes nothing unless room was the problem */
    if (kn_pr_scan(body, size, more, 4 * CAP, &n2, &why2) == 0 && strstr(why, "room") == NULL)
      die("more room makes a malformed body well-formed", n2, 0);
    return 0;
  }
  if (why != NULL || at != (size_t)-1) die("a success sets why or at", 0, 0);
  if (n > CAP) die("more entries than room", n, CAP);
  for (i = 0; i < n; i++) {
    const kn_pr_entry *e = &out[i];
    check_field(body, size, e->seq, e->seq_len, e->seq_esc);
    check_field(body, size, e->shard, e->shard_len, e->shard_esc);
    check_field(body, size, e->code, e->code_len, e->code_esc);
    check_field(body, size, e->msg, e->msg_len, e->msg_esc);
  }
  if (kn_pr_scan(body, size, more, 4 * CAP, &n2, &why) != 0 || n2 != n)
    die("more room gives another answer", n2, n);
  for (i = 0; i < n; i++)
    if (!same(&out[i], &more[i])) die("more room gives other entries", i, n);
  if (n > 0 && kn_pr_scan(body, size, more, n - 1, &n2, &why) == 0)
    die("one slot fewer than the entries found is enough", n, n2);
  return 0;
}
