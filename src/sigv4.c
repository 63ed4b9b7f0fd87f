/* sigv4.c - SigV4 canonical request, string to sign, signing-key
 * derivation (cached per secret/date/region/service) and Authorization,
 * checked stage by stage against the official AWS suite. The Kinesis case
 * (POST /, no query, a handful of headers) takes the short paths. */
#include "sigv4.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define KN_ALGORITHM "AWS4-HMAC-SHA256"
#define KN_MAX_TIME INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

struct kn_sigv4_entry {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
  size_t order; /* position of appearance: keeps repeated headers in order */
};

struct kn_sigv4_qpair {
  size_t key_off, key_len, val_off, val_len; /* into s->work while building */
  const char *key, *val;                     /* resolved before sorting */
};

/* ---- crypto ---------------------------------------------------------- */

int kn_sha256(const void *data, size_t len, unsigned char out[KN_SHA256_LEN])
{
  unsigned int n = 0;
  if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) || n != KN_SHA256_LEN) {
    ERR_clear_error();
    return KN_SIGV4_ECRYPTO;
  }
  return KN_SIGV4_OK;
}

int kn_hmac_sha256(const void *key, size_t key_len, const void *msg,
                   size_t msg_len, unsigned char out[KN_SHA256_LEN])
{
  size_t n = 0;
  if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, msg,
                msg_len, out, KN_SHA256_LEN, &n) == NULL || n != KN_SHA256_LEN) {
    ERR_clear_error();
    return KN_SIGV4_ECRYPTO;
  }
  return KN_SIGV4_OK;
}

int kn_hex_encode(const unsigned char *in, size_t n, char *out)
{
  static const char digits[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  return KN_SIGV4_OK;
}

/* ---- buffers --------------------------------------------------------- */

/* kn_buf with a sticky failure: a signature is built by many appends and
 * checked for out of memory once at the end of each stage. */
static int buf_reserve(kn_sigv4_buf *b, size_t extra)
{
  if (b->failed) return -1;
  if (kn_buf_reserve(&b->b, extra) != 0) {
    b->failed = 1;
    return -1;
  }
  return 0;
}

static void buf_put(kn_sigv4_buf *b, const char *p, size_t n)
{
  if (b->failed || n == 0) return;
  if (kn_buf_append(&b->b, p, n) != 0) b->failed = 1;
}

static void buf_puts(kn_sigv4_buf *b, const char *s)
{
  buf_put(b, s, strlen(s));
}

static void buf_putc(kn_sigv4_buf *b, char c)
{
  buf_put(b, &c, 1);
}

static void buf_reset(kn_sigv4_buf *b)
{
  kn_buf_reset(&b->b);
  b->failed = 0;
}

/* The buffers held the secret key and the session token: wiped first. */
static void buf_free(kn_sigv4_buf *b)
{
  if (b->b.data != NULL) OPENSSL_cleanse(b->b.data, b->b.cap);
  kn_buf_free(&b->b);
  b->failed = 0;
}

/* ---- character classes ----------------------------------------------- */

static int is_unreserved(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 9110 token character (header names, methods). */
static int is_tchar(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static unsigned char lower(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int hexval(unsigned char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Case-insensitive equality of a header name with a lowercase literal. */
static int name_is(const char *name, size_t len, const char *lit)
{
  size_t i;
  for (i = 0; i < len; i++)
    if (lit[i] == '\0' || lower((unsigned char)name[i]) != (unsigned char)lit[i]) return 0;
  return lit[len] == '\0';
}

static int name_has_prefix(const char *name, size_t len, const char *lit)
{
  size_t i;
  for (i = 0; lit[i] != '\0'; i++)
    if (i >= len || lower((unsigned char)name[i]) != (unsigned char)lit[i]) return 0;
  return 1;
}

/* Headers the AWS SDKs never sign, because proxies and HTTP stacks add,
 * drop or rewrite them (@smithy/signature-v4 constants.ts
 * UNSIGNABLE_HEADERS / PROXY_HEADER_PATTERN / SEC_HEADER_PATTERN). */
static int is_unsignable(const char *name, size_t len)
{
  static const char *const names[] = {
    "cache-control", "connection", "expect", "from", "keep-alive",
    "max-forwards", "pragma", "referer", "te", "trailer",
    "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id", NULL
  };
  size_t i;
  for (i = 0; names[i] != NULL; i++)
    if (name_is(name, len, names[i])) return 1;
  return name_has_prefix(name, len, "proxy-") || name_has_prefix(name, len, "sec-");
}

/* ---- validation ------------------------------------------------------ */

static int fail(kn_sigv4_signer *s, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  return KN_SIGV4_EINVAL;
}

/* NUL, and CR/LF other than an obsolete fold (CRLF or LF, then SP/HTAB),
 * would let a value end the header line: header injection. */
static int value_is_safe(const char *v, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c == '\0') return 0;
    if (c == '\r') {
      if (i + 1 >= n || v[i + 1] != '\n') return 0;
      i++;
      c = '\n';
    }
    if (c == '\n' && (i + 1 >= n || (v[i + 1] != ' ' && v[i + 1] != '\t'))) return 0;
  }
  return 1;
}

static int has_crlfnul(const char *v, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if (v[i] == '\0' || v[i] == '\r' || v[i] == '\n') return 1;
  return 0;
}

/* Region and service: 1..KN_SIGV4_NAME_MAX of [A-Za-z0-9._-]. */
static int is_scope_part(const char *p, size_t n)
{
  size_t i;
  if (p == NULL || n == 0 || n > KN_SIGV4_NAME_MAX) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (!(is_unreserved(c) && c != '~')) return 0;
  }
  return 1;
}

/* Access key: visible ASCII without '/' and ',' (they delimit the
 * Credential field of the Authorization header). */
static int is_access_key(const char *p, size_t n)
{
  size_t i;
  if (p == NULL || n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',') return 0;
  }
  return 1;
}

/* A payload hash: 64 lowercase hex digits, or a marker such as
 * UNSIGNED-PAYLOAD / STREAMING-... (uppercase letters, digits, '-'). */
static int is_payload_hash(const char *p, size_t n)
{
  size_t i;
  int hex = (n == 64), marker = (n > 0 && n <= 64);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) hex = 0;
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) marker = 0;
  }
  return hex || marker;
}

