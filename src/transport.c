/* transport.c - the blocking side of transport.h: one easy handle per
 * transport, kept (with its connection cache: that is what makes keep-alive
 * work) and configured anew only where a request differs from the last.
 * curl's callbacks only append to buffers owned by the transport; callers
 * pull the result afterwards. The multi handle and streams live in
 * transport_multi.c. */
#include "transport_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define KN_BODY_KEEP      (1u << 20)   /* keep a body buffer this big across requests */
#define KN_RESERVE_MAX    (64u << 20)  /* trust Content-Length up to this for one allocation */
#define KN_RECV_BUFFER    65536L

/* ---- validation ------------------------------------------------------ */

/* RFC 9110 section 5.6.2 tchar. */
static int is_tchar(unsigned char c)
{
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return 1;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_token(const char *s, size_t n)
{
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

int kn_header_valid(const kn_header *h)
{
  if (!is_token(h->name, h->name_len)) return 0;
  /* memchr scans a word or a vector at a time: a signed request's values
   * (Authorization alone is ~200 bytes) are checked on every call */
  return h->value_len == 0
         || (memchr(h->value, '\r', h->value_len) == NULL
             && memchr(h->value, '\n', h->value_len) == NULL
             && memchr(h->value, '\0', h->value_len) == NULL);
}

/* A URL curl would see exactly as given: no controls, spaces or DEL. */
static int url_valid(const char *url)
{
  const unsigned char *p = (const unsigned char *)url;
  if (*p == '\0') return 0;
  for (; *p; p++)
    if (*p <= 0x20 || *p == 0x7f) return 0;
  return 1;
}

static int name_is(const kn_header *h, const char *name)
{
  size_t i, n = strlen(name);
  if (h->name_len != n) return 0;
  for (i = 0; i < n; i++) {
    char a = h->name[i], b = name[i];
    if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
    if (b >= 'A' && b <= 'Z') b = (char)(b - 'A' + 'a');
    if (a != b) return 0;
  }
  return 1;
}

static int has_prefix_nocase(const char *s, const char *prefix)
{
  for (; *prefix; s++, prefix++) {
    char a = *s;
    if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
    if (a != *prefix) return 0;
  }
  return 1;
}

/* ---- curl callbacks (append only) ------------------------------------ */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
  kn_transport *t = ud;
  size_t n = size * nmemb;
  if (t->stream) return kn_tr_stream_body(t, ptr, n);
  if (kn_buf_append(&t->body, ptr, n) != 0) {
    t->oom = 1;
    return 0;               /* makes curl fail with CURLE_WRITE_ERROR */
  }
  return n;
}

static void reset_headers(kn_transport *t)
{
  kn_buf_reset(&t->hdr_bytes);
  t->nhdrs = 0;
}

static int is_ows(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
  kn_transport *t = ud;
  size_t n = size * nmemb, len = n, colon;
  const char *line = ptr;

  while (len > 0 && is_ows(line[len - 1])) len--;
  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    /* A status line starts a new block: interim 1xx responses and, should a
     * caller enable them, redirects leave only the final block behind. */
    reset_headers(t);
    return n;
  }
  if (len == 0) {
    curl_off_t cl = -1;
    if (t->stream) {
      kn_tr_stream_header_end(t);
      return n;
    }
    if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK
        && cl > 0 && (unsigned long long)cl <= KN_RESERVE_MAX
        && t->body.len == 0 && kn_buf_reserve(&t->body, (size_t)cl) != 0) {
      t->oom = 1;
      return 0;
    }
    return n;
  }
  if (line[0] == ' ' || line[0] == '\t') {
    /* obsolete line folding (RFC 9110 5.5): continue the last value */
    if (t->nhdrs > 0) {
      kn_hdr_span *last = &t->hdrs[t->nhdrs - 1];
      while (len > 0 && is_ows(*line)) { line++; len--; }
      if (kn_buf_append(&t->hdr_bytes, " ", 1) != 0
          || kn_buf_append(&t->hdr_bytes, line, len) != 0) {
        t->oom = 1;
        return 0;
      }
      last->value_len += 1 + len;
    }
    return n;
  }
  for (colon = 0; colon < len && line[colon] != ':'; colon++) {}
  if (colon == len) return n;     /* not a header line; ignore */
  {
    size_t name_len = colon, voff = colon + 1, vlen;
    kn_hdr_span *span;
    while (name_len > 0 && is_ows(line[name_len - 1])) name_len--;
    while (voff < len && is_ows(line[voff])) voff++;
    vlen = len - voff;
    if (t->nhdrs == t->hdr_cap) {
      size_t cap = t->hdr_cap ? t->hdr_cap * 2 : 16;
      kn_hdr_span *p = realloc(t->hdrs, cap * sizeof *p);
      if (p == NULL) { t->oom = 1; return 0; }
      t->hdrs = p;
      t->hdr_cap = cap;
    }
    span = &t->hdrs[t->nhdrs];
    span->name_off = t->hdr_bytes.len;
    span->name_len = name_len;
    if (kn_buf_append(&t->hdr_bytes, line, name_len) != 0) { t->oom = 1; return 0; }
    span->value_off = t->hdr_bytes.len;
    span->value_len = vlen;
    if (kn_buf_append(&t->hdr_bytes, line + voff, vlen) != 0) { t->oom = 1; return 0; }
    t->nhdrs++;
  }
  return n;
}

