/* sigv4.h - AWS Signature Version 4 (header signing), SHA-256 and
 * HMAC-SHA256. Pure C over OpenSSL's libcrypto: no Lua, no I/O, no clock
 * (the caller passes the time). A kn_sigv4_signer owns every buffer the
 * results point into and a small cache of derived signing keys.
 * Spec: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html */
#ifndef KN_SIGV4_H
#define KN_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/opensslv.h>

/* EVP_MAC_fetch, EVP_Q_mac and OSSL_PARAM (sigv4.c) came with OpenSSL 3.0;
 * say so before the first missing declaration does (LibreSSL lacks them too). */
#if !defined(OPENSSL_VERSION_NUMBER) || OPENSSL_VERSION_NUMBER < 0x30000000L
#error "OpenSSL 3.0 or newer is required (libcrypto's EVP_MAC_fetch and EVP_Q_mac)"
#endif

#include <openssl/evp.h>

#include "buf.h"
#include "header.h"

#define KN_SHA256_LEN 32

enum {
  KN_SIGV4_OK = 0,
  KN_SIGV4_EINVAL, /* bad input; kn_sigv4_signer_error() says which */
  KN_SIGV4_ENOMEM,
  KN_SIGV4_ECRYPTO /* libcrypto failed (its error queue is cleared) */
};

/* SHA-256 of data[0..len) into out. Returns KN_SIGV4_OK or KN_SIGV4_ECRYPTO. */
int kn_sha256(const void *data, size_t len, unsigned char out[KN_SHA256_LEN]);

/* HMAC-SHA256(key, msg) into out. Same status codes as kn_sha256. */
int kn_hmac_sha256(const void *key, size_t key_len, const void *msg,
                   size_t msg_len, unsigned char out[KN_SHA256_LEN]);

/* Lowercase hex of in[0..n) into out (2n bytes, no NUL). Returns KN_SIGV4_OK. */
int kn_hex_encode(const unsigned char *in, size_t n, char *out);

/* One request header as the caller will send it: the transport's own
 * kn_header (header.h). Name and value are borrowed (pointer + length, not
 * NUL-terminated). */
typedef kn_header kn_sigv4_header;

/* Everything the signer reads. All pointers are borrowed for the duration
 * of kn_sigv4_sign; strings are pointer + length, NULL means absent. */
typedef struct kn_sigv4_request {
  const char *method;        /* "POST" (an HTTP token) */
  size_t method_len;
  const char *path;          /* as on the wire, e.g. "/"; NULL or "" = "/" */
  size_t path_len;
  const char *query;         /* raw, without '?', e.g. "b=2&a=1"; NULL = none */
  size_t query_len;
  const kn_sigv4_header *headers; /* in order; repeated names allowed */
  size_t header_count;
  const char *body;          /* NULL = empty */
  size_t body_len;
  const char *payload_hash;  /* NULL: the caller's x-amz-content-sha256
                                header if any, else hex SHA-256 of body */
  size_t payload_hash_len;
  const char *region, *service, *access_key, *secret_key;
  size_t region_len, service_len, access_key_len, secret_key_len;
  const char *session_token; /* NULL or empty = no token */
  size_t session_token_len;
  int64_t time;              /* seconds since the epoch, 0..253402300799 */
  int normalize_path;        /* remove dot segments and empty segments */
  int sign_body;             /* add and sign x-amz-content-sha256 */
  int omit_session_token;    /* token header added but not signed */
} kn_sigv4_request;

/* The outcome of one kn_sigv4_sign. The pointers point into the signer and
 * stay valid until its next kn_sigv4_sign or kn_sigv4_signer_free. */