/* ---- canonical pieces ------------------------------------------------ */

/* Writes v (0 <= v < 10^width) as exactly `width` decimal digits. */
static void put_digits(char *p, int64_t v, int width)
{
  while (width-- > 0) {
    p[width] = (char)('0' + v % 10);
    v /= 10;
  }
}

/* "YYYYMMDDTHHMMSSZ" for t seconds since the epoch (t >= 0), proleptic
 * Gregorian calendar (days-to-civil conversion, no libc time zone). */
static void format_amz_date(int64_t t, char out[17])
{
  int64_t days = t / 86400, secs = t % 86400;
  int64_t z = days + 719468, era = z / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  int64_t y = yoe + era * 400 + (m <= 2);
  put_digits(out, y, 4);
  put_digits(out + 4, m, 2);
  put_digits(out + 6, d, 2);
  out[8] = 'T';
  put_digits(out + 9, secs / 3600, 2);
  put_digits(out + 11, secs / 60 % 60, 2);
  put_digits(out + 13, secs % 60, 2);
  out[15] = 'Z';
  out[16] = '\0';
}

/* Appends byte c URI-encoded (RFC 3986 unreserved kept, else %XX). */
static void put_encoded(kn_sigv4_buf *b, unsigned char c, int keep_slash)
{
  static const char digits[] = "0123456789ABCDEF";
  if (is_unreserved(c) || (keep_slash && c == '/')) {
    buf_putc(b, (char)c);
  } else {
    char e[3];
    e[0] = '%';
    e[1] = digits[c >> 4];
    e[2] = digits[c & 15];
    buf_put(b, e, 3);
  }
}

/* Canonical URI: the wire path, optionally with "." / ".." and empty
 * segments removed (a trailing '/' kept, as botocore and smithy do),
 * then every byte but unreserved and '/' percent-encoded once more. */
static void put_canonical_uri(kn_sigv4_signer *s, const char *path, size_t n,
                              int normalize)
{
  kn_sigv4_buf *w = &s->work;
  const char *p = path;
  size_t i;

  if (n == 0 || (n == 1 && path[0] == '/')) {
    buf_putc(&s->creq, '/');
    return;
  }
  if (normalize) {
    size_t start = 0;
    buf_reset(w);
    while (start <= n) {
      size_t end = start;
      while (end < n && path[end] != '/') end++;
      if (end - start == 2 && path[start] == '.' && path[start + 1] == '.') {
        while (w->b.len > 0 && w->b.data[w->b.len - 1] != '/') w->b.len--;
        if (w->b.len > 0) w->b.len--; /* drop the '/' that began the segment */
      } else if (end > start && !(end - start == 1 && path[start] == '.')) {
        buf_putc(w, '/');
        buf_put(w, path + start, end - start);
      }
      start = end + 1;
    }
    if (w->failed) {
      s->creq.failed = 1;
      return;
    }
    if (w->b.len == 0) {
      buf_putc(&s->creq, '/');
      return;
    }
    if (path[n - 1] == '/') buf_putc(w, '/');
    if (w->failed) {
      s->creq.failed = 1;
      return;
    }
    p = w->b.data;
    n = w->b.len;
  }
  for (i = 0; i < n; i++) put_encoded(&s->creq, (unsigned char)p[i], 1);
}

