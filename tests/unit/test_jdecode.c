/* Unit: engine/jdecode.h against json_loadb(JSON_REJECT_DUPLICATES), the decoder it replaces:
 * the same documents accepted with equal values, the same ones refused, on hand-picked edge
 * cases (UTF-8, escapes, numbers, nesting, duplicates), on generated mentions and on tens of
 * thousands of seeded mutations of them (bytes flipped, inserted, cut). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gen.h"
#include "jdecode.h"
#include "testlib.h"
#include "util.h"

static int nul_quirks; /* documents json_loadb took only by dropping a raw NUL byte */

/* Decodes with both; @returns 1 when they agree (both refuse, or equal values). The one
 * difference allowed: a raw NUL byte outside a string, which json_loadb drops after a number
 * or a literal (a quirk of its lexer: "[1\0]" is [1]) and fp_json_decode refuses. */
static int agree(const char *s, size_t len, const char *what) {
  char err[200] = "";
  json_error_t jerr;
  json_t *a = fp_json_decode(s, len, err, sizeof(err));
  json_t *b = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
  int ok = (!a && !b) || (a && b && json_equal(a, b));
  if (!ok && !a && b && memchr(s, 0, len)) {
    nul_quirks++;
    ok = 1;
  }
  if (!ok && getenv("FPT_JDECODE_HEX")) {
    for (size_t i = 0; i < len; i++) fprintf(stderr, "%02x%s", (unsigned char)s[i], i % 32 == 31 ? "\n" : " ");
    fprintf(stderr, "\n");
  }
  if (!ok)
    FPT_CHECK(0, "%s: %.*s -> fp_json_decode %s (%s), json_loadb %s (%s)", what, (int)(len > 120 ? 120 : len), s,
              a ? "accepts" : "refuses", err, b ? "accepts" : "refuses", b ? "" : jerr.text);
  if (!a) FPT_CHECK(!strncmp(err, "at byte ", 8), "%s: reason: %s", what, err);
  json_decref(a);
  json_decref(b);
  return ok;
}

static void test_edge_cases(void) {
  static const char *const docs[] = {
      "{}", "[]", " \n\t{\"a\":1}\r\n", "{\"a\":[1,2,{\"b\":null}],\"c\":true,\"d\":false}",
      /* numbers */
      "[0,-0,1,-1,9223372036854775807,-9223372036854775808]", "[9223372036854775808]",
      "[-9223372036854775809]", "[1.5,-2.25e3,1E2,1e-400,0.0,-0.0]", "[1e400]", "[-1e400]",
      "[01]", "[1.]", "[.5]", "[+1]", "[1e]", "[0x10]", "[NaN]", "[Infinity]",
      /* strings and escapes */
      "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"]", "[\"\\u00e9\\u20ac\"]", "[\"caf\xc3\xa9\"]",
      "[\"\\ud83d\\ude00\"]", "[\"\\ud83d\"]", "[\"\\ude00\"]", "[\"\\ud83d\\u0041\"]",
      "[\"\\ud83dx\"]", "[\"\\\\ud83d\"]", "[\"\\u0000\"]", "[\"a\\u0000b\"]", "[\"\\x41\"]",
      "[\"\\u12\"]", "[\"tab\there\"]", "[\"nl\nhere\"]",
      /* UTF-8 */
      "[\"\xc0\x80\"]", "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]", "[\"\xf5\x80\x80\x80\"]",
      "[\"\x80\"]", "[\"\xc3\"]", "[\"\xe2\x82\"]", "[\"\xf0\x9f\x98\x80\"]", "{\"\xff\":1}",
      "{\"k\xc3\xa9\":1}",
      /* keys */
      "{\"a\":1,\"a\":2}", "{\"a\":{\"b\":1,\"b\":1}}", "{\"a\":1,\"b\":{\"a\":1}}",
      "{\"\\u0000\":1}", "{\"a\\u0000b\":1}", "{\"\":1}", "{\"\\u0061\":1,\"a\":2}",
      "{1:2}", "{\"a\" 1}", "{\"a\":}", "{\"a\":1,}", "[1,]", "[,1]",
      /* the top and the end */
      "1", "\"s\"", "null", "true", "", "   ", "{\"a\":1}x", "{\"a\":1} {}", "{\"a\":1}/*c*/",
      "[1]//c", "{", "[", "{\"a\":1", "[\"abc", "}", "]",
      /* literals */
      "[tru]", "[nul]", "[True]", "[null,false,true]",
  };
  for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) agree(docs[i], strlen(docs[i]), "edge case");

  /* "\u0000" in a document with a surrogate escape goes the slow way, refused the same */
  agree("[\"\\ud83d\\ude00\",\"\\u0000\"]", 26, "slow path");
  /* embedded NUL bytes in the input */
  agree("{\"a\":\"x\0y\"}", 11, "raw NUL");
  agree("{\"a\":1}\0", 8, "NUL after");
  nul_quirks = 0;
  agree("[1\0]", 4, "NUL after a number");
  agree("{\"a\":false\0}", 12, "NUL after a literal");
  FPT_CHECK_EQ_INT(nul_quirks, 2);

  /* nesting: jansson's limit is 2048 */
  static char deep[16000];
  for (int d = 2046; d <= 2050; d++) {
    size_t n = 0;
    for (int i = 0; i < d; i++) deep[n++] = '[';
    for (int i = 0; i < d; i++) deep[n++] = ']';
    agree(deep, n, "nesting");
  }
  size_t n = 0;
  for (int i = 0; i < 2100; i++) n += (size_t)sprintf(deep + n, "{\"k\":");
  deep[n++] = '1';
  for (int i = 0; i < 2100; i++) deep[n++] = '}';
  agree(deep, n, "nested objects");

  /* a long key and a long string (past the builder's inline key buffer) */
  static char big[4000];
  n = (size_t)sprintf(big, "{\"");
  for (int i = 0; i < 1000; i++) big[n++] = 'k';
  n += (size_t)sprintf(big + n, "\":\"");
  for (int i = 0; i < 1000; i++) big[n++] = 'v';
  n += (size_t)sprintf(big + n, "\",\"");
  for (int i = 0; i < 1000; i++) big[n++] = 'k';
  n += (size_t)sprintf(big + n, "\":1}");
  agree(big, n, "long key, duplicated");
  big[n - 5] = 'x';
  agree(big, n, "long keys");
}

