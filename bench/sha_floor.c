/* sha_floor.c - the baseline for signatures per second: OpenSSL SHA-256 of
 * the payload alone, called the way the C core calls it (EVP_Digest with
 * EVP_sha256(), src/sigv4.c kn_sha256). A SigV4 signature must hash the
 * payload at least once, so sign/s can at best approach this rate.
 *
 *   sha_floor SIZE SECONDS [profile]
 *
 * Prints one JSON line: size, calls, seconds, rate, hwm_kb. With "profile"
 * it adds the rates of the primitives the signer is built from, for the
 * profiling notes: a pre-fetched EVP_MD with a reused context (no implicit
 * algorithm fetch per call), HMAC-SHA256 through EVP_Q_mac (what the core
 * uses) and through a pre-fetched EVP_MAC context, on a 200-byte message
 * (the size of a string to sign). */
#define _POSIX_C_SOURCE 200809L
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
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

enum { PLAIN, FETCHED, QMAC, MACCTX };

static volatile unsigned char sink;

/* Runs `kind` on data[0..n) for `seconds`; returns calls per second. */
static double rate_of(int kind, const unsigned char *data, size_t n, double seconds,
                      long *calls_out, double *elapsed_out)
{
  unsigned char out[EVP_MAX_MD_SIZE];
  static const unsigned char key[32] = { 1, 2, 3 };
  EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *mctx = EVP_MAC_CTX_new(mac);
  OSSL_PARAM params[2];
  unsigned int len;
  size_t mlen;
  long calls = 0;
  double t0 = now(), elapsed;
  int i;

  params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
  params[1] = OSSL_PARAM_construct_end();
  EVP_MAC_init(mctx, key, sizeof key, params);
  do {
    for (i = 0; i < 8; i++) {
      switch (kind) {
      case PLAIN:
        EVP_Digest(data, n, out, &len, EVP_sha256(), NULL);
        break;
      case FETCHED:
        EVP_DigestInit_ex(ctx, md, NULL);
        EVP_DigestUpdate(ctx, data, n);
        EVP_DigestFinal_ex(ctx, out, &len);
        break;
      case QMAC:
        EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof key, data, n,
                  out, sizeof out, &mlen);
        break;
      default:
        EVP_MAC_init(mctx, NULL, 0, NULL);
        EVP_MAC_update(mctx, data, n);
        EVP_MAC_final(mctx, out, &mlen, sizeof out);
        break;
      }
      sink ^= out[0];
      calls++;
    }
    elapsed = now() - t0;
  } while (elapsed < seconds);
  EVP_MAC_CTX_free(mctx);
  EVP_MAC_free(mac);
  EVP_MD_CTX_free(ctx);
  EVP_MD_free(md);
  if (calls_out) *calls_out = calls;
  if (elapsed_out) *elapsed_out = elapsed;
  return (double)calls / elapsed;
}

int main(int argc, char **argv)
{
  size_t size, i;
  double seconds, rate, elapsed;
  unsigned char *data;
  long calls;

  if (argc < 3) {
    fprintf(stderr, "usage: sha_floor SIZE SECONDS [profile]\n");
    return 2;
  }
  size = (size_t)atol(argv[1]);
  seconds = atof(argv[2]);
  data = malloc(size > 256 ? size : 256);
  if (data == NULL) return 1;
  for (i = 0; i < (size > 256 ? size : 256); i++) data[i] = (unsigned char)(i * 131 + 7);

  rate_of(PLAIN, data, size, seconds / 10, NULL, NULL); /* warm-up */
  rate = rate_of(PLAIN, data, size, seconds, &calls, &elapsed);
  printf("{\"size\":%lu,\"calls\":%ld,\"seconds\":%.6f,\"rate\":%.3f",
         (unsigned long)size, calls, elapsed, rate);
  if (argc > 3 && strcmp(argv[3], "profile") == 0) {
    printf(",\"sha256_prefetched_rate\":%.3f", rate_of(FETCHED, data, size, seconds, NULL, NULL));
    printf(",\"hmac200_q_mac_rate\":%.3f", rate_of(QMAC, data, 200, seconds, NULL, NULL));
    printf(",\"hmac200_ctx_rate\":%.3f", rate_of(MACCTX, data, 200, seconds, NULL, NULL));
  }
  printf(",\"hwm_kb\":%ld}\n", hwm_kb());
  free(data);
  return 0;
}
