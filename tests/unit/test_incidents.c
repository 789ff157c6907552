/* Unit: exactly-once lifecycle application over the in-process store: replayed offsets
 * return their memoised events byte for byte, sweeps resolve silent incidents, and the
 * fence moves with the batch. */
#include "incidents_fixture.h"
#include "store.h"

static void test_replay_is_byte_identical(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  fp_outvec_t first = {0}, again = {0};
  fx_batch_t b;
  size_t replayed = 0;
  static const int minutes[] = {0, 1, 2, 3};
  static const fp_sev_t sevs[] = {FP_SEV4, FP_SEV4, FP_SEV3, FP_SEV1};
  fx_setup();
  fx_batch(&b, "acme", 100, 4, minutes, sevs);
  fx_apply(st, "in:0", &b, INT64_MIN, &first, &replayed);
  FPT_CHECK_EQ_INT(replayed, 0);
  FPT_CHECK_EQ_INT(first.n, 3); /* opened, escalated, escalated */
  FPT_CHECK_EQ_INT(fx_count_status(&first, "opened"), 1);
  /* the same batch again (a crash before the offsets were committed) */
  fx_apply(st, "in:0", &b, INT64_MIN, &again, &replayed);
  FPT_CHECK_EQ_INT(replayed, 4); /* all four offsets were at or below the fence */
  FPT_CHECK_EQ_INT(again.n, first.n);
  for (size_t i = 0; i < first.n && i < again.n; i++) {
    FPT_CHECK(first.recs[i].len == again.recs[i].len &&
              memcmp(first.recs[i].payload, again.recs[i].payload, first.recs[i].len) == 0,
              "event %zu byte-identical on replay", i);
    FPT_CHECK_EQ_INT(first.recs[i].offset, again.recs[i].offset);
    FPT_CHECK_EQ_STR(first.recs[i].key, again.recs[i].key);
  }
  /* a later batch continues the same incident */
  {
    static const int m2[] = {4};
    static const fp_sev_t s2[] = {FP_SEV1};
    fp_outvec_t more = {0};
    fx_batch(&b, "acme", 104, 1, m2, s2);
    fx_apply(st, "in:0", &b, INT64_MIN, &more, &replayed);
    FPT_CHECK_EQ_INT(more.n, 0);
    fp_outvec_free(&more);
  }
  fp_outvec_free(&first);
  fp_outvec_free(&again);
  fp_store_destroy(st);
}

static void test_sweep_resolves(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  fp_outvec_t out = {0};
  fx_batch_t b;
  size_t replayed;
  static const int minutes[] = {0};
  static const fp_sev_t sevs[] = {FP_SEV3};
  fx_setup();
  fx_batch(&b, "quiet-brand", 10, 1, minutes, sevs);
  fx_apply(st, "in:1", &b, FX_T0, &out, &replayed);
  FPT_CHECK_EQ_INT(fx_count_status(&out, "opened"), 1);
  fp_outvec_reset(&out);
  /* another entity's mentions on another partition move time on: 29 min, not yet due */
  {
    static const int m2[] = {29};
    static const fp_sev_t s2[] = {FP_SEV_NONE};
    fx_batch(&b, "other", 500, 1, m2, s2);
    fx_apply(st, "in:2", &b, FX_T0 + 29 * FX_MIN, &out, &replayed);
    FPT_CHECK_EQ_INT(out.n, 0);
  }
  /* 45 min on in:2: due (at 30 min) for in:2, but in:1 is still at minute 0 and active, and
   * the entity could yet get mentions there: the low watermark holds the sweep back */
  {
    static const int m3[] = {45};
    static const fp_sev_t s3[] = {FP_SEV_NONE};
    fx_batch(&b, "other", 501, 1, m3, s3);
    fx_apply(st, "in:2", &b, FX_T0 + 45 * FX_MIN, &out, &replayed);
    FPT_CHECK_EQ_INT(out.n, 0);
  }
  /* in:1 moves on to 46 min: the low watermark is 45 min and the incident resolves, dated at
   * its due time */
  {
    static const int m3[] = {46};
    static const fp_sev_t s3[] = {FP_SEV_NONE};
    fx_batch(&b, "third", 11, 1, m3, s3);
    fx_apply(st, "in:1", &b, FX_T0 + 46 * FX_MIN, &out, &replayed);
    FPT_CHECK_EQ_INT(fx_count_status(&out, "resolved"), 1);
    FPT_CHECK_EQ_INT(fx_count_status(&out, "postmortem"), 1);
    for (size_t i = 0; i < out.n; i++) {
      FPT_CHECK_EQ_INT(out.recs[i].offset, 11);
      FPT_CHECK(strstr(out.recs[i].payload, "\"event_time\":\"2026-11-25T10:30:00.000Z\"") != NULL,
                "resolution dated at the due time: %s", out.recs[i].payload);
    }
  }
  /* nothing left to sweep */
  fp_outvec_reset(&out);
  {
    static const int m4[] = {50};
    static const fp_sev_t s4[] = {FP_SEV_NONE};
    fx_batch(&b, "other", 502, 1, m4, s4);
    fx_apply(st, "in:2", &b, FX_T0 + 50 * FX_MIN, &out, &replayed);
    FPT_CHECK_EQ_INT(out.n, 0);
  }
  fp_outvec_free(&out);
  fp_store_destroy(st);
}

static void test_many_due(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  fx_many_due(st, "in:7", NULL);
  fp_store_destroy(st);
}

static void test_stuck_due(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  fx_stuck_due(st, "in:8");
  fp_store_destroy(st);
}

static void test_top_terms_batched(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  fx_top_terms_batched(st, "in:10");
  fp_store_destroy(st);
}

int main(void) {
  fpt_run("replayed offsets return byte-identical events", test_replay_is_byte_identical);
  fpt_run("sweeps resolve silent incidents at their due time", test_sweep_resolves);
  fpt_run("many incidents due: each resolves once, earliest first", test_many_due);
  fpt_run("what a sweep cannot resolve does not block the index", test_stuck_due);
  fpt_run("a run's incidents read their top terms in one round trip", test_top_terms_batched);
  return fpt_done();
}
