/* eventstream.h - application/vnd.amazon.eventstream codec (the framing of
 * SubscribeToShard responses): a streaming decoder fed arbitrary chunks and
 * an encoder. No Lua, no I/O and no allocation: the caller lends the decoder
 * its buffer (KN_ES_NEED_SPACE says how big), so the memory belongs to
 * whoever embeds it. Format: smithy docs/source-2.0/aws/amazon-eventstream.rst. */
#ifndef KN_EVENTSTREAM_H
#define KN_EVENTSTREAM_H

#include <stddef.h>
#include <stdint.h>

/* Largest message accepted (and default limit): 16 MiB. A SubscribeToShard
 * event holds at most 10 MiB of records, about 13.4 MiB once base64'd. */
#define KN_ES_MAX_MESSAGE ((size_t)16 * 1024 * 1024)
/* Prelude (total length, headers length, prelude CRC) + trailing CRC. */
#define KN_ES_PRELUDE_BYTES 12
#define KN_ES_OVERHEAD 16
/* A drained decoder whose buffer is larger than this should hand it back
 * (kn_es_decoder_should_release), so one big message does not pin memory. */
#define KN_ES_RETAIN_BYTES ((size_t)256 * 1024)

/* Status codes. Non-negative values are not errors. */
enum {
  KN_ES_OK = 0,
  KN_ES_MORE = 1,       /* needs more input bytes */
  KN_ES_NEED_SPACE = 2, /* lend a buffer of kn_es_decoder_wanted() bytes, retry */
  KN_ES_END = 3,        /* no more headers in the block */
  KN_ES_EINCOMPLETE = -1,
  KN_ES_EPRELUDE_CRC = -2,
  KN_ES_EMESSAGE_CRC = -3,
  KN_ES_ELENGTH = -4,
  KN_ES_EHEADER = -5,
  KN_ES_EDUPLICATE = -6,
  KN_ES_EEMPTY_NAME = -7,
  KN_ES_ETOO_LARGE = -8
};

/* Header value types, as on the wire. */
enum {
  KN_ES_BOOL_TRUE = 0,
  KN_ES_BOOL_FALSE = 1,
  KN_ES_BYTE = 2,
  KN_ES_INT16 = 3,
  KN_ES_INT32 = 4,
  KN_ES_INT64 = 5,
  KN_ES_BYTES = 6,
  KN_ES_STRING = 7,
  KN_ES_TIMESTAMP = 8,
  KN_ES_UUID = 9
};

/* One header. Pointers are borrowed: from the decoder's buffer when read
 * (valid until the next call on that decoder), from the caller when encoded.
 * `i` holds bool (1/0), byte, int16, int32, int64 and timestamp (ms) values;
 * `data`/`data_len` hold bytes, string and uuid (16 bytes) values. */
typedef struct kn_es_header {
  const uint8_t *name;
  size_t name_len;
  int type;
  int64_t i;
  const uint8_t *data;
  size_t data_len;
} kn_es_header;

/* One decoded message; `headers` and `payload` point into the decoder's
 * buffer and stay valid until the next call that takes the decoder. */
typedef struct kn_es_message {
  uint32_t total_length;
  uint32_t headers_length;
  uint32_t prelude_crc;
  uint32_t message_crc;
  const uint8_t *headers;
  size_t headers_len;
  const uint8_t *payload;
  size_t payload_len;
} kn_es_message;

/* Streaming decoder state. Embed it anywhere; all fields are private. */
typedef struct kn_es_decoder {
  uint8_t *buf;       /* lent by the caller, never freed here */
  size_t cap;         /* bytes at buf */
  size_t start, end;  /* held bytes are buf[start, end) */
  size_t max_message;
  size_t wanted;      /* capacity asked for by the last KN_ES_NEED_SPACE */
  int status;         /* 0, or the sticky error */
  int crc_ok;         /* the message at start has passed its CRC check */
  char detail[112];   /* text of the sticky or last error */
} kn_es_decoder;

/* Prepares `d` with no buffer. max_message is clamped to
 * [KN_ES_OVERHEAD, KN_ES_MAX_MESSAGE]; 0 means KN_ES_MAX_MESSAGE. */
void kn_es_decoder_init(kn_es_decoder *d, size_t max_message);

