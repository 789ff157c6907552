/* Unit: the mention arena (engine/jarena.h) - documents decoded in it read back the same,
 * its blocks are told from heap blocks by address, a reset rewinds it and gives back what a
 * big run took, and values made outside it (before or after) live and die on the heap. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jarena.h"
#include "mention.h"
#include "testlib.h"

static const char *const doc =
    "{\"id\":\"m1\",\"brand\":\"acme\",\"author\":{\"id\":\"u1\",\"followers\":12},\"text\":\"refund now\","
    "\"created_at\":\"2026-11-25T10:00:00Z\",\"sentiment\":-0.5,\"hashtags\":[\"a\",\"b\"]}";

static fp_err_t decode_in(fp_jarena_t *a, const char *s, size_t len, fp_mention_t *m) {
  char err[256];
  fp_jarena_t *prev = fp_jarena_enter(a);
  fp_err_t e = fp_mention_decode(s, len, 4 << 20, m, err, sizeof(err));
  fp_jarena_leave(prev);
  return e;
}

static void test_decode_reset(void) {
  fp_jarena_t *a = fp_jarena_new();
  fp_mention_t m[64];
  FPT_CHECK(a != NULL, "arena made");
  for (int run = 0; run < 3; run++) {
    for (int i = 0; i < 64; i++) {
      FPT_CHECK_EQ_INT(decode_in(a, doc, strlen(doc), &m[i]), FP_OK);
    }
    for (int i = 0; i < 64; i++) {
      FPT_CHECK_EQ_STR(m[i].author_id, "u1");
      FPT_CHECK_EQ_STR(m[i].text, "refund now");
      FPT_CHECK_EQ_INT(m[i].followers, 12);
      FPT_CHECK_EQ_INT(json_array_size(json_object_get(m[i].doc, "hashtags")), 2);
    }
    FPT_CHECK(fp_jarena_used(a) > 64 * 200, "64 documents came from the arena (%zu bytes)", fp_jarena_used(a));
    FPT_CHECK_EQ_INT(((uintptr_t)m[0].doc & 15), 8); /* an arena block's address */
    for (int i = 0; i < 64; i++) fp_mention_clear(&m[i]);
    fp_jarena_reset(a);
    FPT_CHECK_EQ_INT(fp_jarena_used(a), 0);
  }
  /* a failed decode keeps nothing and needs no release */
  fp_mention_t bad;
  FPT_CHECK_EQ_INT(decode_in(a, "{\"id\":", 6, &bad), FP_ERR_DECODE);
  fp_jarena_reset(a);
  fp_jarena_destroy(a);
}

static void test_heap_values_untouched(void) {
  fp_jarena_t *a = fp_jarena_new();
  fp_mention_t m;
  json_t *before = json_pack("{s:s}", "k", "made before");
  FPT_CHECK_EQ_INT(((uintptr_t)before & 15), 0); /* a heap block's address */
  FPT_CHECK_EQ_INT(decode_in(a, doc, strlen(doc), &m), FP_OK);
  /* made after the leave: heap, even though the mention's document is in the arena */
  json_t *after = json_pack("{s:s}", "k", "made after");
  FPT_CHECK_EQ_INT(((uintptr_t)after & 15), 0);
  FPT_CHECK_EQ_INT(fp_jarena_owns(m.doc), 1);
  FPT_CHECK_EQ_INT(fp_jarena_owns(before), 0);
  FPT_CHECK_EQ_INT(fp_jarena_owns(after), 0);
  FPT_CHECK_EQ_INT(fp_jarena_owns(NULL), 0);
  fp_mention_clear(&m); /* an arena document: dropped, not walked */
  FPT_CHECK(m.doc == NULL, "cleared");
  fp_jarena_reset(a);
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(before, "k")), "made before");
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(after, "k")), "made after");
  json_decref(before);
  json_decref(after);
  fp_jarena_destroy(a);
}

static void *free_elsewhere(void *arg) {
  json_decref(arg); /* any thread may release any value */
  return NULL;
}

static void test_other_thread(void) {
  fp_jarena_t *a = fp_jarena_new();
  fp_mention_t m;
  pthread_t t;
  json_t *heap = json_pack("{s:[i,i]}", "x", 1, 2);
  FPT_CHECK_EQ_INT(decode_in(a, doc, strlen(doc), &m), FP_OK);
  FPT_CHECK_EQ_INT(pthread_create(&t, NULL, free_elsewhere, heap), 0);
  pthread_join(t, NULL);
  FPT_CHECK_EQ_INT(pthread_create(&t, NULL, free_elsewhere, m.doc), 0);
  pthread_join(t, NULL);
  m.doc = NULL;
  fp_mention_clear(&m);
  fp_jarena_reset(a);
  fp_jarena_destroy(a);
}

/* a run with a 60 KB mention and a run of many small ones: what the arena keeps afterwards
 * is bounded, whatever a run needed */
static void test_bounded(void) {
  fp_jarena_t *a = fp_jarena_new();
  size_t n = 60000; /* a text near the 64 KB limit: a block bigger than a chunk share */
  char *big = malloc(n + 256);
  fp_mention_t m, *ms = calloc(20000, sizeof(*ms));
  FPT_CHECK(big && ms, "buffers");
  int at = snprintf(big, 256, "{\"id\":\"big\",\"brand\":\"acme\",\"author\":{\"id\":\"u\"},"
                              "\"created_at\":\"2026-11-25T10:00:00Z\",\"text\":\"");
  memset(big + at, 'x', n);
  at += (int)n;
  at += snprintf(big + at, 8, "\"}");
  FPT_CHECK_EQ_INT(decode_in(a, big, (size_t)at, &m), FP_OK);
  FPT_CHECK_EQ_INT(strlen(m.text), n);
  size_t with_big = fp_jarena_held(a);
  fp_mention_clear(&m);
  fp_jarena_reset(a);
  FPT_CHECK(fp_jarena_held(a) + n < with_big, "the big text's own chunks are freed by the reset (%zu, then %zu bytes)",
              with_big, fp_jarena_held(a));
  for (int i = 0; i < 20000; i++) FPT_CHECK_EQ_INT(decode_in(a, doc, strlen(doc), &ms[i]), FP_OK);
  size_t peak = fp_jarena_held(a);
  for (int i = 0; i < 20000; i++) fp_mention_clear(&ms[i]);
  fp_jarena_reset(a);
  FPT_CHECK(fp_jarena_held(a) <= (16u << 20) && fp_jarena_held(a) <= peak,
            "after a run of 20,000 the arena keeps %zu of %zu bytes", fp_jarena_held(a), peak);
  if (fp_jarena_checked()) FPT_CHECK_EQ_INT(fp_jarena_held(a), 0); /* a checked arena keeps nothing */
  FPT_CHECK(peak > (16u << 20), "the run needed more than what is kept (%zu bytes)", peak);
  free(big);
  free(ms);
  fp_jarena_destroy(a);
}

int main(void) {
  fpt_run("decoded in the arena, rewound by a reset", test_decode_reset);
  fpt_run("heap values before, during and after", test_heap_values_untouched);
  fpt_run("released on another thread", test_other_thread);
  fpt_run("what a reset keeps is bounded", test_bounded);
  return fpt_done();
}