/* ---- transport ------------------------------------------------------- */

kn_transport *kn_transport_new(const kn_transport_opts *opts)
{
  kn_transport *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->opts = *opts;
  t->opts.cafile = NULL;
  if (opts->cafile != NULL) {
    size_t n = strlen(opts->cafile) + 1;
    t->cafile_copy = malloc(n);
    if (t->cafile_copy == NULL) goto fail;
    memcpy(t->cafile_copy, opts->cafile, n);
    t->opts.cafile = t->cafile_copy;
  }
  t->conn_fd = CURL_SOCKET_BAD;
  t->seen_fd = CURL_SOCKET_BAD;
  t->easy = curl_easy_init();
  if (t->easy == NULL) goto fail;
  return t;
fail:
  free(t->cafile_copy);
  free(t);
  return NULL;
}

static void clear_response(kn_transport *t)
{
  kn_buf_reset(&t->body);
  t->head_ready = 0;
  t->paused = 0;
  reset_headers(t);
  t->oom = 0;
  t->status = 0;
  t->http_version = 0;
  t->os_errno = 0;
  t->curl_code = 0;
  t->result = KN_TE_OK;
  t->errbuf[0] = '\0';
}

void kn_transport_clear(kn_transport *t)
{
  clear_response(t);
  if (t->body.cap > KN_BODY_KEEP) kn_buf_free(&t->body);
  if (t->hdr_bytes.cap > KN_BODY_KEEP) kn_buf_free(&t->hdr_bytes);
}

void kn_transport_free(kn_transport *t)
{
  if (t == NULL) return;
  if (t->multi != NULL) kn_multi_remove(t->multi, t);
  curl_easy_cleanup(t->easy);
  free(t->hdr_nodes);
  kn_buf_free(&t->hdr_lines);
  kn_buf_free(&t->cfg_url);
  kn_buf_free(&t->cfg_method);
  kn_buf_free(&t->body);
  kn_buf_free(&t->hdr_bytes);
  free(t->hdrs);
  free(t->cafile_copy);
  free(t);
}

kn_transport_error kn_tr_invalid(kn_transport *t, const char *what)
{
  snprintf(t->errbuf, sizeof t->errbuf, "%s", what);
  t->result = KN_TE_INVALID;
  return KN_TE_INVALID;
}

/* The request's header list, built without allocating once the buffers
 * have grown: each line "Name: value" (or "Name;" for an empty value, which
 * is how curl is told to send an empty header rather than to drop one of
 * its own) goes NUL-terminated into t->hdr_lines, and t->hdr_nodes links
 * them as the curl_slist curl reads while it sends (curl never frees or
 * keeps a list passed with CURLOPT_HTTPHEADER). Returns 0 or -1 (memory). */
