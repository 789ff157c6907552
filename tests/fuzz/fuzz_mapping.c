/*
 * fuzz_mapping.c - libFuzzer target for schema mappings (engine/mapping.c): loading a mapping
 * specification, and applying one to a document, bytes in and bytes out.
 *
 * Byte 0 picks the form:
 *   bit 0 set: a fixed mapping (a nested tweet feed, below); the rest is the document;
 *   clear:     bytes 1-2 (little-endian) give the length of a mapping specification (JSON) that
 *              follows; the rest is the document.
 * Bits 1-2 pick the input name looked up with fp_mapping_set_find ("tweets", "tweets.jsonl.gz",
 * "other", "").
 * Oracle: documented codes with a reason; a transformed document is one compact JSON object
 * that fp_mention_decode then accepts or rejects with a documented code; the timestamp parser
 * never crashes on any value of the document in any format.
 */
#include <jansson.h>

#include "fuzz_common.h"
#include "mapping.h"
#include "mention.h"

static const char k_spec[] =
    "{\"topics\":{\"tweets\":{"
    "\"id\":\"id_str\",\"text\":{\"from\":[\"full_text\",\"text\"]},"
    "\"created_at\":{\"from\":\"created_at\",\"format\":\"twitter\"},"
    "\"author.id\":\"user.id_str\",\"author.followers\":{\"from\":\"user.followers_count\",\"default\":0},"
    "\"author.verified\":\"user.verified\",\"brand\":{\"const\":\"acme\"},"
    "\"entities\":{\"from\":\"keywords\",\"split\":\",\"},"
    "\"hashtags\":{\"from\":\"entities.hashtags\",\"each\":\"text\"},"
    "\"reshare_of\":\"retweeted_status.id_str\",\"url\":\"entities.urls.0.expanded_url\","
    "\"engagement.likes\":\"favorite_count\",\"sentiment\":\"scores.sentiment\","
    "\"lang\":\"lang\",\"extra.when\":{\"from\":\"ts\",\"type\":\"time\"},\"$keep\":true},"
    "\"*\":{\"id\":\"0\",\"text\":\"1\",\"created_at\":{\"from\":\"2\",\"format\":\"epoch_s\"},"
    "\"author.id\":\"3\",\"brand\":\"4\"}}}";

static fp_mapping_set_t *g_fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char err[512];
  json_error_t je;
  json_t *spec = json_loads(k_spec, 0, &je);
  FZ_CHECK(spec != NULL, "fixed spec: %s", je.text);
  g_fixed = fp_mapping_set_from_json(spec, err, sizeof err);
  FZ_CHECK(g_fixed != NULL, "fixed mapping: %s", err);
  json_decref(spec);
  return 0;
}

static void times(const uint8_t *doc, size_t len) {
  static const char *const formats[] = {"auto", "rfc3339", "twitter", "epoch_s", "epoch_ms"};
  json_t *j = json_loadb((const char *)doc, len, JSON_DECODE_ANY, NULL), *v;
  const char *k;
  int64_t ms;
  if (!j) return;
  for (size_t f = 0; f < 5; f++) {
    fp_err_t rc = fp_mapping_parse_time(j, formats[f], &ms);
    FZ_CHECK(rc == FP_OK || rc == FP_ERR_SCHEMA, "parse_time %d", (int)rc);
    if (json_is_object(j))
      json_object_foreach(j, k, v) {
        rc = fp_mapping_parse_time(v, formats[f], &ms);
        FZ_CHECK(rc == FP_OK || rc == FP_ERR_SCHEMA, "parse_time %d", (int)rc);
      }
  }
  json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const names[] = {"tweets", "tweets.jsonl.gz", "other", ""};
  fz_t f = {data, size};
  char err[512];
  fp_mapping_set_t *own = NULL;
  const fp_mapping_set_t *set = g_fixed;
  uint8_t mode = fz_u8(&f);

  if (!(mode & 1)) {
    size_t n = fz_u16(&f);
    if (n > f.n) n = f.n;
    json_t *spec = json_loadb((const char *)f.p, n, 0, NULL);
    f.p += n, f.n -= n;
    if (!spec) return 0;
    err[0] = '\0';
    own = fp_mapping_set_from_json(spec, err, sizeof err);
    json_decref(spec);
    if (!own) {
      FZ_CHECK(err[0] != '\0', "mapping refused without a reason");
      return 0;
    }
    set = own;
  }
  const fp_mapping_t *m = fp_mapping_set_find(set, names[(mode >> 1) & 3]);
  if (m) {
    fp_buf_t out = {0};
    FZ_CHECK(fp_mapping_name(m) != NULL, "mapping without a name");
    err[0] = '\0';
    fp_err_t rc = fp_mapping_transform(m, f.p, f.n, &out, err, sizeof err);
    FZ_CHECK(rc == FP_OK || rc == FP_ERR_DECODE || rc == FP_ERR_SCHEMA, "transform %d (%s)",
             (int)rc, err);
    if (rc != FP_OK) {
      FZ_CHECK(err[0] != '\0', "transform failed without a reason");
    } else {
      json_error_t je;
      json_t *j = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, &je);
      FZ_CHECK(j && json_is_object(j), "transform output is not one JSON object: %s", je.text);
      json_decref(j);
      fp_mention_t mt;
      rc = fp_mention_decode(out.data, out.len, SIZE_MAX, &mt, err, sizeof err);
      FZ_CHECK(rc == FP_OK || rc == FP_ERR_SCHEMA || rc == FP_ERR_DECODE, "decode %d", (int)rc);
      if (rc == FP_OK) fp_mention_clear(&mt);
    }
    fp_buf_free(&out);
  }
  times(f.p, f.n);
  fp_mapping_set_destroy(own);
  return 0;
}