/* Decodes valid %XX escapes of raw[0..n) and appends the RFC 3986
 * encoding of the result (so "%e1" and "\xe1" both become "%E1"). A '%'
 * not followed by two hex digits is a literal '%'; '+' stays a '+'. */
static void put_query_component(kn_sigv4_buf *b, const char *raw, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)raw[i];
    if (c == '%' && i + 2 < n && hexval((unsigned char)raw[i + 1]) >= 0 &&
        hexval((unsigned char)raw[i + 2]) >= 0) {
      c = (unsigned char)(hexval((unsigned char)raw[i + 1]) << 4 |
                          hexval((unsigned char)raw[i + 2]));
      i += 2;
    }
    put_encoded(b, c, 0);
  }
}

static int qpair_cmp(const void *a, const void *b)
{
  const struct kn_sigv4_qpair *x = (const struct kn_sigv4_qpair *)a;
  const struct kn_sigv4_qpair *y = (const struct kn_sigv4_qpair *)b;
  size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
  int c = memcmp(x->key, y->key, n);
  if (c != 0) return c;
  if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
  n = x->val_len < y->val_len ? x->val_len : y->val_len;
  c = memcmp(x->val, y->val, n);
  if (c != 0) return c;
  if (x->val_len != y->val_len) return x->val_len < y->val_len ? -1 : 1;
  return 0;
}

/* Canonical query string: pairs split on '&' and the first '=', each side
 * re-encoded, sorted by encoded key then encoded value (byte order). */
static int put_canonical_query(kn_sigv4_signer *s, const char *q, size_t n)
{
  kn_sigv4_buf *w = &s->work;
  size_t count = 0, pieces = 1, i, start;

  if (q == NULL || n == 0) return KN_SIGV4_OK;
  for (i = 0; i < n; i++) pieces += (q[i] == '&');
  if (pieces > s->qpairs_cap) {
    struct kn_sigv4_qpair *np;
    if (pieces > SIZE_MAX / sizeof *np) return KN_SIGV4_ENOMEM;
    np = (struct kn_sigv4_qpair *)realloc(s->qpairs, pieces * sizeof *np);
    if (np == NULL) return KN_SIGV4_ENOMEM;
    s->qpairs = np;
    s->qpairs_cap = pieces;
  }
  buf_reset(w);
  for (start = 0; start <= n; start = i + 1) {
    size_t eq, end;
    struct kn_sigv4_qpair *qp;
    for (i = start; i < n && q[i] != '&'; i++) {}
    end = i;
    if (end == start) continue; /* "a=1&&b=2": nothing between the '&' */
    for (eq = start; eq < end && q[eq] != '='; eq++) {}
    qp = &s->qpairs[count++];
    qp->key_off = w->b.len;
    put_query_component(w, q + start, eq - start);
    qp->key_len = w->b.len - qp->key_off;
    qp->val_off = w->b.len;
    if (eq < end) put_query_component(w, q + eq + 1, end - eq - 1);
    qp->val_len = w->b.len - qp->val_off;
  }
  if (w->failed) return KN_SIGV4_ENOMEM;
  for (i = 0; i < count; i++) {
    s->qpairs[i].key = w->b.data + s->qpairs[i].key_off;
    s->qpairs[i].val = w->b.data + s->qpairs[i].val_off;
  }
  qsort(s->qpairs, count, sizeof *s->qpairs, qpair_cmp);
  for (i = 0; i < count; i++) {
    if (i > 0) buf_putc(&s->creq, '&');
    buf_put(&s->creq, s->qpairs[i].key, s->qpairs[i].key_len);
    buf_putc(&s->creq, '=');
    buf_put(&s->creq, s->qpairs[i].val, s->qpairs[i].val_len);
  }
  return KN_SIGV4_OK;
}

static int entry_cmp(const void *a, const void *b)
{
  const struct kn_sigv4_entry *x = (const struct kn_sigv4_entry *)a;
  const struct kn_sigv4_entry *y = (const struct kn_sigv4_entry *)b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len, i;
  for (i = 0; i < n; i++) {
    unsigned char cx = lower((unsigned char)x->name[i]);
    unsigned char cy = lower((unsigned char)y->name[i]);
    if (cx != cy) return cx < cy ? -1 : 1;
  }
  if (x->name_len != y->name_len) return x->name_len < y->name_len ? -1 : 1;
  return x->order < y->order ? -1 : (x->order > y->order);
}

