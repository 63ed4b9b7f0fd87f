/* header.h - one HTTP header as the C core passes it around: the signer
 * (sigv4.h) signs these and the transport (transport.h) sends them. Both
 * strings are borrowed, pointer + length (any byte, no NUL needed). */
#ifndef KN_HEADER_H
#define KN_HEADER_H

#include <stddef.h>

typedef struct kn_header {
  const char *name;  /* borrowed */
  size_t name_len;
  const char *value; /* borrowed */
  size_t value_len;
} kn_header;

#endif
