/* transport_multi.c - the multi side of transport.h: many transports in
 * flight in one curl multi handle, and streaming requests (SubscribeToShard)
 * whose body is handed out while it arrives, with backpressure. A member
 * transport moves through these states (t->state):
 *
 *          kn_multi_add             request completes
 *   IDLE --------------> RUNNING -----------------------> DONE
 *    ^ ^                  |   |                            |
 *    | |  kn_multi_remove |   | stream completes           | kn_multi_next_done
 *    | +------------------+   v                            | (or _remove)
 *    |                      ENDED                          |
 *    |   kn_multi_remove      |                            |
 *    +------------------------+----------------------------+
 *
 * DONE waits in the completion queue; ENDED keeps a stream a member until
 * its owner has read it to the end and removes it. kn_multi_free detaches
 * every member from any state.
 * While RUNNING, a stream also has: head_ready once its final header block
 * is in; paused while its unread bytes reach stream_high (resumed by
 * kn_transport_stream_consume); notified while queued in the ready list
 * (head, bytes or end: at most once until kn_multi_next_ready pops it). */
#include "transport_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---- streams: called from the curl callbacks ------------------------- */

/* Queues a stream in its multi's ready list, once until popped. */
static void stream_notify(kn_transport *t)
{
  kn_multi *m = t->multi;
  if (m == NULL || t->notified) return;
  t->notified = 1;
  t->ready_next = NULL;
  if (m->ready_tail != NULL) m->ready_tail->ready_next = t;
  else m->ready_head = t;
  m->ready_tail = t;
}

size_t kn_tr_stream_body(kn_transport *t, const char *ptr, size_t n)
{
  if (t->body.len >= t->stream_high) {
    /* backpressure: curl keeps this piece and reads no more from the
     * socket until kn_transport_stream_consume resumes the transfer */
    t->paused = 1;
    return CURL_WRITEFUNC_PAUSE;
  }
  if (kn_buf_append(&t->body, ptr, n) != 0) {
    t->oom = 1;
    return 0;               /* makes curl fail with CURLE_WRITE_ERROR */
  }
  if (n > 0) stream_notify(t);
  return n;
}

void kn_tr_stream_header_end(kn_transport *t)
{
  /* the final block unless the status is 1xx (HTTP/2 too: curl ends its
   * synthesised block with an empty line) */
  long code = 0;
  if (!t->head_ready
      && curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK
      && code >= 200) {
    t->status = code;
    if (curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &t->http_version) != CURLE_OK)
      t->http_version = 0;
    t->head_ready = 1;
    stream_notify(t);
  }
}

/* ---- multi ----------------------------------------------------------- */


kn_multi *kn_multi_new(void)
{
  kn_multi *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  m->multi = curl_multi_init();
  if (m->multi == NULL) {
    free(m);
    return NULL;
  }
  /* HTTP/2 streams share a connection where the server allows it */
  curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  return m;
}

static void unlink_member(kn_multi *m, kn_transport *t)
{
  if (t->prev != NULL) t->prev->next = t->next;
  else m->members = t->next;
  if (t->next != NULL) t->next->prev = t->prev;
  t->prev = t->next = NULL;
}

static void unlink_done(kn_multi *m, kn_transport *t)
{
  kn_transport **pp = &m->done_head, *prev = NULL;
  while (*pp != NULL && *pp != t) { prev = *pp; pp = &(*pp)->done_next; }
  if (*pp == NULL) return;
  *pp = t->done_next;
  if (m->done_tail == t) m->done_tail = prev;
  t->done_next = NULL;
}

static void unlink_ready(kn_multi *m, kn_transport *t)
{
  kn_transport **pp = &m->ready_head, *prev = NULL;
  if (!t->notified) return;
  while (*pp != NULL && *pp != t) { prev = *pp; pp = &(*pp)->ready_next; }
  if (*pp != NULL) {
    *pp = t->ready_next;
    if (m->ready_tail == t) m->ready_tail = prev;
  }
  t->ready_next = NULL;
  t->notified = 0;
}

static void detach(kn_multi *m, kn_transport *t)
{
  if (t->state == KN_RUNNING) {
    /* mid-stream this drops the connection (HTTP/1.1) or resets the h2
     * stream: that is how an abandoned subscription is released */
    curl_multi_remove_handle(m->multi, t->easy);
    m->running--;
  } else if (t->state == KN_DONE) {
    unlink_done(m, t);
  }
  unlink_ready(m, t);
  t->paused = 0;
  unlink_member(m, t);
  t->state = KN_IDLE;
  t->multi = NULL;
}