static int same_name(const struct kn_sigv4_entry *x, const struct kn_sigv4_entry *y)
{
  size_t i;
  if (x->name_len != y->name_len) return 0;
  for (i = 0; i < x->name_len; i++)
    if (lower((unsigned char)x->name[i]) != lower((unsigned char)y->name[i])) return 0;
  return 1;
}

/* Appends a header value trimmed, with every run of spaces, tabs and line
 * folds collapsed to one space (the suite's get-header-value-trim and
 * get-header-value-multiline). */
static void put_header_value(kn_sigv4_buf *b, const char *v, size_t n)
{
  size_t i;
  int started = 0, space = 0;
  char *o;
  if (n == 0 || buf_reserve(b, n) != 0) return;
  o = b->b.data + b->b.len;
  for (i = 0; i < n; i++) {
    char c = v[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = started;
      continue;
    }
    if (space) *o++ = ' ';
    *o++ = c;
    space = 0;
    started = 1;
  }
  b->b.len = (size_t)(o - b->b.data);
  b->b.data[b->b.len] = '\0'; /* kn_buf keeps its NUL after the bytes */
}

static void put_lower(kn_sigv4_buf *b, const char *p, size_t n)
{
  size_t i;
  if (n == 0 || buf_reserve(b, n) != 0) return;
  for (i = 0; i < n; i++) b->b.data[b->b.len + i] = (char)lower((unsigned char)p[i]);
  b->b.len += n;
  b->b.data[b->b.len] = '\0';
}

/* ---- signer-scoped crypto --------------------------------------------- */

/* OpenSSL 3 looks an algorithm up by name on every implicit use (EVP_sha256(),
 * EVP_Q_mac): the signer fetches SHA-256 and an HMAC context once and keeps
 * them, which makes a signature several times cheaper. Both are freed by
 * kn_sigv4_signer_free. */
static int crypto_ready(kn_sigv4_signer *s)
{
  EVP_MAC *mac = NULL;
  OSSL_PARAM params[2];
  int rc = KN_SIGV4_ECRYPTO;

  if (s->md != NULL && s->mdctx != NULL && s->mac != NULL) return KN_SIGV4_OK;
  if (s->md == NULL && (s->md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL) goto cleanup;
  if (s->mdctx == NULL && (s->mdctx = EVP_MD_CTX_new()) == NULL) goto cleanup;
  if (s->mac == NULL) {
    if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL) goto cleanup;
    if ((s->mac = EVP_MAC_CTX_new(mac)) == NULL) goto cleanup;
    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_CTX_set_params(s->mac, params)) {
      EVP_MAC_CTX_free(s->mac);
      s->mac = NULL;
      goto cleanup;
    }
  }
  rc = KN_SIGV4_OK;
cleanup:
  EVP_MAC_free(mac);
  if (rc != KN_SIGV4_OK) ERR_clear_error();
  return rc;
}

/* One reused digest context: EVP_Digest would allocate and free one per
 * call, which costs more than hashing a short canonical request. */
static int s_sha256(kn_sigv4_signer *s, const void *data, size_t len,
                    unsigned char out[KN_SHA256_LEN])
{
  unsigned int n = 0;
  if (!EVP_DigestInit_ex2(s->mdctx, s->md, NULL) || !EVP_DigestUpdate(s->mdctx, data, len) ||
      !EVP_DigestFinal_ex(s->mdctx, out, &n) || n != KN_SHA256_LEN) {
    ERR_clear_error();
    return KN_SIGV4_ECRYPTO;
  }
  return KN_SIGV4_OK;
}

/* HMAC-SHA256 with the reused context. Keying it is most of the cost of a
 * short message, so when the key is the one it already holds (the signing
 * key of the previous signature, the usual case) it is re-initialised
 * without being keyed again. */
static int s_hmac(kn_sigv4_signer *s, const void *key, size_t key_len,
                  const void *msg, size_t msg_len, unsigned char out[KN_SHA256_LEN])
{
  size_t n = 0;
  int same = s->mac_keyed && key_len == KN_SHA256_LEN &&
             CRYPTO_memcmp(s->mac_key, key, KN_SHA256_LEN) == 0;
  s->mac_keyed = 0;
  if (!EVP_MAC_init(s->mac, same ? NULL : key, same ? 0 : key_len, NULL) ||
      !EVP_MAC_update(s->mac, msg, msg_len) ||
      !EVP_MAC_final(s->mac, out, &n, KN_SHA256_LEN) || n != KN_SHA256_LEN) {
    ERR_clear_error();
    return KN_SIGV4_ECRYPTO;
  }
  return KN_SIGV4_OK;
}

