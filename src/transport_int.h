/* transport_int.h - private to transport.c (the easy handle, blocking
 * requests) and transport_multi.c (the multi handle and streams): their
 * shared structures and the steps both use. Nothing else includes it; the
 * bindings see transport.h only. Ownership is as transport.h states: a
 * transport owns its easy handle, header list and buffers; a multi owns
 * its curl multi handle and none of its member transports. */
#ifndef KN_TRANSPORT_INT_H
#define KN_TRANSPORT_INT_H

#include <curl/curl.h>

#include "buf.h"
#include "transport.h"

/* curl_multi_poll (7.66), curl_multi_wakeup (7.68) */
#if LIBCURL_VERSION_NUM < 0x074400
#error "libcurl 7.68.0 or newer is required"
#endif

typedef struct kn_hdr_span {
  size_t name_off, name_len, value_off, value_len;
} kn_hdr_span;

/* KN_DONE: completed, waiting in the completion queue; KN_ENDED: a stream
 * whose transfer completed, kept until its owner reads the end. */
typedef enum { KN_IDLE = 0, KN_RUNNING, KN_DONE, KN_ENDED } kn_state;

struct kn_transport {
  CURL *easy;
  kn_transport_opts opts;        /* opts.cafile points to cafile_copy */

  /* request headers of the current request: lines and the list curl reads */
  kn_buf hdr_lines;
  struct curl_slist *hdr_nodes;
  size_t hdr_nodes_cap;

  /* what the handle is configured with, so kn_tr_prepare sets only what
   * changed; configured = 0 after a reset: everything is set again */
  int configured;
  kn_buf cfg_url, cfg_method;
  int cfg_has_body, cfg_fresh;
  long cfg_connect_ms, cfg_total_ms;
  char *cafile_copy;

  kn_buf body;
  kn_buf hdr_bytes;              /* names and values of the last header block */
  kn_hdr_span *hdrs;
  size_t nhdrs, hdr_cap;
  int oom;                       /* a callback ran out of memory */

  long status;
  long http_version;
  long os_errno;
  int curl_code;
  kn_transport_error result;
  char errbuf[CURL_ERROR_SIZE];

  unsigned long requests, connects;

  /* the HTTP/1.x connection the last answer came on, while curl may keep
   * it for reuse (see keep_or_drop); conn_fd < 0 when none */
  curl_socket_t conn_fd;
  long conn_local_port, conn_peer_port;
  /* the connection keep_or_drop last checked with getsockname/getpeername
   * (seen_fd < 0: none): a transfer that reused it is not checked again */
  curl_socket_t seen_fd;
  long seen_local_port, seen_peer_port;
  int fresh;                     /* the next request opens a new connection */

  /* streaming (kn_request.stream): `body` holds the unread bytes only */
  int stream;
  size_t stream_high;            /* pause when this many bytes are unread */
  int head_ready;                /* final status and headers are in */
  int paused;                    /* on_body returned CURL_WRITEFUNC_PAUSE */
  int notified;                  /* queued in the multi's ready list */
  kn_transport *ready_next;

  /* membership of a multi: running or completed-not-yet-fetched */
  kn_multi *multi;
  kn_state state;
  long long id;
  kn_transport *prev, *next;     /* the multi's member list */
  kn_transport *done_next;       /* the multi's completion queue */
};

struct kn_multi {
  CURLM *multi;
  kn_transport *members;
  kn_transport *done_head, *done_tail;
  kn_transport *ready_head, *ready_tail;  /* streams with news */
  size_t running;
};

/* transport.c */
/* Resets t's handle (keeping its connections) and configures req on it. */
kn_transport_error kn_tr_prepare(kn_transport *t, const kn_request *req);
/* Records the outcome of t's finished transfer; returns it. */
kn_transport_error kn_tr_finish(kn_transport *t, CURLcode code);
/* Refuses a request unsent with the message `what`. */
kn_transport_error kn_tr_invalid(kn_transport *t, const char *what);

/* transport_multi.c: the stream side of the curl callbacks */
/* Body bytes of a stream: appended, or the transfer paused at the bound. */
size_t kn_tr_stream_body(kn_transport *t, const char *ptr, size_t n);
/* The end of a header block of a stream: the head, once the final one. */
void kn_tr_stream_header_end(kn_transport *t);

#endif
