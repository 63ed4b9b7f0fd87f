/* floor.c - the floor for the HTTP benchmarks: one libcurl easy handle,
 * configured once, sending the same pre-built (pre-signed) request again and
 * again over one keep-alive connection. No per-call work at all: no
 * validation, no JSON, no signing, the response body is counted and dropped.
 * Whatever lua-kinesis does per call is measured against this.
 *
 *   floor URL HEADERS_FILE BODY_FILE SECONDS [WARMUP_CALLS]
 *
 * HEADERS_FILE holds one "Name: value" per line, as the client sent them.
 * Prints one JSON line: calls, seconds, rate (calls/s), connects, bytes_in,
 * body_bytes, cpu_us (this process's CPU time per call, user + system: less
 * sensitive to other load than the rate), hwm_kb (peak RSS, VmHWM). Exit status 1 on any
 * transport error or non-2xx answer. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
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
      rc = curl_easy_perform(e);
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
         "\"bytes_in\":%lu,\"body_bytes\":%lu,\"cpu_us\":%.3f,\"hwm_kb\":%ld}\n",
         calls, elapsed, (double)calls / elapsed, connects,
         (unsigned long)bytes_in, (unsigned long)blen, cpu * 1e6 / (double)calls, hwm_kb());
  curl_easy_cleanup(e);
  curl_slist_free_all(slist);
  curl_global_cleanup();
  free(headers);
  free(body);
  return 0;
}