/* s_hmac, then remembers that the context holds `key` (a signing key). */
static int s_hmac_signing(kn_sigv4_signer *s, const unsigned char key[KN_SHA256_LEN],
                          const void *msg, size_t msg_len, unsigned char out[KN_SHA256_LEN])
{
  int rc = s_hmac(s, key, KN_SHA256_LEN, msg, msg_len, out);
  if (rc == KN_SIGV4_OK) {
    memcpy(s->mac_key, key, KN_SHA256_LEN);
    s->mac_keyed = 1;
  }
  return rc;
}

/* ---- signing key ----------------------------------------------------- */

static int derive_key(kn_sigv4_signer *s, const kn_sigv4_request *req, const char date[8],
                      kn_sigv4_buf *w, unsigned char key[KN_SHA256_LEN])
{
  unsigned char k[KN_SHA256_LEN];
  int rc = KN_SIGV4_ENOMEM;

  buf_reset(w);
  buf_put(w, "AWS4", 4);
  buf_put(w, req->secret_key, req->secret_key_len);
  if (w->failed) goto cleanup;
  if ((rc = s_hmac(s, w->b.data, w->b.len, date, 8, k)) != KN_SIGV4_OK) goto cleanup;
  if ((rc = s_hmac(s, k, sizeof k, req->region, req->region_len, k)) != KN_SIGV4_OK)
    goto cleanup;
  if ((rc = s_hmac(s, k, sizeof k, req->service, req->service_len, k)) != KN_SIGV4_OK)
    goto cleanup;
  if ((rc = s_hmac(s, k, sizeof k, "aws4_request", 12, key)) != KN_SIGV4_OK)
    goto cleanup;
  rc = KN_SIGV4_OK;
cleanup:
  OPENSSL_cleanse(k, sizeof k);
  if (w->b.data != NULL) OPENSSL_cleanse(w->b.data, w->b.len);
  buf_reset(w);
  return rc;
}

/* kSigning for (secret, date, region, service), from the cache or freshly
 * derived into the next slot (round robin). */
static int signing_key(kn_sigv4_signer *s, const kn_sigv4_request *req,
                       const char date[8], unsigned char key[KN_SHA256_LEN])
{
  unsigned char digest[KN_SHA256_LEN];
  kn_sigv4_cache_slot *slot;
  int rc, i;

  if ((rc = s_sha256(s, req->secret_key, req->secret_key_len, digest)) != KN_SIGV4_OK)
    return rc;
  for (i = 0; i < KN_SIGV4_CACHE_SLOTS; i++) {
    slot = &s->cache[i];
    if (slot->used && memcmp(slot->date, date, 8) == 0 &&
        slot->region_len == req->region_len &&
        memcmp(slot->region, req->region, req->region_len) == 0 &&
        slot->service_len == req->service_len &&
        memcmp(slot->service, req->service, req->service_len) == 0 &&
        CRYPTO_memcmp(slot->secret_digest, digest, sizeof digest) == 0) {
      memcpy(key, slot->key, KN_SHA256_LEN);
      s->cache_hits++;
      return KN_SIGV4_OK;
    }
  }
  if ((rc = derive_key(s, req, date, &s->work, key)) != KN_SIGV4_OK) return rc;
  s->cache_misses++;
  slot = &s->cache[s->next_slot];
  s->next_slot = (s->next_slot + 1) % KN_SIGV4_CACHE_SLOTS;
  slot->used = 1;
  memcpy(slot->date, date, 8);
  memcpy(slot->secret_digest, digest, sizeof digest);
  memcpy(slot->region, req->region, req->region_len);
  slot->region_len = req->region_len;
  memcpy(slot->service, req->service, req->service_len);
  slot->service_len = req->service_len;
  memcpy(slot->key, key, KN_SHA256_LEN);
  return KN_SIGV4_OK;
}

/* ---- public ---------------------------------------------------------- */

int kn_sigv4_signer_init(kn_sigv4_signer *s)
{
  memset(s, 0, sizeof *s);
  return KN_SIGV4_OK;
}

