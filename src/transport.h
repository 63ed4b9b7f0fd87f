/* transport.h - HTTP transport over libcurl, with no Lua in it.
 *
 * A kn_transport owns one curl easy handle, so sequential requests reuse the
 * connection (keep-alive). The response of the last request stays in the
 * transport's own buffers until the next request or kn_transport_clear;
 * callers pull it through the accessors below (the C never calls out).
 * A kn_multi drives many transports at once for a coroutine scheduler, and
 * runs streaming requests whose body is handed out piece by piece while it
 * arrives (SubscribeToShard), with backpressure: a transfer pauses while its
 * unread bytes exceed a bound, so memory stays flat however long it runs.
 * Functions return int status codes and never print, abort or longjmp. */
#ifndef KN_TRANSPORT_H
#define KN_TRANSPORT_H

#include <stddef.h>

#include "header.h"

/* Outcome of a request: KN_TE_OK when an HTTP response (any status) arrived. */
typedef enum kn_transport_error {
  KN_TE_OK = 0,
  KN_TE_TIMEOUT,          /* connect or request timeout elapsed */
  KN_TE_REFUSED,          /* TCP connect failed (refused, unreachable) */
  KN_TE_RESET,            /* peer closed or reset before a complete response */
  KN_TE_TLS,              /* handshake or certificate verification failed */
  KN_TE_DNS,              /* host name did not resolve */
  KN_TE_TRANSPORT,        /* anything else curl reports, or out of memory */
  KN_TE_INVALID           /* request refused before sending (bad header, URL) */
} kn_transport_error;

typedef struct kn_transport_opts {
  long connect_timeout_ms;  /* 0 = curl's default (300 s) */
  long timeout_ms;          /* whole request; 0 = no limit */
  int verify;               /* verify the peer certificate and host name */
  const char *cafile;       /* PEM bundle to trust instead of the system's; may be NULL; copied */
  int http2;                /* offer h2 through ALPN on https URLs */
} kn_transport_opts;

/* Byte strings are pointer + length everywhere: headers (kn_header, in
 * header.h) and bodies may hold any byte, and nothing here relies on NUL
 * termination. */

/* A request description. Everything is borrowed: the transport copies method,
 * URL and headers while preparing, but uses `body` in place, so the body must
 * stay valid until the request completes (returns, or leaves the multi). */
typedef struct kn_request {
  const char *method;       /* "GET", "POST", ...; NUL-terminated */
  const char *url;          /* NUL-terminated */
  const kn_header *headers;
  size_t nheaders;
  const char *body;         /* may be NULL when body_len is 0 */
  size_t body_len;
  long connect_timeout_ms;  /* < 0: use the transport's option */
  long timeout_ms;          /* < 0: the transport's option (none for a stream) */
  int stream;               /* multi only: deliver the body as it arrives */
  size_t stream_buffer;     /* stream: pause while this many bytes wait; 0 = default */
} kn_request;

/* Unread bytes at which a stream pauses its transfer by default. One curl
 * write (up to 64 KiB, 16 KiB after a pause) may land on top of it. */
#define KN_STREAM_BUFFER ((size_t)256 * 1024)

typedef struct kn_transport kn_transport;
typedef struct kn_multi kn_multi;

/* Returns 1 when name is a non-empty RFC 9110 token and value has no CR, LF
 * or NUL (the bytes that would let a value smuggle a header or a request). */
int kn_header_valid(const kn_header *h);

/* Allocates a transport; NULL when out of memory or curl cannot start. The
 * caller owns it and frees it with kn_transport_free (which first detaches it
 * from any multi it is running in). */
kn_transport *kn_transport_new(const kn_transport_opts *opts);
void kn_transport_free(kn_transport *t);

/* Blocking request. Returns KN_TE_OK when a response arrived, else the error
 * class; either way details stay readable until the next request. */
kn_transport_error kn_transport_perform(kn_transport *t, const kn_request *req);

/* Response accessors, valid after a completed request. Returned pointers are
 * owned by the transport and live until its next request or clear. */
