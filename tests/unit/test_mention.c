/* Unit: the mention decoder (docs/mention.md) - valid shapes, every rejection names its field. */
#include <stdlib.h>
#include <string.h>

#include "mention.h"
#include "testlib.h"

static fp_err_t dec(const char *s, fp_mention_t *m, char *err, size_t es) {
  memset(m, 0, sizeof(*m));
  return fp_mention_decode(s, strlen(s), 1 << 20, m, err, es);
}

static void test_valid(void) {
  fp_mention_t m;
  char err[256];
  const char *s = "{\"id\":\"m1\",\"platform\":\"x\",\"brand\":\"acme\",\"author\":{\"id\":\"u1\","
                  "\"followers\":1200,\"verified\":true},\"text\":\"hello\",\"lang\":\"en\","
                  "\"created_at\":\"2026-11-25T10:00:00.250Z\",\"reshare_of\":\"m0\","
                  "\"engagement\":{\"likes\":3,\"reshares\":2,\"replies\":1},\"sentiment\":-0.5,"
                  "\"url\":\"https://x.example/m1\",\"extra\":{\"kept\":true}}";
  FPT_CHECK_EQ_INT(dec(s, &m, err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_STR(m.id, "m1");
  FPT_CHECK_EQ_STR(m.brand, "acme");
  FPT_CHECK_EQ_STR(m.author_id, "u1");
  FPT_CHECK_EQ_INT(m.followers, 1200);
  FPT_CHECK_EQ_INT(m.verified, 1);
  FPT_CHECK_EQ_INT(m.created_at_ms, 1795600800250LL);
  FPT_CHECK_EQ_STR(m.reshare_of, "m0");
  FPT_CHECK_EQ_INT(m.likes + m.reshares + m.replies, 6);
  FPT_CHECK(m.has_sentiment && m.sentiment == -0.5, "sentiment decoded");
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(m.doc, "created_at_ms")), 1795600800250LL);
  fp_mention_clear(&m);
  FPT_CHECK(m.doc == NULL, "clear releases the document");

  /* entities instead of brand, epoch milliseconds and seconds, no sentiment */
  FPT_CHECK_EQ_INT(dec("{\"id\":\"m2\",\"entities\":[\"acme\",\"acme-phone\"],\"author\":{\"id\":\"u\"},"
                       "\"text\":\"t\",\"created_at\":1795600800000}", &m, err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_STR(m.brand, "acme");
  FPT_CHECK_EQ_INT(m.created_at_ms, 1795600800000LL);
  FPT_CHECK_EQ_INT(m.has_sentiment, 0);
  fp_mention_clear(&m);
  FPT_CHECK_EQ_INT(dec("{\"id\":\"m3\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"t\","
                       "\"created_at\":1795600800}", &m, err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(m.created_at_ms, 1795600800000LL);
  fp_mention_clear(&m);
  FPT_CHECK_EQ_INT(dec("{\"id\":\"m4\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"t\","
                       "\"created_at\":\"2026-11-25T12:00:00+02:00\"}", &m, err, sizeof(err)), FP_OK);
  FPT_CHECK_EQ_INT(m.created_at_ms, 1795600800000LL);
  fp_mention_clear(&m);
}

static void expect(const char *s, fp_err_t want, const char *field) {
  fp_mention_t m;
  char err[256] = "";
  fp_err_t got = dec(s, &m, err, sizeof(err));
  FPT_CHECK(got == want, "%s -> %s (%s), want %s", s, fp_err_name(got), err, fp_err_name(want));
  if (field) FPT_CHECK(strstr(err, field) != NULL, "reason \"%s\" names %s", err, field);
  FPT_CHECK(m.doc == NULL, "nothing kept on failure");
}

static void test_rejections(void) {
  const char *ok_tail = "\"author\":{\"id\":\"u\"},\"text\":\"t\",\"created_at\":1795600800000";
  char buf[512];
  expect("{not json", FP_ERR_DECODE, "invalid JSON");
  expect("", FP_ERR_DECODE, "empty");
  expect("[1,2]", FP_ERR_SCHEMA, "object");
  expect("{\"id\":\"a\",\"id\":\"b\"}", FP_ERR_DECODE, "duplicate");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"text\":\"\\u0000\"}", FP_ERR_DECODE, NULL);
  expect("{\"id\":\"x\",\"brand\":\"b\",\"text\":\"\xff\"}", FP_ERR_DECODE, NULL);
  snprintf(buf, sizeof(buf), "{\"brand\":\"b\",%s}", ok_tail);
  expect(buf, FP_ERR_SCHEMA, "id");
  snprintf(buf, sizeof(buf), "{\"id\":7,\"brand\":\"b\",%s}", ok_tail);
  expect(buf, FP_ERR_SCHEMA, "id");
  snprintf(buf, sizeof(buf), "{\"id\":\"x\",%s}", ok_tail);
  expect(buf, FP_ERR_SCHEMA, "brand");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"created_at\":1795600800000}", FP_ERR_SCHEMA, "text");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"t\"}", FP_ERR_SCHEMA, "created_at");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"t\",\"created_at\":\"yesterday\"}",
         FP_ERR_SCHEMA, "created_at");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"t\",\"created_at\":5}",
         FP_ERR_SCHEMA, "created_at");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"author\":\"u\",\"text\":\"t\",\"created_at\":1795600800000}",
         FP_ERR_SCHEMA, "author");
  expect("{\"id\":\"x\",\"brand\":\"b\",\"author\":{\"id\":\"u\",\"followers\":-3},\"text\":\"t\",\"created_at\":1795600800000}",
         FP_ERR_SCHEMA, "author.followers");
  snprintf(buf, sizeof(buf), "{\"id\":\"x\",\"brand\":\"b\",%s,\"sentiment\":3}", ok_tail);
  expect(buf, FP_ERR_SCHEMA, "sentiment");
  snprintf(buf, sizeof(buf), "{\"id\":\"x\",\"brand\":\"b\",%s,\"engagement\":{\"likes\":\"many\"}}", ok_tail);
  expect(buf, FP_ERR_SCHEMA, "engagement.likes");
  snprintf(buf, sizeof(buf), "{\"id\":\"x\",\"entities\":[1],%s}", ok_tail);
  expect(buf, FP_ERR_SCHEMA, "entities[0]");
  snprintf(buf, sizeof(buf), "{\"id\":\"x\",\"brand\":\"b\",%s,\"big\":1e400}", ok_tail);
  expect(buf, FP_ERR_DECODE, NULL);
}

static void test_size_cap_and_nesting(void) {
  fp_mention_t m;
  char err[256];
  size_t n = 2 << 20;
  char *big = malloc(n + 1), *deep = malloc(20000);
  memset(big, ' ', n);
  big[0] = '{';
  big[n - 1] = '}';
  big[n] = '\0';
  memset(&m, 0, sizeof(m));
  FPT_CHECK_EQ_INT(fp_mention_decode(big, n, 1 << 20, &m, err, sizeof(err)), FP_ERR_TOO_LARGE);
  FPT_CHECK(strstr(err, "exceeds") != NULL, "size reason: %s", err);
  for (int i = 0; i < 9000; i++) deep[i] = '[';
  deep[9000] = '\0';
  FPT_CHECK_EQ_INT(fp_mention_decode(deep, 9000, 1 << 20, &m, err, sizeof(err)), FP_ERR_DECODE);
  free(big);
  free(deep);
}

int main(void) {
  fpt_run("valid mentions", test_valid);
  fpt_run("rejections name the field", test_rejections);
  fpt_run("size cap and nesting", test_size_cap_and_nesting);
  return fpt_done();
}