int kn_sigv4_signer_free(kn_sigv4_signer *s)
{
  buf_free(&s->creq);
  buf_free(&s->sts);
  buf_free(&s->auth);
  buf_free(&s->shdr);
  buf_free(&s->scope);
  buf_free(&s->work);
  free(s->entries);
  free(s->qpairs);
  EVP_MAC_CTX_free(s->mac);
  EVP_MD_CTX_free(s->mdctx);
  EVP_MD_free(s->md);
  OPENSSL_cleanse(s, sizeof *s);
  return kn_sigv4_signer_init(s);
}

const char *kn_sigv4_signer_error(const kn_sigv4_signer *s)
{
  return s->err;
}

/* Checks everything that does not depend on the headers. */
static int check_request(kn_sigv4_signer *s, const kn_sigv4_request *r)
{
  size_t i;
  if (r->method == NULL || r->method_len == 0) return fail(s, "missing method");
  for (i = 0; i < r->method_len; i++)
    if (!is_tchar((unsigned char)r->method[i])) return fail(s, "invalid method");
  if (r->path != NULL && r->path_len > 0) {
    if (r->path[0] != '/') return fail(s, "path must start with '/'");
    if (has_crlfnul(r->path, r->path_len)) return fail(s, "path contains CR, LF or NUL");
  }
  if (r->query != NULL && has_crlfnul(r->query, r->query_len))
    return fail(s, "query contains CR, LF or NUL");
  if (r->region == NULL || r->region_len == 0) return fail(s, "missing region");
  if (!is_scope_part(r->region, r->region_len))
    return fail(s, "invalid region (1 to %d of A-Z a-z 0-9 . _ -)", KN_SIGV4_NAME_MAX);
  if (r->service == NULL || r->service_len == 0) return fail(s, "missing service");
  if (!is_scope_part(r->service, r->service_len))
    return fail(s, "invalid service (1 to %d of A-Z a-z 0-9 . _ -)", KN_SIGV4_NAME_MAX);
  if (r->access_key == NULL || r->access_key_len == 0) return fail(s, "missing access_key");
  if (!is_access_key(r->access_key, r->access_key_len))
    return fail(s, "invalid access_key (visible ASCII except '/' and ',')");
  if (r->secret_key == NULL || r->secret_key_len == 0) return fail(s, "missing secret_key");
  if (r->session_token != NULL && has_crlfnul(r->session_token, r->session_token_len))
    return fail(s, "session_token contains CR, LF or NUL");
  if (r->payload_hash != NULL && !is_payload_hash(r->payload_hash, r->payload_hash_len))
    return fail(s, "invalid payload_hash (64 lowercase hex digits or a marker "
                   "such as UNSIGNED-PAYLOAD)");
  if (r->time < 0 || r->time > KN_MAX_TIME) return fail(s, "time out of range");
  return KN_SIGV4_OK;
}

/* Header names must be tokens, values free of injection, and the headers
 * the signer adds must not be there already. */
static int check_headers(kn_sigv4_signer *s, const kn_sigv4_request *r, int has_token)
{
  size_t i;
  for (i = 0; i < r->header_count; i++) {
    const kn_sigv4_header *h = &r->headers[i];
    size_t k;
    if (h->name == NULL || h->name_len == 0) return fail(s, "header %lu: empty name",
                                                          (unsigned long)i + 1);
    for (k = 0; k < h->name_len; k++)
      if (!is_tchar((unsigned char)h->name[k]))
        return fail(s, "header %lu: invalid name (CR, LF, NUL, space or separator)",
                    (unsigned long)i + 1);
    if (h->value_len > 0 && (h->value == NULL || !value_is_safe(h->value, h->value_len)))
      return fail(s, "header '%.*s': value contains CR, LF or NUL",
                  (int)(h->name_len > 64 ? 64 : h->name_len), h->name);
    if (name_is(h->name, h->name_len, "x-amz-date") ||
        name_is(h->name, h->name_len, "authorization") ||
        (has_token && name_is(h->name, h->name_len, "x-amz-security-token")) ||
        (r->sign_body && name_is(h->name, h->name_len, "x-amz-content-sha256")))
      return fail(s, "header '%.*s' is set by the signer",
                  (int)(h->name_len > 64 ? 64 : h->name_len), h->name);
  }
  return KN_SIGV4_OK;
}

/* Fills s->entries with the caller's signable headers followed by the
 * signer's own, in order of appearance; sets *count. */