void kn_multi_free(kn_multi *m)
{
  if (m == NULL) return;
  while (m->members != NULL) detach(m, m->members);
  curl_multi_cleanup(m->multi);
  free(m);
}

kn_transport_error kn_multi_add(kn_multi *m, kn_transport *t,
                                const kn_request *req, long long id)
{
  kn_transport_error rc;
  if (t->multi != NULL)
    return kn_tr_invalid(t, "transport is already running in a multi");
  rc = kn_tr_prepare(t, req);
  if (rc != KN_TE_OK) return rc;
  if (curl_multi_add_handle(m->multi, t->easy) != CURLM_OK) {
    snprintf(t->errbuf, sizeof t->errbuf, "curl_multi_add_handle failed");
    t->result = KN_TE_TRANSPORT;
    return KN_TE_TRANSPORT;
  }
  t->multi = m;
  t->state = KN_RUNNING;
  t->id = id;
  t->prev = NULL;
  t->next = m->members;
  if (m->members != NULL) m->members->prev = t;
  m->members = t;
  m->running++;
  return KN_TE_OK;
}

void kn_multi_remove(kn_multi *m, kn_transport *t)
{
  if (t->multi != m || m == NULL) return;
  detach(m, t);
}

static void collect(kn_multi *m)
{
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
    kn_transport *t = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t) != CURLE_OK
        || t == NULL || t->multi != m || t->state != KN_RUNNING)
      continue;
    kn_tr_finish(t, msg->data.result);
    curl_multi_remove_handle(m->multi, t->easy);
    m->running--;
    if (t->stream) {
      /* a response without a header callback's empty line still has one */
      if (t->result == KN_TE_OK) t->head_ready = 1;
      t->state = KN_ENDED;
      stream_notify(t);
      continue;
    }
    t->state = KN_DONE;
    t->done_next = NULL;
    if (m->done_tail != NULL) m->done_tail->done_next = t;
    else m->done_head = t;
    m->done_tail = t;
  }
}

static long long now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kn_multi_wait(kn_multi *m, long timeout_ms)
{
  long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    int still = 0;
    long long left;
    if (curl_multi_perform(m->multi, &still) != CURLM_OK) return -1;
    collect(m);
    if (m->done_head != NULL || m->ready_head != NULL) return 0;
    left = deadline - now_ms();
    if (left <= 0) return 0;
    if (curl_multi_poll(m->multi, NULL, 0, (int)(left > 1000000 ? 1000000 : left), NULL)
        != CURLM_OK)
      return -1;
  }
}

kn_transport *kn_multi_next_done(kn_multi *m, long long *id, kn_transport_error *err)
{
  kn_transport *t = m->done_head;
  if (t == NULL) return NULL;
  unlink_done(m, t);
  unlink_member(m, t);
  t->state = KN_IDLE;
  t->multi = NULL;
  *id = t->id;
  *err = t->result;
  return t;
}

kn_transport *kn_multi_next_ready(kn_multi *m, long long *id)
{
  kn_transport *t = m->ready_head;
  if (t == NULL) return NULL;
  m->ready_head = t->ready_next;
  if (m->ready_head == NULL) m->ready_tail = NULL;
  t->ready_next = NULL;
  t->notified = 0;
  *id = t->id;
  return t;
}

int kn_transport_stream_head(const kn_transport *t) { return t->stream && t->head_ready; }

const char *kn_transport_stream_peek(const kn_transport *t, size_t *len)
{
  *len = t->body.len;
  return t->body.data != NULL ? t->body.data : "";
}

void kn_transport_stream_consume(kn_transport *t)
{
  kn_buf_reset(&t->body);
  if (t->paused && t->state == KN_RUNNING) {
    t->paused = 0;
    /* may call on_body at once with the piece it kept (which may pause
     * again); the next kn_multi_wait carries on from there */
    if (curl_easy_pause(t->easy, CURLPAUSE_CONT) != CURLE_OK) t->paused = 1;
  }
}

int kn_transport_stream_ended(const kn_transport *t, kn_transport_error *err)
{
  if (t->state != KN_ENDED) return 0;
  *err = t->result;
  return 1;
}

int kn_transport_stream_paused(const kn_transport *t) { return t->paused; }

size_t kn_multi_running(const kn_multi *m) { return m->running; }

int kn_multi_wakeup(kn_multi *m)
{
  return curl_multi_wakeup(m->multi) == CURLM_OK ? 0 : -1;
}