long kn_transport_status(const kn_transport *t);
const char *kn_transport_http_version(const kn_transport *t); /* "1.0" "1.1" "2" "3" */
const char *kn_transport_body(const kn_transport *t, size_t *len);
size_t kn_transport_header_count(const kn_transport *t);
void kn_transport_header_at(const kn_transport *t, size_t i, kn_header *out);
/* Error details of the last request: curl's message and CURLcode. */
const char *kn_transport_error_message(const kn_transport *t);
int kn_transport_curl_code(const kn_transport *t);
long kn_transport_os_errno(const kn_transport *t);
/* Keep-alive hygiene. After a failed transfer, or an HTTP/1.x answer that
 * left bytes waiting on its connection, the transport makes curl drop that
 * connection and opens a new one for its next request, by itself. The
 * caller calls this when an answer that arrived whole could not be decoded
 * (its framing may be off too): same effect, for the last connection of an
 * idle transport; no-op while it runs in a multi. */
void kn_transport_drop_connection(kn_transport *t);
/* Releases big response buffers once the caller has copied them out. */
void kn_transport_clear(kn_transport *t);

/* Counters since creation: requests completed (with or without a response)
 * and new connections opened (curl's CURLINFO_NUM_CONNECTS, summed). */
void kn_transport_stats(const kn_transport *t, unsigned long *requests,
                        unsigned long *connects);
/* 1 while the transport has a request running in a multi. */
int kn_transport_busy(const kn_transport *t);

/* Multi: many transports in flight at once, non-blocking. The multi does not
 * own the transports it runs; each stays owned by its creator, who must keep
 * the request body alive until it completes or is removed. */
kn_multi *kn_multi_new(void);
/* Detaches every running transport (their requests are abandoned) and frees. */
void kn_multi_free(kn_multi *m);

/* Starts req on t (which must not be busy) and tags it with id.
 * Returns KN_TE_OK, KN_TE_INVALID for a bad request, or KN_TE_TRANSPORT. */
kn_transport_error kn_multi_add(kn_multi *m, kn_transport *t,
                                const kn_request *req, long long id);
/* Abandons t's running request; no-op when t is not in m. */
void kn_multi_remove(kn_multi *m, kn_transport *t);

/* Runs transfers, sleeping in curl_multi_poll until at least one completes,
 * a stream has news, or timeout_ms passes. Completed transports leave the multi and are
 * fetched with kn_multi_next_done. Returns 0, or -1 on a curl multi error. */
int kn_multi_wait(kn_multi *m, long timeout_ms);
/* Pops one completed transport, or NULL. *id is its tag and *err its
 * outcome; its response is read with the kn_transport accessors. */
kn_transport *kn_multi_next_done(kn_multi *m, long long *id,
                                 kn_transport_error *err);
/* Streaming requests (kn_request.stream) in a multi. Such a transport does
 * not go to the completion queue: kn_multi_wait also returns when a stream
 * has news (its final header block arrived, body bytes came, or it ended)
 * and kn_multi_next_ready pops it; the stream stays a member of the multi
 * until it is removed, even once ended, so its owner reads it to the end.
 * A stream is notified at most once until popped, whatever arrives. */
kn_transport *kn_multi_next_ready(kn_multi *m, long long *id);

/* 1 once the final status line and header block are in (for a stream that
 * ended without them, once it ended with a response); status and headers
 * are then readable through the accessors above. */
int kn_transport_stream_head(const kn_transport *t);
/* Body bytes received and not yet consumed; owned by t, valid until the
 * next call that takes t. */
const char *kn_transport_stream_peek(const kn_transport *t, size_t *len);
/* Drops the bytes peek showed and resumes a transfer paused for them (curl
 * may deliver more at once, so peek again after). */
void kn_transport_stream_consume(kn_transport *t);
/* 1 when the stream's transfer has ended, with its outcome in *err (details
 * through kn_transport_error_message); 0 while it runs. */
int kn_transport_stream_ended(const kn_transport *t, kn_transport_error *err);
/* 1 while the transfer is paused because its unread bytes hit the bound. */
int kn_transport_stream_paused(const kn_transport *t);

/* Number of transports running (added and not yet completed or removed). */
size_t kn_multi_running(const kn_multi *m);
/* Interrupts a kn_multi_wait from another thread or a signal handler. */
int kn_multi_wakeup(kn_multi *m);

#endif