static int collect_headers(kn_sigv4_signer *s, const kn_sigv4_request *r,
                           const char *amz_date, const char *payload_hash,
                           int has_token, size_t *count)
{
  size_t i, n = 0, max = r->header_count + 3;
  struct kn_sigv4_entry *e;

  if (max > s->entries_cap) {
    if (max > SIZE_MAX / sizeof *e) return KN_SIGV4_ENOMEM;
    e = (struct kn_sigv4_entry *)realloc(s->entries, max * sizeof *e);
    if (e == NULL) return KN_SIGV4_ENOMEM;
    s->entries = e;
    s->entries_cap = max;
  }
  for (i = 0; i < r->header_count; i++) {
    const kn_sigv4_header *h = &r->headers[i];
    if (is_unsignable(h->name, h->name_len)) continue;
    e = &s->entries[n];
    e->name = h->name;
    e->name_len = h->name_len;
    e->value = h->value != NULL ? h->value : "";
    e->value_len = h->value != NULL ? h->value_len : 0;
    e->order = n;
    n++;
  }
  e = &s->entries[n];
  e->name = "x-amz-date"; e->name_len = 10;
  e->value = amz_date; e->value_len = 16;
  e->order = n++;
  if (has_token && !r->omit_session_token) {
    e = &s->entries[n];
    e->name = "x-amz-security-token"; e->name_len = 20;
    e->value = r->session_token; e->value_len = r->session_token_len;
    e->order = n++;
  }
  if (r->sign_body) {
    e = &s->entries[n];
    e->name = "x-amz-content-sha256"; e->name_len = 20;
    e->value = payload_hash; e->value_len = strlen(payload_hash);
    e->order = n++;
  }
  *count = n;
  return KN_SIGV4_OK;
}

/* The payload hash that ends the canonical request: the caller's, else
 * the value of the caller's x-amz-content-sha256 header (smithy does the
 * same, e.g. UNSIGNED-PAYLOAD), else hex SHA-256 of the body. */
static int payload_hash(kn_sigv4_signer *s, const kn_sigv4_request *r, char out[65])
{
  const char *given = r->payload_hash;
  size_t given_len = r->payload_hash_len, i;
  unsigned char digest[KN_SHA256_LEN];
  int rc;

  if (!r->sign_body) {
    for (i = 0; i < r->header_count; i++) {
      const kn_sigv4_header *h = &r->headers[i];
      kn_sigv4_buf *w = &s->work;
      if (!name_is(h->name, h->name_len, "x-amz-content-sha256")) continue;
      buf_reset(w);
      put_header_value(w, h->value, h->value_len);
      if (w->failed) return KN_SIGV4_ENOMEM;
      if (!is_payload_hash(w->b.data, w->b.len))
        return fail(s, "x-amz-content-sha256 header is not a payload hash");
      if (given != NULL && (given_len != w->b.len || memcmp(given, w->b.data, w->b.len) != 0))
        return fail(s, "payload_hash differs from the x-amz-content-sha256 header");
      memcpy(out, w->b.data, w->b.len);
      out[w->b.len] = '\0';
      return KN_SIGV4_OK;
    }
  }
  if (given != NULL) {
    memcpy(out, given, given_len);
    out[given_len] = '\0';
    return KN_SIGV4_OK;
  }
  rc = s_sha256(s, r->body != NULL ? r->body : "", r->body != NULL ? r->body_len : 0, digest);
  if (rc != KN_SIGV4_OK) return rc;
  kn_hex_encode(digest, sizeof digest, out);
  out[64] = '\0';
  return KN_SIGV4_OK;
}