/* Generated mentions, then seeded mutations of them. */
static void test_generated_and_mutated(void) {
  fp_gen_conf_t c = {0};
  c.seed = 7, c.brands = 20, c.start_ms = 1764000000000LL, c.duration_ms = 3600000;
  c.base_per_min = 30, c.authors = 1000, c.id_prefix = "m";
  fp_gen_t *g = fp_gen_new(&c);
  fp_buf_t out = {0};
  const char *key;
  int crisis, docs = 0, bad = 0, accepted = 0, mutations = 0;
  nul_quirks = 0;
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  char mut[4096];
  while (g && docs < 2000 && fp_gen_next(g, &out, &key, &crisis)) {
    docs++;
    bad += !agree(out.data, out.len, "generated");
    for (int k = 0; k < 20 && out.len + 8 < sizeof(mut); k++) {
      size_t len = out.len;
      memcpy(mut, out.data, len);
      for (int e = 0; e < 1 + k % 3; e++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t at = (size_t)(x % len);
        static const char pool[] = "{}[]\",:\\u0dD8e-+.1 \x00\xc3\xa9\xed\xa0\x80\xff";
        switch ((x >> 32) % 4) {
          case 0: mut[at] = pool[(x >> 40) % (sizeof(pool) - 1)]; break;
          case 1: mut[at] ^= (char)(1 << ((x >> 40) % 8)); break;
          case 2: len = at; break;
          default:
            memmove(mut + at + 1, mut + at, len - at);
            mut[at] = pool[(x >> 40) % (sizeof(pool) - 1)];
            len++;
        }
        if (len == 0) break;
      }
      mutations++;
      json_t *j = json_loadb(mut, len, JSON_REJECT_DUPLICATES, NULL);
      accepted += j != NULL;
      json_decref(j);
      bad += !agree(mut, len, "mutated");
      if (bad > 10) break;
    }
    if (bad > 10) break;
  }
  fpt_note("%d generated mentions, %d mutations (%d of them valid JSON): %d disagreements, %d "
           "taken by json_loadb only past a raw NUL", docs, mutations, accepted, bad, nul_quirks);
  FPT_CHECK(docs == 2000, "generated %d", docs);
  FPT_CHECK(accepted > mutations / 20 && accepted < mutations, "a mix of valid and invalid: %d of %d",
            accepted, mutations);
  FPT_CHECK_EQ_INT(bad, 0);
  fp_buf_free(&out);
  fp_gen_destroy(g);
}

int main(void) {
  fpt_run("edge_cases", test_edge_cases);
  fpt_run("generated_and_mutated", test_generated_and_mutated);
  return fpt_done();
}
