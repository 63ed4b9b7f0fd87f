/* floor.c - the floor for the HTTP benchmarks: one libcurl easy handle,
 * configured once, sending the same pre-built (pre-signed) request again and
 * again over one keep-alive connection. No per-call work at all: no
 * validation, no JSON, no signing, the response body is counted and dropped.
 * Whatever lua-kinesis does per call is measured against this.
 *
 *   floor URL HEADERS_FILE BODY_FILE SECONDS [WARMUP_CALLS [work RECORDS]]
 *
 * With "work RECORDS" it is the unavoidable-work program instead: per call
 * the JSON body is built afresh (RECORDS blobs of 100 B base64-encoded:
 * PutRecord for 1, PutRecords otherwise), then SHA-256 of the body, the
 * SigV4 canonical request and string to sign, its HMAC with a signing key
 * derived once, the headers, and the send and read of the answer: what any
 * client must do per call, done in plain C with nothing else.
 *
 * HEADERS_FILE holds one "Name: value" per line, as the client sent them.
 * Prints one JSON line: calls, seconds, rate (calls/s), connects, bytes_in,
 * body_bytes, cpu_us (this process's CPU time per call, user + system: less
 * sensitive to other load than the rate), work_us (work mode: CPU time per
 * call in the body, hash and signature), hwm_kb (peak RSS, VmHWM). Exit status 1 on any
 * transport error or non-2xx answer. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The whole file in a malloc'd buffer; *len its size. NULL on failure. */
static char *slurp(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
    goto done;
  buf = malloc((size_t)n + 1);
  if (buf == NULL) goto done;
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
    goto done;
  }
  buf[n] = '\0';
  *len = (size_t)n;
done:
  fclose(f);
  return buf;
}

/* CPU time of this process: the work figure is not inflated by preemption */
static double cpu_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long hwm_kb(void)
{
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmHWM:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
  (void)p;
  *(size_t *)ud += size * n;
  return size * n;
}

/* ---- the unavoidable work (work mode) ---- */

typedef struct wbuf {
  char *p;
  size_t n, cap;
} wbuf;

static void wput(wbuf *b, const char *s, size_t n)
{
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (b->p == NULL) abort();
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}
static void wputs(wbuf *b, const char *s) { wput(b, s, strlen(s)); }

static void b64(wbuf *b, const unsigned char *in, size_t n)
{
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i;
  char q[4];
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    q[0] = tab[v >> 18], q[1] = tab[(v >> 12) & 63], q[2] = tab[(v >> 6) & 63], q[3] = tab[v & 63];
    wput(b, q, 4);
  }
  if (i < n) {
    unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
    q[0] = tab[v >> 18], q[1] = tab[(v >> 12) & 63];
    q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    q[3] = '=';
    wput(b, q, 4);
  }
}

static void hex(const unsigned char *d, size_t n, char *out)
{
  static const char h[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) out[2 * i] = h[d[i] >> 4], out[2 * i + 1] = h[d[i] & 15];
  out[2 * n] = '\0';
}

static void sha256_hex(const char *p, size_t n, char out[65])
{
  unsigned char md[32];
  unsigned len = 32;
  EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
  hex(md, 32, out);
}

static void hmac(const unsigned char *key, size_t kn, const char *msg, size_t mn, unsigned char out[32])
{
  unsigned len = 32;
  HMAC(EVP_sha256(), key, (int)kn, (const unsigned char *)msg, mn, out, &len);
}

typedef struct work {
  int records;
  unsigned char data[500][100];
  char pkey[500][24];
  unsigned char key[32]; /* the SigV4 signing key, derived once a day */
  char host[256], target[64];
  wbuf body, creq, sts;
} work;

static void work_init(work *w, int records, const char *url)
{
  unsigned char k1[32], k2[32], k3[32];
  const char *secret = "AWS4SECRET", *h;
  int i, j;
  memset(w, 0, sizeof *w);
  w->records = records;
  for (i = 0; i < records && i < 500; i++) {
    for (j = 0; j < 100; j++) w->data[i][j] = (unsigned char)(i * 31 + j * 7);
    snprintf(w->pkey[i], sizeof w->pkey[i], "partition-key-%04d", i + 1);
  }
  hmac((const unsigned char *)secret, strlen(secret), "20260101", 8, k1);
  hmac(k1, 32, "us-east-1", 9, k2);
  hmac(k2, 32, "kinesis", 7, k3);
  hmac(k3, 32, "aws4_request", 12, w->key);
  h = strstr(url, "://");
  snprintf(w->host, sizeof w->host, "%s", h ? h + 3 : url);
  if (strchr(w->host, '/')) *strchr(w->host, '/') = '\0';
  snprintf(w->target, sizeof w->target, "Kinesis_20131202.%s", records == 1 ? "PutRecord" : "PutRecords");
}

