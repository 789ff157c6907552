/*
 * fuzz_mention.c - libFuzzer target for the mention decoder (engine/mention.c).
 *
 * Input: byte 0 picks the options, the rest is the Kafka message value.
 *   bit 0 set: a small input.max.bytes, 64 + byte 1 * 4 (64..1084; byte 1 is consumed);
 *   clear:     the default input.max.bytes, 1 MiB.
 * Oracle, beyond "no sanitizer report": the result is one of the documented codes with a
 * non-empty reason; FP_ERR_TOO_LARGE exactly when the message exceeds max_bytes; on success
 * every required field is set and in range, and the canonical document re-encodes
 * (json_dumps) and decodes again to the same mention.
 */
#include <jansson.h>
#include <math.h>

#include "fuzz_common.h"
#include "mention.h"

#define DEFAULT_MAX_BYTES (1024 * 1024)

static int streq(const char *a, const char *b) {
  if (!a || !b) return a == b;
  return strcmp(a, b) == 0;
}

static void check_valid(const fp_mention_t *m) {
  FZ_CHECK(m->doc && json_is_object(m->doc), "no document");
  FZ_CHECK(m->id && *m->id && strlen(m->id) <= 256, "id");
  FZ_CHECK(m->brand && *m->brand, "brand");
  FZ_CHECK(m->author_id && *m->author_id, "author.id");
  FZ_CHECK(m->text, "text");
  FZ_CHECK(m->created_at_ms >= 946684800000LL, "created_at_ms %lld", (long long)m->created_at_ms);
  FZ_CHECK(m->followers >= 0 && m->likes >= 0 && m->reshares >= 0 && m->replies >= 0,
           "negative count");
  FZ_CHECK(!m->has_sentiment || (m->sentiment >= -1.0 && m->sentiment <= 1.0), "sentiment %g",
           m->sentiment);
  FZ_CHECK(json_integer_value(json_object_get(m->doc, "created_at_ms")) == m->created_at_ms,
           "canonical created_at_ms");
  FZ_CHECK(streq(json_string_value(json_object_get(m->doc, "brand")), m->brand),
           "canonical brand");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_t f = {data, size};
  size_t max_bytes = DEFAULT_MAX_BYTES;
  char err[256];
  fp_mention_t m, m2;

  if (fz_u8(&f) & 1) max_bytes = 64 + (size_t)fz_u8(&f) * 4;
  err[0] = '\0';
  fp_err_t rc = fp_mention_decode(f.p, f.n, max_bytes, &m, err, sizeof err);
  FZ_CHECK(rc == FP_OK || rc == FP_ERR_TOO_LARGE || rc == FP_ERR_DECODE || rc == FP_ERR_SCHEMA,
           "unexpected code %d (%s)", (int)rc, err);
  FZ_CHECK((rc == FP_ERR_TOO_LARGE) == (f.n > max_bytes), "too_large with %zu/%zu", f.n,
           max_bytes);
  if (rc != FP_OK) {
    FZ_CHECK(err[0] != '\0', "failure %d without a reason", (int)rc);
    return 0;
  }
  check_valid(&m);

  /* The canonical form must decode again to the same mention. */
  char *text = json_dumps(m.doc, JSON_COMPACT);
  FZ_CHECK(text != NULL, "canonical document does not encode");
  rc = fp_mention_decode(text, strlen(text), SIZE_MAX, &m2, err, sizeof err);
  FZ_CHECK(rc == FP_OK, "canonical form rejected: %s\n%s", err, text);
  check_valid(&m2);
  FZ_CHECK(streq(m.id, m2.id) && streq(m.brand, m2.brand) && streq(m.author_id, m2.author_id) &&
               streq(m.text, m2.text) && streq(m.platform, m2.platform) &&
               streq(m.lang, m2.lang) && streq(m.url, m2.url) &&
               streq(m.reshare_of, m2.reshare_of),
           "strings changed in the round trip");
  FZ_CHECK(m.created_at_ms == m2.created_at_ms && m.followers == m2.followers &&
               m.verified == m2.verified && m.has_sentiment == m2.has_sentiment &&
               (!m.has_sentiment || m.sentiment == m2.sentiment) && m.likes == m2.likes &&
               m.reshares == m2.reshares && m.replies == m2.replies,
           "numbers changed in the round trip");
  fp_mention_clear(&m2);
  free(text);
  fp_mention_clear(&m);
  return 0;
}