static int build_header_list(kn_transport *t, const kn_request *req, int add_expect)
{
  size_t i, n = req->nheaders + (add_expect ? 1 : 0), off = 0;
  kn_buf_reset(&t->hdr_lines);
  for (i = 0; i < req->nheaders; i++) {
    const kn_header *h = &req->headers[i];
    if (kn_buf_append(&t->hdr_lines, h->name, h->name_len) != 0) return -1;
    if (h->value_len == 0) {
      if (kn_buf_append(&t->hdr_lines, ";", 2) != 0) return -1;   /* with its NUL */
    } else if (kn_buf_append(&t->hdr_lines, ": ", 2) != 0
               || kn_buf_append(&t->hdr_lines, h->value, h->value_len) != 0
               || kn_buf_append(&t->hdr_lines, "", 1) != 0) {
      return -1;
    }
  }
  /* curl would add "Expect: 100-continue" to big POSTs and then wait for
   * the interim answer; Kinesis does not need the extra round trip. */
  if (add_expect && kn_buf_append(&t->hdr_lines, "Expect:", 8) != 0) return -1;
  if (n > t->hdr_nodes_cap) {
    struct curl_slist *p = realloc(t->hdr_nodes, n * sizeof *p);
    if (p == NULL) return -1;
    t->hdr_nodes = p;
    t->hdr_nodes_cap = n;
  }
  /* the lines are all in: pointers into hdr_lines are stable from here */
  for (i = 0; i < n; i++) {
    t->hdr_nodes[i].data = t->hdr_lines.data + off;
    t->hdr_nodes[i].next = i + 1 < n ? &t->hdr_nodes[i + 1] : NULL;
    off += strlen(t->hdr_lines.data + off) + 1;
  }
  return 0;
}

#define SETOPT(opt, val) \
  do { if (curl_easy_setopt(e, (opt), (val)) != CURLE_OK) goto setopt_failed; } while (0)

/* The options that stay the same for every request of a transport, set on
 * a new or reset handle; the per-request ones are then unknown. */
static int configure_handle(kn_transport *t)
{
  CURL *e = t->easy;
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, t->errbuf);
  SETOPT(CURLOPT_PRIVATE, (void *)t);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, (void *)t);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, (void *)t);
  SETOPT(CURLOPT_BUFFERSIZE, KN_RECV_BUFFER);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_SSL_VERIFYPEER, t->opts.verify ? 1L : 0L);
  SETOPT(CURLOPT_SSL_VERIFYHOST, t->opts.verify ? 2L : 0L);
  if (t->opts.cafile != NULL) SETOPT(CURLOPT_CAINFO, t->opts.cafile);
  kn_buf_reset(&t->cfg_url);
  kn_buf_reset(&t->cfg_method);
  t->cfg_has_body = -1;
  t->cfg_connect_ms = t->cfg_total_ms = -1;
  t->cfg_fresh = 0;
  t->configured = 1;
  return 0;
setopt_failed:
  return -1;
}

static int same_string(const kn_buf *b, const char *s, size_t n)
{
  return b->len == n && (n == 0 || memcmp(b->data, s, n) == 0);
}

/* Configures req on t's handle. The handle keeps its options between
 * requests (and its connections always): only what differs from the last
 * request is set again, which spares curl_easy_reset and the copies curl
 * makes of the URL and method. A change of method resets the handle, since
 * the method options interact (NOBODY, HTTPGET, POSTFIELDS, CUSTOMREQUEST). */