/* One call's work: the body and the signed headers (a fresh list). */
static struct curl_slist *work_call(work *w)
{
  char body_hash[65], creq_hash[65], sig[65], date[17], line[512];
  unsigned char mac[32];
  struct curl_slist *sl = NULL;
  time_t t = time(NULL);
  struct tm tm;
  int i;
  w->body.n = w->creq.n = w->sts.n = 0;
  if (w->records == 1) {
    wputs(&w->body, "{\"StreamName\":\"bench\",\"PartitionKey\":\"");
    wputs(&w->body, w->pkey[0]);
    wputs(&w->body, "\",\"Data\":\"");
    b64(&w->body, w->data[0], 100);
    wputs(&w->body, "\"}");
  } else {
    wputs(&w->body, "{\"StreamName\":\"bench\",\"Records\":[");
    for (i = 0; i < w->records; i++) {
      wputs(&w->body, i ? ",{\"Data\":\"" : "{\"Data\":\"");
      b64(&w->body, w->data[i], 100);
      wputs(&w->body, "\",\"PartitionKey\":\"");
      wputs(&w->body, w->pkey[i]);
      wputs(&w->body, "\"}");
    }
    wputs(&w->body, "]}");
  }
  gmtime_r(&t, &tm);
  strftime(date, sizeof date, "%Y%m%dT%H%M%SZ", &tm);
  sha256_hex(w->body.p, w->body.n, body_hash);
  wputs(&w->creq, "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:");
  wputs(&w->creq, w->host);
  wputs(&w->creq, "\nx-amz-date:");
  wputs(&w->creq, date);
  wputs(&w->creq, "\nx-amz-target:");
  wputs(&w->creq, w->target);
  wputs(&w->creq, "\n\ncontent-type;host;x-amz-date;x-amz-target\n");
  wput(&w->creq, body_hash, 64);
  sha256_hex(w->creq.p, w->creq.n, creq_hash);
  wputs(&w->sts, "AWS4-HMAC-SHA256\n");
  wputs(&w->sts, date);
  wputs(&w->sts, "\n20260101/us-east-1/kinesis/aws4_request\n");
  wput(&w->sts, creq_hash, 64);
  hmac(w->key, 32, w->sts.p, w->sts.n, mac);
  hex(mac, 32, sig);
  sl = curl_slist_append(sl, "Content-Type: application/x-amz-json-1.1");
  snprintf(line, sizeof line, "X-Amz-Target: %s", w->target);
  sl = curl_slist_append(sl, line);
  snprintf(line, sizeof line, "X-Amz-Date: %s", date);
  sl = curl_slist_append(sl, line);
  snprintf(line, sizeof line,
           "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kinesis/aws4_request, "
           "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=%s", sig);
  sl = curl_slist_append(sl, line);
  sl = curl_slist_append(sl, "Expect:");
  return sl;
}

int main(int argc, char **argv)
{
  size_t hlen = 0, blen = 0, bytes_in = 0;
  char *headers, *body, *line, *save = NULL;
  struct curl_slist *slist = NULL;
  double seconds, t0, elapsed, cpu;
  clock_t c0;
  long warmup, calls = 0, connects = 0, i, status;
  CURL *e;
  CURLcode rc;
  static work w;
  double work_s = 0;
  int working = argc > 7 && strcmp(argv[6], "work") == 0;

  if (argc < 5) {
    fprintf(stderr, "usage: floor URL HEADERS_FILE BODY_FILE SECONDS [WARMUP_CALLS]\n");
    return 2;
  }
  seconds = atof(argv[4]);
  warmup = argc > 5 ? atol(argv[5]) : 100;
  headers = slurp(argv[2], &hlen);
  body = slurp(argv[3], &blen);
  if (headers == NULL || body == NULL) {
    fprintf(stderr, "floor: cannot read %s or %s\n", argv[2], argv[3]);
    return 2;
  }
  for (line = strtok_r(headers, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
    if (*line != '\0') slist = curl_slist_append(slist, line);
  /* the client suppresses Expect: 100-continue the same way (transport.c) */
  slist = curl_slist_append(slist, "Expect:");

  curl_global_init(CURL_GLOBAL_DEFAULT);
  e = curl_easy_init();
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, slist);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)&bytes_in);
  if (working) work_init(&w, atoi(argv[7]) > 500 ? 500 : atoi(argv[7]), argv[1]);

  for (i = 0; i < warmup; i++) {
    rc = curl_easy_perform(e);
    if (rc != CURLE_OK) {
      fprintf(stderr, "floor: %s\n", curl_easy_strerror(rc));
      return 1;
    }
  }
  bytes_in = 0;
  c0 = clock();
  t0 = now();
  do {
    /* time is read every 16 calls: a clock read is not free either */
    for (i = 0; i < 16; i++) {
      long c = 0;
      struct curl_slist *sl = NULL;
      if (working) {
        double w0 = cpu_now();
        sl = work_call(&w);
        work_s += cpu_now() - w0;
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, sl);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, w.body.p);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)w.body.n);
        blen = w.body.n;
      }
      rc = curl_easy_perform(e);
      curl_slist_free_all(sl);
      if (rc != CURLE_OK) {
        fprintf(stderr, "floor: %s\n", curl_easy_strerror(rc));
        return 1;
      }
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      if (status < 200 || status > 299) {
        fprintf(stderr, "floor: HTTP %ld\n", status);
        return 1;
      }
      curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &c);
      connects += c;
      calls++;
    }
    elapsed = now() - t0;
  } while (elapsed < seconds);
  cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;

  printf("{\"calls\":%ld,\"seconds\":%.6f,\"rate\":%.3f,\"connects\":%ld,"
         "\"bytes_in\":%lu,\"body_bytes\":%lu,\"cpu_us\":%.3f,\"work_us\":%.3f,\"hwm_kb\":%ld}\n",
         calls, elapsed, (double)calls / elapsed, connects,
         (unsigned long)bytes_in, (unsigned long)blen, cpu * 1e6 / (double)calls,
         work_s * 1e6 / (double)calls, hwm_kb());
  curl_easy_cleanup(e);
  curl_slist_free_all(slist);
  curl_global_cleanup();
  free(headers);
  free(body);
  return 0;
}
