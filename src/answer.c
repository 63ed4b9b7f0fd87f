/* answer.c - the PutRecords answer scanner (answer.h): one forward pass
 * over the body, strings found sixteen or eight bytes a step, the four
 * members of each Records entry kept as pointers into the body. It accepts
 * and refuses what kinesis.codec's decoder (src/l_codec.c) accepts and
 * refuses for this shape, except where answer.h says otherwise; the
 * differential lives in spec/answer_spec.lua and fuzz/fuzz_answer.c. */
#include <string.h>

#include "answer.h"
#include "jsonscan.h"

#define WHY(s) "PutRecords answer: " s

typedef struct scan {
  const char *p, *end;
  const char *why; /* the first failure, static */
  const char *at;  /* where it was found */
} scan;

/* -1, after noting the failure (the first one is the one reported). */
static int fail(scan *s, const char *why, const char *at)
{
  if (s->why == NULL) {
    s->why = why;
    s->at = at;
  }
  return -1;
}

static const char *skip_ws(const char *p, const char *end)
{
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

/* ------------------------------------------------------------- strings */

static int hexval(unsigned char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* The four hex digits at p (the caller checked they are in bounds) as a
 * number, or -1. */
static long hex4(const char *p)
{
  int a = hexval((unsigned char)p[0]), b = hexval((unsigned char)p[1]);
  int c = hexval((unsigned char)p[2]), d = hexval((unsigned char)p[3]);
  if ((a | b | c | d) < 0) return -1;
  return ((long)a << 12) | ((long)b << 8) | ((long)c << 4) | (long)d;
}

/* fail() for the functions that return a position. */
static const char *fail_p(scan *s, const char *why, const char *at)
{
  fail(s, why, at);
  return NULL;
}

/* The escape at p (on its backslash): the byte after it, or NULL. A high
 * surrogate must be followed by an escaped low one, a low one must not
 * stand alone (the rules of kinesis.codec). */
static const char *escape(scan *s, const char *p)
{
  long cp, lo;
  if (s->end - p < 2) return fail_p(s, WHY("unterminated string"), s->end);
  switch (p[1]) {
  case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
    return p + 2;
  case 'u':
    if (s->end - p < 6 || (cp = hex4(p + 2)) < 0) return fail_p(s, WHY("bad \\u escape"), p);
    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail_p(s, WHY("lone low surrogate"), p);
    if (cp < 0xD800 || cp > 0xDBFF) return p + 6;
    if (s->end - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = hex4(p + 8)) < 0xDC00 ||
        lo > 0xDFFF)
      return fail_p(s, WHY("unpaired surrogate"), p);
    return p + 12;
  default:
    return fail_p(s, WHY("bad escape"), p);
  }
}

/* The string at s->p (its opening quote): *raw, *len its bytes between the
 * quotes, *esc 1 when they hold an escape. 0 ok, -1 malformed. */
static int read_string(scan *s, const char **raw, size_t *len, int *esc)
{
  const char *start = s->p + 1, *p = start, *end = s->end;
  int e = 0;
  for (;;) {
    p = kn_json_find_special(p, end);
    if (p >= end) return fail(s, WHY("unterminated string"), end);
    if (*p == '"') break;
    if (*p != '\\') return fail(s, WHY("control character in a string"), p);
    e = 1;
    if ((p = escape(s, p)) == NULL) return -1;
  }
  *raw = start;
  *len = (size_t)(p - start);
  *esc = e;
  s->p = p + 1;
  return 0;
}

/* ------------------------------------------------------- other values */

static int is_digit(char c)
{
  return c >= '0' && c <= '9';
}

/* A number by the RFC 8259 grammar (its value is never needed). */
static int skip_number(scan *s)
{
  const char *p = s->p, *end = s->end;
  if (p < end && *p == '-') p++;
  if (p >= end || !is_digit(*p)) return fail(s, WHY("bad number"), p);
  if (*p == '0') p++;
  else
    while (p < end && is_digit(*p)) p++;
  if (p < end && *p == '.') {
    p++;
    if (p >= end || !is_digit(*p)) return fail(s, WHY("bad number"), p);
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return fail(s, WHY("bad number"), p);
    while (p < end && is_digit(*p)) p++;
  }
  s->p = p;
  return 0;
}

static int literal(scan *s, const char *lit, size_t n)
{
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
    return fail(s, WHY("unexpected character"), s->p);
  s->p += n;
  return 0;
}

/* Skips one JSON value whose depth is `depth` (see KN_PR_MAX_DEPTH), and
 * all it holds. Iterative: the kind of each open container is one bit. */
static int skip_value(scan *s, int depth)
{
  uint64_t is_obj[(KN_PR_MAX_DEPTH + 64) / 64] = {0};
  int lvl = 0; /* containers open inside this value */
  const char *raw;
  size_t rlen;
  int esc;
  for (;;) {
    /* a value */
    if (depth + lvl > KN_PR_MAX_DEPTH) return fail(s, WHY("nested too deeply"), s->p);
    s->p = skip_ws(s->p, s->end);
    if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
    switch (*s->p) {
    case '"':
      if (read_string(s, &raw, &rlen, &esc) != 0) return -1;
      break;
    case 't':
      if (literal(s, "true", 4) != 0) return -1;
      break;
    case 'f':
      if (literal(s, "false", 5) != 0) return -1;
      break;
    case 'n':
      if (literal(s, "null", 4) != 0) return -1;
      break;
    case '[':
    case '{': {
      int obj = *s->p == '{';
      s->p = skip_ws(s->p + 1, s->end);
      if (s->p < s->end && *s->p == (obj ? '}' : ']')) {
        s->p++;
        break;
      }
      /* depth + lvl <= KN_PR_MAX_DEPTH and depth >= 1: lvl fits the bits */
      if (obj) is_obj[lvl / 64] |= (uint64_t)1 << (lvl % 64);
      else is_obj[lvl / 64] &= ~((uint64_t)1 << (lvl % 64));
      lvl++;
      if (!obj) continue;
      goto member_name;
    }
    default:
      if (*s->p != '-' && !is_digit(*s->p)) return fail(s, WHY("unexpected character"), s->p);
      if (skip_number(s) != 0) return -1;
      break;
    }
    /* after a value: close what ends here, or go on to the next one */
    for (;;) {
      int obj;
      if (lvl == 0) return 0;
      obj = (int)((is_obj[(lvl - 1) / 64] >> ((lvl - 1) % 64)) & 1);
      s->p = skip_ws(s->p, s->end);
      if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
      if (*s->p == ',') {
        s->p++;
        if (obj) goto member_name;
        break;
      }
      if (*s->p != (obj ? '}' : ']')) return fail(s, WHY("expected ',' or a closing bracket"), s->p);
      s->p++;
      lvl--;
    }
    continue;
  member_name:
    s->p = skip_ws(s->p, s->end);
    if (s->p >= s->end || *s->p != '"') return fail(s, WHY("expected a member name"), s->p);
    if (read_string(s, &raw, &rlen, &esc) != 0) return -1;
    s->p = skip_ws(s->p, s->end);
    if (s->p >= s->end || *s->p != ':') return fail(s, WHY("expected ':'"), s->p);
    s->p++;
  }
}

/* ----------------------------------------------------------- members */

enum { M_OTHER, M_SEQ, M_SHARD, M_CODE, M_MSG, M_RECORDS };

static int member_of(const char *k, size_t n)
{
  switch (n) {
  case 7:
    if (memcmp(k, "ShardId", 7) == 0) return M_SHARD;
    if (memcmp(k, "Records", 7) == 0) return M_RECORDS;
    return M_OTHER;
  case 9: return memcmp(k, "ErrorCode", 9) == 0 ? M_CODE : M_OTHER;
  case 12: return memcmp(k, "ErrorMessage", 12) == 0 ? M_MSG : M_OTHER;
  case 14: return memcmp(k, "SequenceNumber", 14) == 0 ? M_SEQ : M_OTHER;
  default: return M_OTHER;
  }
}

/* The longest raw text that may still unescape to a known name: 14 bytes,
 * each at most a six-byte \uXXXX. */
#define NAME_RAW_MAX (14 * 6)

/* Which member a name read by read_string is; escaped names compare by
 * their decoded bytes, as kinesis.codec compares them. */
static int member_named(const char *raw, size_t len, int esc)
{
  char buf[NAME_RAW_MAX];
  if (!esc) return member_of(raw, len);
  if (len > NAME_RAW_MAX) return M_OTHER;
  return member_of(buf, kn_json_unescape(raw, len, buf));
}

/* After the member name and ':' of a read member: its value, a string or
 * null, into *v, *vlen, *vesc. */
static int read_field(scan *s, const char *what, const char **v, uint32_t *vlen, uint8_t *vesc)
{
  const char *raw;
  size_t len;
  int esc;
  s->p = skip_ws(s->p, s->end);
  if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
  if (*s->p == 'n') {
    if (literal(s, "null", 4) != 0) return -1;
    *v = NULL;
    *vlen = 0;
    *vesc = 0;
    return 0;
  }
  if (*s->p != '"') return fail(s, what, s->p);
  if (read_string(s, &raw, &len, &esc) != 0) return -1;
  if (len > UINT32_MAX) return fail(s, WHY("a string longer than 4 GiB"), raw);
  *v = raw;
  *vlen = (uint32_t)len;
  *vesc = (uint8_t)esc;
  return 0;
}

/* After ',' or '}' is the only way on: 1 another member follows, 0 the
 * object ended, -1 neither. */
static int next_member(scan *s)
{
  s->p = skip_ws(s->p, s->end);
  if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
  if (*s->p == ',') {
    s->p++;
    return 1;
  }
  if (*s->p == '}') {
    s->p++;
    return 0;
  }
  return fail(s, WHY("expected ',' or '}'"), s->p);
}

/* A member name and its ':'; *m gets which member it is. At s->p: the
 * place a member name must start (white space first allowed). */
static int member_name(scan *s, int *m)
{
  const char *raw;
  size_t len;
  int esc;
  s->p = skip_ws(s->p, s->end);
  if (s->p >= s->end || *s->p != '"') return fail(s, WHY("expected a member name"), s->p);
  if (read_string(s, &raw, &len, &esc) != 0) return -1;
  s->p = skip_ws(s->p, s->end);
  if (s->p >= s->end || *s->p != ':') return fail(s, WHY("expected ':'"), s->p);
  s->p++;
  *m = member_named(raw, len, esc);
  return 0;
}

/* An entry object, s->p on its '{', into *e. */
static int read_entry(scan *s, kn_pr_entry *e)
{
  int m, rc;
  memset(e, 0, sizeof *e);
  s->p = skip_ws(s->p + 1, s->end);
  if (s->p < s->end && *s->p == '}') {
    s->p++;
    return 0;
  }
  do {
    if (member_name(s, &m) != 0) return -1;
    switch (m) {
    case M_SEQ:
      rc = read_field(s, WHY("SequenceNumber is neither a string nor null"), &e->seq, &e->seq_len,
                      &e->seq_esc);
      break;
    case M_SHARD:
      rc = read_field(s, WHY("ShardId is neither a string nor null"), &e->shard, &e->shard_len,
                      &e->shard_esc);
      break;
    case M_CODE:
      rc = read_field(s, WHY("ErrorCode is neither a string nor null"), &e->code, &e->code_len,
                      &e->code_esc);
      break;
    case M_MSG:
      rc = read_field(s, WHY("ErrorMessage is neither a string nor null"), &e->msg, &e->msg_len,
                      &e->msg_esc);
      break;
    default:
      /* the top object's value is depth 1, Records 2, an entry's members 3 */
      rc = skip_value(s, 3);
      break;
    }
    if (rc != 0) return -1;
  } while ((rc = next_member(s)) == 1);
  return rc;
}

/* An empty container of the other kind, s->p on its opening bracket:
 * kinesis.codec reads [] for an object and {} for an array (what an
 * encoder that cannot tell them apart writes). 0 when it is one. */
static int empty_other(scan *s, char close, const char *why)
{
  const char *q = skip_ws(s->p + 1, s->end);
  if (q >= s->end || *q != close) return fail(s, why, s->p);
  s->p = q + 1;
  return 0;
}

/* The value of Records into out[0..*n). */
static int read_records(scan *s, kn_pr_entry *out, size_t cap, size_t *n)
{
  static const char *const not_array = WHY("Records is neither an array nor null");
  static const char *const not_object = WHY("an entry of Records is not an object");
  size_t count = 0;
  *n = 0;
  s->p = skip_ws(s->p, s->end);
  if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
  switch (*s->p) {
  case 'n': return literal(s, "null", 4);
  case '{': return empty_other(s, '}', not_array);
  case '[': break;
  default: return fail(s, not_array, s->p);
  }
  s->p = skip_ws(s->p + 1, s->end);
  if (s->p < s->end && *s->p == ']') {
    s->p++;
    return 0;
  }
  for (;;) {
    s->p = skip_ws(s->p, s->end);
    if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
    if (*s->p == '{' || *s->p == '[') {
      if (count == cap) return fail(s, WHY("more Records entries than room for"), s->p);
      if (*s->p == '{') {
        if (read_entry(s, &out[count]) != 0) return -1;
      } else {
        if (empty_other(s, ']', not_object) != 0) return -1;
        memset(&out[count], 0, sizeof out[count]);
      }
      count++;
      *n = count;
    } else if (*s->p == 'n') {
      /* kinesis.codec drops it; every later entry would answer for the
       * record before its own */
      return fail(s, WHY("an entry of Records is null"), s->p);
    } else {
      return fail(s, not_object, s->p);
    }
    s->p = skip_ws(s->p, s->end);
    if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
    if (*s->p == ']') {
      s->p++;
      return 0;
    }
    if (*s->p != ',') return fail(s, WHY("expected ',' or ']'"), s->p);
    s->p++;
  }
}

/* ---------------------------------------------------------------- API */

static int scan_body(scan *s, kn_pr_entry *out, size_t cap, size_t *n)
{
  int m, rc;
  *n = 0;
  s->p = skip_ws(s->p, s->end);
  if (s->p >= s->end) return fail(s, WHY("unexpected end"), s->p);
  switch (*s->p) {
  case 'n':
    rc = literal(s, "null", 4);
    break;
  case '[':
    rc = empty_other(s, ']', WHY("not a JSON object"));
    break;
  case '{':
    s->p = skip_ws(s->p + 1, s->end);
    if (s->p < s->end && *s->p == '}') {
      s->p++;
      rc = 0;
      break;
    }
    do {
      if (member_name(s, &m) != 0) return -1;
      rc = m == M_RECORDS ? read_records(s, out, cap, n) : skip_value(s, 1);
      if (rc != 0) return -1;
    } while ((rc = next_member(s)) == 1);
    break;
  default:
    return fail(s, WHY("not a JSON object"), s->p);
  }
  if (rc != 0) return -1;
  s->p = skip_ws(s->p, s->end);
  if (s->p != s->end) return fail(s, WHY("bytes after the value"), s->p);
  return 0;
}

int kn_pr_scan_at(const char *body, size_t len, kn_pr_entry *out, size_t cap, size_t *n,
                  const char **why, size_t *at)
{
  scan s;
  *n = 0;
  /* an empty body: no Records, as kinesis.codec reads it */
  if (len == 0) return 0;
  s.p = body;
  s.end = body + len;
  s.why = NULL;
  s.at = NULL;
  if (scan_body(&s, out, cap, n) == 0) return 0;
  *n = 0;
  if (why != NULL) *why = s.why != NULL ? s.why : WHY("malformed");
  if (at != NULL) *at = s.at != NULL ? (size_t)(s.at - body) : 0;
  return -1;
}

int kn_pr_scan(const char *body, size_t len, kn_pr_entry *out, size_t cap, size_t *n,
               const char **why)
{
  return kn_pr_scan_at(body, len, out, cap, n, why, NULL);
}

/* ------------------------------------------------------------ unescape */

static size_t put_utf8(char *o, unsigned long cp)
{
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

size_t kn_json_unescape(const char *raw, size_t len, char *out)
{
  const char *p = raw, *end = raw + len;
  size_t o = 0;
  /* every step writes no more than it reads: out never overtakes p */
  while (p < end) {
    const char *b = memchr(p, '\\', (size_t)(end - p));
    long cp, lo;
    if (b == NULL) b = end;
    if (b > p) {
      memmove(out + o, p, (size_t)(b - p));
      o += (size_t)(b - p);
      p = b;
    }
    if (p >= end) break;
    if (end - p < 2) {
      out[o++] = *p++;
      continue;
    }
    switch (p[1]) {
    case '"': out[o++] = '"'; p += 2; continue;
    case '\\': out[o++] = '\\'; p += 2; continue;
    case '/': out[o++] = '/'; p += 2; continue;
    case 'b': out[o++] = '\b'; p += 2; continue;
    case 'f': out[o++] = '\f'; p += 2; continue;
    case 'n': out[o++] = '\n'; p += 2; continue;
    case 'r': out[o++] = '\r'; p += 2; continue;
    case 't': out[o++] = '\t'; p += 2; continue;
    case 'u':
      if (end - p >= 6 && (cp = hex4(p + 2)) >= 0) {
        p += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
            (lo = hex4(p + 2)) >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
        o += put_utf8(out + o, (unsigned long)cp);
        continue;
      }
      break;
    default:
      break;
    }
    /* not an escape: the backslash stays as it is */
    out[o++] = *p++;
  }
  return o;
}