int kn_sigv4_sign(kn_sigv4_signer *s, const kn_sigv4_request *req,
                  kn_sigv4_result *out)
{
  unsigned char digest[KN_SHA256_LEN], key[KN_SHA256_LEN];
  char hex[2 * KN_SHA256_LEN];
  size_t count = 0, i;
  int rc, has_token;

  s->err[0] = '\0';
  buf_reset(&s->creq);
  buf_reset(&s->sts);
  buf_reset(&s->auth);
  buf_reset(&s->shdr);
  buf_reset(&s->scope);

  if ((rc = crypto_ready(s)) != KN_SIGV4_OK) goto cleanup;
  if ((rc = check_request(s, req)) != KN_SIGV4_OK) goto cleanup;
  has_token = req->session_token != NULL && req->session_token_len > 0;
  if ((rc = check_headers(s, req, has_token)) != KN_SIGV4_OK) goto cleanup;
  format_amz_date(req->time, out->amz_date);
  if ((rc = payload_hash(s, req, out->payload_hash)) != KN_SIGV4_OK) goto cleanup;
  rc = collect_headers(s, req, out->amz_date, out->payload_hash, has_token, &count);
  if (rc != KN_SIGV4_OK) goto cleanup;
  qsort(s->entries, count, sizeof *s->entries, entry_cmp);

  /* Canonical request. */
  buf_put(&s->creq, req->method, req->method_len);
  buf_putc(&s->creq, '\n');
  put_canonical_uri(s, req->path != NULL ? req->path : "",
                    req->path != NULL ? req->path_len : 0, req->normalize_path);
  buf_putc(&s->creq, '\n');
  if ((rc = put_canonical_query(s, req->query, req->query_len)) != KN_SIGV4_OK) goto cleanup;
  buf_putc(&s->creq, '\n');
  for (i = 0; i < count;) {
    size_t j = i;
    put_lower(&s->creq, s->entries[i].name, s->entries[i].name_len);
    buf_putc(&s->creq, ':');
    if (s->shdr.b.len > 0) buf_putc(&s->shdr, ';');
    put_lower(&s->shdr, s->entries[i].name, s->entries[i].name_len);
    for (; j < count && same_name(&s->entries[i], &s->entries[j]); j++) {
      if (j > i) buf_putc(&s->creq, ',');
      put_header_value(&s->creq, s->entries[j].value, s->entries[j].value_len);
    }
    buf_putc(&s->creq, '\n');
    i = j;
  }
  buf_putc(&s->creq, '\n');
  buf_put(&s->creq, s->shdr.b.data, s->shdr.b.len);
  buf_putc(&s->creq, '\n');
  buf_puts(&s->creq, out->payload_hash);
  rc = KN_SIGV4_ENOMEM;
  if (s->creq.failed || s->shdr.failed) goto cleanup;

  /* Credential scope and string to sign. */
  buf_put(&s->scope, out->amz_date, 8);
  buf_putc(&s->scope, '/');
  buf_put(&s->scope, req->region, req->region_len);
  buf_putc(&s->scope, '/');
  buf_put(&s->scope, req->service, req->service_len);
  buf_puts(&s->scope, "/aws4_request");
  if ((rc = s_sha256(s, s->creq.b.data, s->creq.b.len, digest)) != KN_SIGV4_OK) goto cleanup;
  kn_hex_encode(digest, sizeof digest, hex);
  buf_puts(&s->sts, KN_ALGORITHM "\n");
  buf_put(&s->sts, out->amz_date, 16);
  buf_putc(&s->sts, '\n');
  buf_put(&s->sts, s->scope.b.data, s->scope.b.len);
  buf_putc(&s->sts, '\n');
  buf_put(&s->sts, hex, sizeof hex);
  rc = KN_SIGV4_ENOMEM;
  if (s->scope.failed || s->sts.failed) goto cleanup;

  /* Signature and Authorization. */
  if ((rc = signing_key(s, req, out->amz_date, key)) != KN_SIGV4_OK) goto cleanup;
  if ((rc = s_hmac_signing(s, key, s->sts.b.data, s->sts.b.len, digest)) != KN_SIGV4_OK)
    goto cleanup;
  kn_hex_encode(digest, sizeof digest, out->signature);
  out->signature[2 * KN_SHA256_LEN] = '\0';
  buf_puts(&s->auth, KN_ALGORITHM " Credential=");
  buf_put(&s->auth, req->access_key, req->access_key_len);
  buf_putc(&s->auth, '/');
  buf_put(&s->auth, s->scope.b.data, s->scope.b.len);
  buf_puts(&s->auth, ", SignedHeaders=");
  buf_put(&s->auth, s->shdr.b.data, s->shdr.b.len);
  buf_puts(&s->auth, ", Signature=");
  buf_put(&s->auth, out->signature, 2 * KN_SHA256_LEN);
  rc = KN_SIGV4_ENOMEM;
  if (s->auth.failed) goto cleanup;

  memcpy(out->signing_key, key, sizeof key);
  out->credential_scope = s->scope.b.data;
  out->credential_scope_len = s->scope.b.len;
  out->signed_headers = s->shdr.b.data;
  out->signed_headers_len = s->shdr.b.len;
  out->authorization = s->auth.b.data;
  out->authorization_len = s->auth.b.len;
  out->canonical_request = s->creq.b.data;
  out->canonical_request_len = s->creq.b.len;
  out->string_to_sign = s->sts.b.data;
  out->string_to_sign_len = s->sts.b.len;
  rc = KN_SIGV4_OK;

cleanup:
  OPENSSL_cleanse(key, sizeof key);
  if (rc == KN_SIGV4_ENOMEM && s->err[0] == '\0') fail(s, "out of memory");
  if (rc == KN_SIGV4_ECRYPTO && s->err[0] == '\0') fail(s, "libcrypto failure");
  return rc;
}