kn_transport_error kn_tr_prepare(kn_transport *t, const kn_request *req)
{
  CURL *e = t->easy;
  size_t i, url_len, method_len;
  int user_expect = 0, posting;
  long connect_ms = req->connect_timeout_ms >= 0 ? req->connect_timeout_ms
                                                 : t->opts.connect_timeout_ms;
  /* a stream lasts as long as the server keeps it (SubscribeToShard: 5
   * minutes); its owner watches for silence instead */
  long total_ms = req->timeout_ms >= 0 ? req->timeout_ms
                : req->stream ? 0 : t->opts.timeout_ms;
  const char *body = req->body != NULL ? req->body : "";
  int has_body = req->body_len > 0;

  clear_response(t);
  if (t->body.cap > KN_BODY_KEEP) kn_buf_free(&t->body);
  t->stream = req->stream != 0;
  t->stream_high = req->stream_buffer > 0 ? req->stream_buffer : KN_STREAM_BUFFER;
  if (connect_ms < 0) connect_ms = 0;
  if (total_ms < 0) total_ms = 0;

  if (req->method == NULL || !is_token(req->method, strlen(req->method)))
    return kn_tr_invalid(t, "invalid HTTP method");
  if (req->url == NULL || !url_valid(req->url))
    return kn_tr_invalid(t, "URL is empty or contains spaces or control characters");
  for (i = 0; i < req->nheaders; i++) {
    const kn_header *h = &req->headers[i];
    if (!kn_header_valid(h)) {
      char name[64];
      size_t n = h->name_len < sizeof name - 1 ? h->name_len : sizeof name - 1;
      size_t k;
      for (k = 0; k < n; k++)
        name[k] = is_tchar((unsigned char)h->name[k]) ? h->name[k] : '?';
      name[n] = '\0';
      snprintf(t->errbuf, sizeof t->errbuf,
               "header '%s' has an invalid name or a value with CR, LF or NUL", name);
      t->result = KN_TE_INVALID;
      return KN_TE_INVALID;
    }
    if (name_is(h, "expect")) user_expect = 1;
  }
  if (build_header_list(t, req, !user_expect) != 0) goto oom;

  method_len = strlen(req->method);
  posting = strcmp(req->method, "HEAD") != 0
            && (has_body || strcmp(req->method, "POST") == 0);
  if (!t->configured || !same_string(&t->cfg_method, req->method, method_len)
      || t->cfg_has_body != has_body) {
    if (t->configured && t->cfg_method.len > 0) curl_easy_reset(e);
    if (configure_handle(t) != 0) goto setopt_failed;
    if (strcmp(req->method, "HEAD") == 0) {
      SETOPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "GET") == 0 && !has_body) {
      SETOPT(CURLOPT_HTTPGET, 1L);
    } else if (posting) {
      if (strcmp(req->method, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, req->method);
    } else {
      SETOPT(CURLOPT_CUSTOMREQUEST, req->method);
    }
    if (kn_buf_append(&t->cfg_method, req->method, method_len) != 0) goto oom;
    t->cfg_has_body = has_body;
  }
  url_len = strlen(req->url);
  if (!same_string(&t->cfg_url, req->url, url_len)) {
    int h2 = t->opts.http2
             && (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2);
    kn_buf_reset(&t->cfg_url);
    SETOPT(CURLOPT_URL, req->url);
    /* h2 through ALPN on https only; cleartext stays HTTP/1.1 */
    SETOPT(CURLOPT_HTTP_VERSION, h2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    /* In a multi, wait for a connection that may multiplex rather than open
     * one per request. Only where h2 is possible: on cleartext HTTP/1.1 the
     * waiting requests would queue behind the first one. */
    SETOPT(CURLOPT_PIPEWAIT, h2 && has_prefix_nocase(req->url, "https://") ? 1L : 0L);
    if (kn_buf_append(&t->cfg_url, req->url, url_len) != 0) goto oom;
  }
  if (connect_ms != t->cfg_connect_ms) {
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    t->cfg_connect_ms = connect_ms;
  }
  if (total_ms != t->cfg_total_ms) {
    SETOPT(CURLOPT_TIMEOUT_MS, total_ms);
    t->cfg_total_ms = total_ms;
  }
  if (t->fresh != t->cfg_fresh) {
    SETOPT(CURLOPT_FRESH_CONNECT, t->fresh ? 1L : 0L);
    t->cfg_fresh = t->fresh;
  }
  if (posting) {
    /* body used in place: the caller keeps it alive (transport.h) */
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    SETOPT(CURLOPT_POSTFIELDS, body);
  }
  SETOPT(CURLOPT_HTTPHEADER, t->hdr_nodes);
  t->fresh = 0;
  return KN_TE_OK;

setopt_failed:
  /* start from a clean handle next time */
  curl_easy_reset(e);
  t->configured = 0;
  snprintf(t->errbuf, sizeof t->errbuf, "libcurl refused an option");
  t->result = KN_TE_TRANSPORT;
  t->curl_code = CURLE_BAD_FUNCTION_ARGUMENT;
  return KN_TE_TRANSPORT;
oom:
  curl_easy_reset(e);
  t->configured = 0;
  snprintf(t->errbuf, sizeof t->errbuf, "out of memory");
  t->result = KN_TE_TRANSPORT;
  t->curl_code = CURLE_OUT_OF_MEMORY;
  return KN_TE_TRANSPORT;
}

static kn_transport_error classify(CURLcode code)
{
  switch (code) {
  case CURLE_OK:
    return KN_TE_OK;
  case CURLE_OPERATION_TIMEDOUT:
    return KN_TE_TIMEOUT;
  case CURLE_COULDNT_CONNECT:
    return KN_TE_REFUSED;
  case CURLE_GOT_NOTHING:      /* closed before a status line */
  case CURLE_RECV_ERROR:       /* ECONNRESET and friends while reading */
  case CURLE_SEND_ERROR:       /* EPIPE / ECONNRESET while writing */
  case CURLE_PARTIAL_FILE:     /* closed before Content-Length bytes came */
    return KN_TE_RESET;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return KN_TE_DNS;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED:
    return KN_TE_TLS;
  default:
    return KN_TE_TRANSPORT;
  }
}

/* ---- connection hygiene ---------------------------------------------- */

static long sockaddr_port(const struct sockaddr_storage *ss)
{
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return -1;
}

/* 1 when fd is still the connection recorded by keep_or_drop: curl may have
 * closed it since and the descriptor may now belong to another connection,
 * which would not have the same pair of ports. */
static int still_same_connection(const kn_transport *t)
{
  struct sockaddr_storage ss;
  socklen_t n = sizeof ss;
  if (t->conn_fd == CURL_SOCKET_BAD) return 0;
  if (getsockname(t->conn_fd, (struct sockaddr *)&ss, &n) != 0
      || sockaddr_port(&ss) != t->conn_local_port)
    return 0;
  n = sizeof ss;
  if (getpeername(t->conn_fd, (struct sockaddr *)&ss, &n) != 0
      || sockaddr_port(&ss) != t->conn_peer_port)
    return 0;
  return 1;
}

/* Makes curl drop the recorded connection rather than reuse it: curl owns
 * the descriptor, so it is shut down, not closed. curl then finds it dead
 * when it next looks at it, or fails to send on it and, since the
 * connection was a reused one, sends the request again on a new one. */
static void drop_connection(kn_transport *t)
{
  if (still_same_connection(t)) shutdown(t->conn_fd, SHUT_RDWR);
  t->conn_fd = CURL_SOCKET_BAD;
  t->seen_fd = CURL_SOCKET_BAD;
  t->fresh = 1;
}

/* After a transfer: an HTTP/1.x connection that curl keeps for reuse must
 * be at a message boundary. Bytes already waiting on it once the answer is
 * complete (a Content-Length shorter than what the server sent) would be
 * read as the start of the next answer ("Received HTTP/0.9"), so such a
 * connection is dropped; after a failed transfer the next request opens a
 * new connection. HTTP/2 frames its streams itself and its connection is
 * shared by other transfers: left alone. */
static void keep_or_drop(kn_transport *t, CURLcode code, long connects)
{
  curl_socket_t fd = CURL_SOCKET_BAD;
  long local_port = -1, peer_port = -1;
  struct pollfd pfd;

  t->conn_fd = CURL_SOCKET_BAD;
  if (code != CURLE_OK) {
    t->seen_fd = CURL_SOCKET_BAD;
    t->fresh = 1;
    return;
  }
  if (t->http_version != CURL_HTTP_VERSION_1_0 && t->http_version != CURL_HTTP_VERSION_1_1)
    return;
  /* the connection curl last returned to its pool, if it still has it; the
   * ports tell whether it is the one this transfer used */
  if (curl_easy_getinfo(t->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK
      || fd == CURL_SOCKET_BAD
      || curl_easy_getinfo(t->easy, CURLINFO_LOCAL_PORT, &local_port) != CURLE_OK
      || curl_easy_getinfo(t->easy, CURLINFO_PRIMARY_PORT, &peer_port) != CURLE_OK)
    return;
  t->conn_fd = fd;
  t->conn_local_port = local_port;
  t->conn_peer_port = peer_port;
  /* a transfer that opened no connection and reports the descriptor and
   * ports checked last time ran on that same connection: the two system
   * calls that would confirm it again are spared */
  if (connects != 0 || fd != t->seen_fd || local_port != t->seen_local_port
      || peer_port != t->seen_peer_port) {
    t->seen_fd = CURL_SOCKET_BAD;
    if (!still_same_connection(t)) {
      t->conn_fd = CURL_SOCKET_BAD;
      return;
    }
    t->seen_fd = fd;
    t->seen_local_port = local_port;
    t->seen_peer_port = peer_port;
  }
  pfd.fd = fd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  /* readable: leftover bytes, or the peer closed (curl would find that out
   * itself, but dropping it now costs nothing) */
  if (poll(&pfd, 1, 0) != 0) drop_connection(t);
}

void kn_transport_drop_connection(kn_transport *t)
{
  if (t->multi != NULL) return;   /* running: its connection is in use */
  drop_connection(t);
}

/* Records the outcome of a finished transfer. */
kn_transport_error kn_tr_finish(kn_transport *t, CURLcode code)
{
  long n = 0;
  t->requests++;
  if (curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &n) != CURLE_OK) n = -1;
  if (n > 0) t->connects += (unsigned long)n;
  if (curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status) != CURLE_OK)
    t->status = 0;
  if (curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &t->http_version) != CURLE_OK)
    t->http_version = 0;
  if (curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &t->os_errno) != CURLE_OK)
    t->os_errno = 0;
  t->curl_code = (int)code;
  keep_or_drop(t, code, n);
  if (code != CURLE_OK && t->oom) {
    snprintf(t->errbuf, sizeof t->errbuf, "out of memory while receiving the response");
    t->result = KN_TE_TRANSPORT;
    return t->result;
  }
  t->result = classify(code);
  if (t->result != KN_TE_OK && t->errbuf[0] == '\0')
    snprintf(t->errbuf, sizeof t->errbuf, "%s", curl_easy_strerror(code));
  return t->result;
}