/* Copies `len` bytes of `data` (borrowed for the call) to the end of the
 * held bytes. KN_ES_OK; KN_ES_NEED_SPACE (nothing copied: lend a buffer and
 * call again); KN_ES_ETOO_LARGE if the sizes overflow; or the sticky error
 * of a failed decoder. Compacts consumed bytes when that costs no more than
 * the room it gains, so copying stays amortised O(1) per byte. */
int kn_es_decoder_feed(kn_es_decoder *d, const uint8_t *data, size_t len);

/* Takes the next complete message. KN_ES_OK fills `out` (views into the
 * buffer, see kn_es_message) and consumes it; KN_ES_MORE when the held bytes
 * are not a whole message yet; KN_ES_NEED_SPACE when checking a message with
 * many headers for duplicates needs scratch room past the held bytes; or an
 * error, which is sticky. The prelude is checked (CRC, then lengths and the
 * size limit) as soon as its 12 bytes are held, before the rest arrives. */
int kn_es_decoder_next(kn_es_decoder *d, kn_es_message *out);

/* End of input. KN_ES_OK when nothing is held, else KN_ES_EINCOMPLETE (not
 * sticky) or the sticky error. The detail text says what is missing. */
int kn_es_decoder_finish(kn_es_decoder *d);

/* Capacity the caller must lend after KN_ES_NEED_SPACE. */
size_t kn_es_decoder_wanted(const kn_es_decoder *d);

/* Hands the decoder `buf` (cap bytes, owned by the caller, which keeps it
 * alive and untouched until it is replaced) and copies the held bytes to its
 * start; *old receives the previous buffer, which the decoder no longer uses,
 * so the caller may free it (message views into it die with it). buf may be
 * NULL with cap 0 when nothing is held. KN_ES_OK, or KN_ES_NEED_SPACE with
 * nothing changed when cap < kn_es_decoder_buffered(d). */
int kn_es_decoder_lend(kn_es_decoder *d, uint8_t *buf, size_t cap,
                       uint8_t **old);

/* Bytes held: a partial message plus complete ones not yet taken by next. */
size_t kn_es_decoder_buffered(const kn_es_decoder *d);

/* 1 when the caller may lend NULL/0 and free the buffer: nothing is held
 * and it exceeds KN_ES_RETAIN_BYTES, or the decoder has failed (a failed
 * decoder drops what it held). */
int kn_es_decoder_should_release(const kn_es_decoder *d);

/* Sticky error code (0 if none) and the text of the last error. The string
 * is owned by `d`. */
int kn_es_decoder_status(const kn_es_decoder *d);
const char *kn_es_decoder_detail(const kn_es_decoder *d);

/* Reads the header at *pos of a headers block (borrowed) into `out` (its
 * pointers borrow from `block`) and advances *pos. KN_ES_OK, KN_ES_END at
 * the end of the block, or KN_ES_EHEADER / KN_ES_EEMPTY_NAME. Duplicates are
 * not detected here: kn_es_decoder_next has done that for its messages. */
int kn_es_header_read(const uint8_t *block, size_t len, size_t *pos,
                      kn_es_header *out);

/* Bytes kn_es_encode needs in `out` for these headers and a payload of
 * payload_len bytes, in *need; *size is the message length, which is <= *need
 * (the rest is scratch for the duplicate check). Validates the headers
 * (name 1..255 bytes, known type, value length, uuid 16 bytes) and the size
 * limit: KN_ES_OK, KN_ES_EHEADER, KN_ES_EEMPTY_NAME or KN_ES_ETOO_LARGE. */
int kn_es_encode_size(const kn_es_header *headers, size_t n,
                      size_t payload_len, size_t *size, size_t *need);

/* Writes one message into `out` (out_cap >= *need from kn_es_encode_size;
 * owned by the caller) and sets *written. Headers and payload are borrowed;
 * payload may be NULL when payload_len is 0. Errors as kn_es_encode_size,
 * plus KN_ES_EDUPLICATE and KN_ES_NEED_SPACE if out_cap is short. */
int kn_es_encode(const kn_es_header *headers, size_t n,
                 const uint8_t *payload, size_t payload_len,
                 uint8_t *out, size_t out_cap, size_t *written);

/* Stable lower-case name of a status code ("incomplete", "too_large", ...);
 * static storage. */
const char *kn_es_code_name(int code);

#endif