typedef struct kn_sigv4_result {
  char amz_date[17];                   /* "20150830T123600Z", NUL-terminated */
  char signature[2 * KN_SHA256_LEN + 1]; /* lowercase hex, NUL-terminated */
  char payload_hash[65];               /* as it ends the canonical request */
  unsigned char signing_key[KN_SHA256_LEN]; /* derived kSigning */
  const char *credential_scope;  size_t credential_scope_len;
  const char *signed_headers;    size_t signed_headers_len;
  const char *authorization;     size_t authorization_len;
  const char *canonical_request; size_t canonical_request_len;
  const char *string_to_sign;    size_t string_to_sign_len;
} kn_sigv4_result;

/* A kn_buf owned by a signer; `failed` is sticky after ENOMEM. */
typedef struct kn_sigv4_buf {
  kn_buf b;
  int failed;
} kn_sigv4_buf;

#define KN_SIGV4_CACHE_SLOTS 4
#define KN_SIGV4_NAME_MAX 64 /* longest region or service name accepted */

/* One derived signing key; the secret is kept only as its SHA-256. */
typedef struct kn_sigv4_cache_slot {
  int used;
  char date[8];
  unsigned char secret_digest[KN_SHA256_LEN];
  char region[KN_SIGV4_NAME_MAX];
  size_t region_len;
  char service[KN_SIGV4_NAME_MAX];
  size_t service_len;
  unsigned char key[KN_SHA256_LEN];
} kn_sigv4_cache_slot;

/* Signer state. Public only so a binding can embed it (e.g. in a userdata);
 * treat the fields as private except the read-only counters. */
typedef struct kn_sigv4_signer {
  kn_sigv4_cache_slot cache[KN_SIGV4_CACHE_SLOTS];
  unsigned next_slot;
  unsigned long cache_hits, cache_misses; /* read-only statistics */
  kn_sigv4_buf creq, sts, auth, shdr, scope, work;
  struct kn_sigv4_entry *entries;  /* header sort array, owned */
  size_t entries_cap;
  struct kn_sigv4_qpair *qpairs;   /* query sort array, owned */
  size_t qpairs_cap;
  EVP_MD *md;                      /* SHA-256, fetched on first use, owned */
  EVP_MD_CTX *mdctx;               /* SHA-256 context, reused, owned */
  EVP_MAC_CTX *mac;                /* HMAC-SHA256 context, reused, owned */
  int mac_keyed;                   /* mac holds mac_key: re-initialised without it */
  unsigned char mac_key[KN_SHA256_LEN]; /* the signing key last given to mac */
  char err[200];
} kn_sigv4_signer;

/* Puts a signer in its empty state; allocates nothing, cannot fail.
 * Returns KN_SIGV4_OK. */
int kn_sigv4_signer_init(kn_sigv4_signer *s);

/* Frees what the signer owns, wipes cached keys, and leaves it in the
 * empty state (usable again). Idempotent. Returns KN_SIGV4_OK. */
int kn_sigv4_signer_free(kn_sigv4_signer *s);

/* Signs req with the Authorization-header method. On KN_SIGV4_OK fills
 * *out (pointers into s). On KN_SIGV4_EINVAL, kn_sigv4_signer_error(s)
 * names the problem. Header names must be HTTP tokens; header values and
 * the session token must not hold NUL, or CR/LF other than an obsolete
 * line fold (CRLF or LF followed by a space or tab), which is signed as
 * one space. Signer-owned headers (X-Amz-Date, Authorization, and
 * X-Amz-Security-Token / x-amz-content-sha256 when the signer adds them)
 * must not be among req->headers. Headers proxies may rewrite are sent
 * but never signed (the AWS SDK list: user-agent, connection, expect,
 * transfer-encoding, x-amzn-trace-id, proxy-*, sec-*, ... see sigv4.c). */
int kn_sigv4_sign(kn_sigv4_signer *s, const kn_sigv4_request *req,
                  kn_sigv4_result *out);

/* NUL-terminated message for the last failure; owned by s. */
const char *kn_sigv4_signer_error(const kn_sigv4_signer *s);

#endif