kn_transport_error kn_transport_perform(kn_transport *t, const kn_request *req)
{
  kn_transport_error rc;
  if (t->multi != NULL)
    return kn_tr_invalid(t, "transport is running in a multi");
  if (req->stream)
    return kn_tr_invalid(t, "a streaming request runs in a multi");
  rc = kn_tr_prepare(t, req);
  if (rc != KN_TE_OK) return rc;
  return kn_tr_finish(t, curl_easy_perform(t->easy));
}

long kn_transport_status(const kn_transport *t) { return t->status; }

const char *kn_transport_http_version(const kn_transport *t)
{
  switch (t->http_version) {
  case CURL_HTTP_VERSION_1_0: return "1.0";
  case CURL_HTTP_VERSION_1_1: return "1.1";
  case CURL_HTTP_VERSION_2_0: return "2";
#ifdef CURL_HTTP_VERSION_3
  case CURL_HTTP_VERSION_3: return "3";
#endif
  default: return "";
  }
}

const char *kn_transport_body(const kn_transport *t, size_t *len)
{
  *len = t->body.len;
  return t->body.data != NULL ? t->body.data : "";
}

size_t kn_transport_header_count(const kn_transport *t) { return t->nhdrs; }

void kn_transport_header_at(const kn_transport *t, size_t i, kn_header *out)
{
  const kn_hdr_span *s = &t->hdrs[i];
  out->name = t->hdr_bytes.data + s->name_off;
  out->name_len = s->name_len;
  out->value = t->hdr_bytes.data + s->value_off;
  out->value_len = s->value_len;
}

const char *kn_transport_error_message(const kn_transport *t) { return t->errbuf; }
int kn_transport_curl_code(const kn_transport *t) { return t->curl_code; }
long kn_transport_os_errno(const kn_transport *t) { return t->os_errno; }

void kn_transport_stats(const kn_transport *t, unsigned long *requests,
                        unsigned long *connects)
{
  *requests = t->requests;
  *connects = t->connects;
}

int kn_transport_busy(const kn_transport *t) { return t->multi != NULL; }

