/*
 * test_store_mem.c - the in-process store (unit tier, no Redis): random event-time streams
 * against the reference model (store_ref.h), fence and memo behaviour, pruning, argument
 * checks, bucket floors for negative times, bounded memory.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_int.h"
#include "store_ref.h"
#include "testlib.h"

#define LATENESS_MS 180000

static fp_store_t *new_mem(void) {
  char err[256];
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  FPT_CHECK(st != NULL, "fp_store_mem_new: %s", err);
  if (st) fp_store_set_lateness(st, LATENESS_MS);
  return st;
}

static void run_seed_late(uint64_t seed, int64_t t0, int64_t lateness_ms, int dense) {
  ref_t r;
  ref_stream_t s;
  fp_store_t *st = new_mem();
  if (!st) return;
  fp_store_set_lateness(st, lateness_ms);
  ref_stream_build(&r, &s, seed, 1500, t0, lateness_ms, "m", dense);
  fp_win_value_t *got = calloc(s.n, sizeof(*got));
  ref_drive(st, "mentions:0", &s, &r, seed, 40, 0, got);
  ref_check_topk(st, &r, s.last_ts);
  FPT_CHECK(fp_store_roundtrips(st) > 0, "round trips counted");
  if (dense) /* the case is about runs: most ops must have gone as runs */
    FPT_CHECK(fp_store_ops_in_runs(st) > s.n / 3, "%llu of %zu ops went in runs",
              (unsigned long long)fp_store_ops_in_runs(st), s.n);
  free(got);
  ref_stream_free(&s);
  ref_free(&r);
  fp_store_destroy(st);
}

static void run_seed(uint64_t seed, int64_t t0) { run_seed_late(seed, t0, LATENESS_MS, 0); }

/* Lateness longer than the windows: late ops land anywhere in (and before) the window. */
static void test_long_lateness(void) {
  for (uint64_t seed = 21; seed <= 23; seed++) run_seed_late(seed, 1764000000000LL, 5400000, 0);
}

/* A high rate: a window's ops in a batch mostly share a bucket (and a DISTINCT member), so
 * they go as runs, in order, late and too late; values as one op at a time would give. */
static void test_dense_streams(void) {
  for (uint64_t seed = 31; seed <= 34; seed++) run_seed_late(seed, 1764000000000LL, LATENESS_MS, 1);
}

static void test_random_streams(void) {
  for (uint64_t seed = 1; seed <= 6; seed++) run_seed(seed, 1764000000000LL + (int64_t)seed * 7919);
}

static void test_negative_times(void) {
  run_seed(42, -3 * 3600000LL); /* crosses zero: floor division for negative times */
}

static fp_win_spec_t count_1m = {FP_WIN_COUNT, 60000, 60000};

static void test_bucket_floor(void) {
  fp_store_t *st = new_mem();
  if (!st) return;
  char err[256];
  fp_win_op_t ops[3] = {
      {.offset = 1, .key = "k", .spec = &count_1m, .ts_ms = -1, .amount = 1},
      {.offset = 2, .key = "k", .spec = &count_1m, .ts_ms = -60000, .amount = 1},
      {.offset = 3, .key = "k", .spec = &count_1m, .ts_ms = 0, .amount = 1},
  };
  fp_store_result_t res;
  FPT_CHECK(fp_store_apply(st, "s", ops, 3, 0, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(ops[0].out.value, 1, 0); /* bucket -1 */
  FPT_CHECK_NEAR(ops[1].out.value, 2, 0); /* bucket -1 as well */
  FPT_CHECK_NEAR(ops[2].out.value, 1, 0); /* bucket 0 */
  fp_store_destroy(st);
}

static void test_baseline_by_hand(void) {
  fp_store_t *st = new_mem();
  if (!st) return;
  static const fp_win_spec_t sp = {FP_WIN_BASELINE, 4 * 3600000LL, 3600000};
  /* hours 0..3 get 1, 3, 0, 2 mentions; then one in hour 4 */
  int per[4] = {1, 3, 0, 2};
  fp_win_op_t ops[7];
  size_t n = 0;
  for (int h = 0; h < 4; h++)
    for (int k = 0; k < per[h]; k++)
      ops[n] = (fp_win_op_t){.offset = (int64_t)n, .key = "b", .spec = &sp,
                             .ts_ms = h * 3600000LL + k, .amount = 1}, n++;
  ops[n] = (fp_win_op_t){.offset = (int64_t)n, .key = "b", .spec = &sp, .ts_ms = 4 * 3600000LL + 5,
                         .amount = 1};
  n++;
  char err[256];
  FPT_CHECK(fp_store_apply(st, "s", ops, n, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  const fp_win_value_t *o = &ops[n - 1].out;
  double mean = 6.0 / 4, var = (1 + 9 + 0 + 4) / 4.0 - mean * mean;
  FPT_CHECK_NEAR(o->value, 1, 0);
  FPT_CHECK_NEAR(o->mean, mean, 1e-12);
  FPT_CHECK_NEAR(o->stddev, sqrt(var), 1e-12);
  /* the third mention of hour 1 saw: value 3, before it hour 0 = 1 (and 3 empty hours) */
  FPT_CHECK_NEAR(ops[3].out.value, 3, 0);
  FPT_CHECK_NEAR(ops[3].out.mean, 0.25, 1e-12);
  fp_store_destroy(st);
}

static void test_fence_and_memo(void) {
  fp_store_t *st = new_mem();
  if (!st) return;
  char err[256];
  int64_t f = 0;
  FPT_CHECK(fp_store_fence(st, "p:1", &f, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(f, -1);
  fp_win_op_t ops[4] = {
      {.offset = 10, .key = "c", .spec = &count_1m, .ts_ms = 1000, .amount = 1},
      {.offset = 10, .key = "c", .spec = &count_1m, .ts_ms = 1000, .amount = 1},
      {.offset = 11, .key = "c", .spec = &count_1m, .ts_ms = 2000, .amount = 1},
      {.offset = 12, .key = "c", .spec = &count_1m, .ts_ms = 3000, .amount = 1},
  };
  fp_store_result_t res;
  FPT_CHECK(fp_store_apply(st, "p:1", ops, 3, 0, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(res.applied, 2);
  FPT_CHECK_NEAR(ops[2].out.value, 3, 0);
  FPT_CHECK(fp_store_fence(st, "p:1", &f, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(f, 11);
  /* the same batch again: nothing changes, same outs */
  fp_win_op_t again[4];
  memcpy(again, ops, sizeof(ops));
  for (int i = 0; i < 4; i++) again[i].out.value = -1;
  FPT_CHECK(fp_store_apply(st, "p:1", again, 4, 0, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(res.applied, 1);
  FPT_CHECK_EQ_INT(res.replayed, 2);
  FPT_CHECK_NEAR(again[0].out.value, 1, 0);
  FPT_CHECK_NEAR(again[1].out.value, 2, 0);
  FPT_CHECK_NEAR(again[2].out.value, 3, 0);
  FPT_CHECK_NEAR(again[3].out.value, 4, 0);
  /* another source is fenced separately */
  FPT_CHECK(fp_store_apply(st, "p:2", ops, 1, 0, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(ops[0].out.value, 5, 0);
  /* committed = 12 drops the memo of 10 and 11: a replay of 10 is recomputed read-only */
  FPT_CHECK(fp_store_apply(st, "p:1", again + 3, 1, 12, &res, err, sizeof(err)) == FP_OK, "%s",
            err);
  FPT_CHECK_EQ_INT(res.replayed, 1);
  FPT_CHECK_EQ_INT(res.recomputed, 0);
  FPT_CHECK(fp_store_apply(st, "p:1", again, 1, 12, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_EQ_INT(res.replayed, 1);
  FPT_CHECK_EQ_INT(res.recomputed, 1);
  FPT_CHECK_NEAR(again[0].out.value, 5, 0); /* read-only: the current window, unchanged */
  FPT_CHECK_EQ_INT(fp_store_memo_misses(st), 1);
  FPT_CHECK(fp_store_apply(st, "p:1", again, 1, 12, &res, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK_NEAR(again[0].out.value, 5, 0); /* still nothing applied */
  fp_store_destroy(st);
}

static void test_invalid(void) {
  fp_store_t *st = new_mem();
  if (!st) return;
  char err[256];
  fp_win_spec_t bad = {FP_WIN_COUNT, 90000, 60000};
  fp_win_op_t ops[2] = {
      {.offset = 2, .key = "c", .spec = &count_1m, .ts_ms = 1, .amount = 1},
      {.offset = 1, .key = "c", .spec = &count_1m, .ts_ms = 1, .amount = 1},
  };
  FPT_CHECK(fp_store_apply(st, "s", ops, 2, 0, NULL, err, sizeof(err)) == FP_ERR_INVALID_ARG,
            "descending offsets refused");
  ops[0].spec = &bad;
  FPT_CHECK(fp_store_apply(st, "s", ops, 1, 0, NULL, err, sizeof(err)) == FP_ERR_INVALID_ARG,
            "size not a multiple of step refused");
  ops[0].spec = &count_1m;
  ops[0].amount = NAN;
  FPT_CHECK(fp_store_apply(st, "s", ops, 1, 0, NULL, err, sizeof(err)) == FP_ERR_INVALID_ARG,
            "NaN refused");
  FPT_CHECK(fp_store_apply(st, "s", ops, 0, 0, NULL, err, sizeof(err)) == FP_OK, "empty batch");
  fp_store_destroy(NULL);
  fp_store_destroy(st);
}

static void test_bounded_memory(void) {
  fp_store_t *st = new_mem();
  if (!st) return;
  static const fp_win_spec_t tk = {FP_WIN_TOPK, 10 * 60000, 60000};
  static const fp_win_spec_t dk = {FP_WIN_DISTINCT, 10 * 60000, 60000};
  static const fp_win_spec_t sk = {FP_WIN_SUM, 10 * 60000, 60000};
  enum { N = 3000 };
  fp_win_op_t *ops = calloc(N, sizeof(*ops));
  char (*m)[16] = calloc(N, sizeof(*m));
  for (int i = 0; i < N; i++) {
    snprintf(m[i], sizeof(m[i]), "x%d", i % 37);
    const fp_win_spec_t *sp = i % 3 == 0 ? &tk : i % 3 == 1 ? &dk : &sk;
    ops[i] = (fp_win_op_t){.offset = i, .key = i % 3 == 0 ? "wt" : i % 3 == 1 ? "wd" : "ws", .spec = sp, .ts_ms = (int64_t)i * 20000,
                           .amount = 2, .member = m[i]};
  }
  char err[256];
  for (int i = 0; i < N; i += 100)
    FPT_CHECK(fp_store_apply(st, "s", ops + i, 100, i, NULL, err, sizeof(err)) == FP_OK, "%s",
              err);
  /* per window: the window hash plus <= n+L+1 bucket keys (TOPK, DISTINCT); fence, memo */
  long long keys = fp_store_mem_debug_cmd(st, "DBSIZE", NULL);
  FPT_CHECK(keys > 0 && keys < 60, "keys after 1000 minutes of data: %lld", keys);
  free(ops);
  free(m);
  fp_store_destroy(st);
}

/* TOPK runs (several terms per mention, repeats, an op without a term, a late mention) give
 * every op the value and the window the terms that one op per call gives. */
static void test_topk_runs(void) {
  fp_store_t *runs = new_mem(), *single = new_mem();
  if (!runs || !single) goto out;
  static const fp_win_spec_t tk = {FP_WIN_TOPK, 10 * 60000, 60000};
  static const char *terms[] = {"recall", "refund", "recall", "scam", NULL, "refund", "recall", "boycott"};
  enum { N = 400 };
  fp_win_op_t a[N], b[N];
  int64_t t0 = 1764000000000LL;
  for (int i = 0; i < N; i++) {
    int mention = i / 3; /* three terms a mention: same offset, same time */
    int64_t ts = t0 + (int64_t)mention * 700;
    if (mention % 50 == 49) ts -= 3 * 60000; /* late, within the lateness */
    a[i] = (fp_win_op_t){.offset = mention, .key = "brand|tags", .spec = &tk, .ts_ms = ts,
                         .amount = 1, .member = terms[(i * 7 + mention) % 8]};
    b[i] = a[i];
  }
  char err[256];
  /* two calls, split between mentions (an offset is applied once: a call that repeats one is
   * a replay) */
  FPT_CHECK(fp_store_apply(runs, "s", a, 201, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK(fp_store_apply(runs, "s", a + 201, N - 201, 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK(fp_store_ops_in_runs(runs) > N / 2, "ops in runs: %llu", (unsigned long long)fp_store_ops_in_runs(runs));
  for (int i = 0; i < N; i++) { /* one mention (offset) per call: no run spans two */
    int j = i;
    while (j + 1 < N && b[j + 1].offset == b[i].offset) j++;
    FPT_CHECK(fp_store_apply(single, "s", b + i, (size_t)(j - i + 1), 0, NULL, err, sizeof(err)) == FP_OK, "%s", err);
    i = j;
  }
  size_t differ = 0;
  for (int i = 0; i < N; i++)
    if (a[i].out.value != b[i].out.value && differ++ < 5)
      FPT_CHECK(0, "op %d: runs %.17g, single %.17g", i, a[i].out.value, b[i].out.value);
  FPT_CHECK(differ == 0, "%zu of %d ops differ", differ, N);
  FPT_CHECK(a[N - 1].out.value > 0, "values counted");
  fp_topk_entry_t ta[8], tb[8];
  size_t na = 0, nb = 0;
  int64_t last = a[N - 1].ts_ms;
  FPT_CHECK(fp_store_topk(runs, "brand|tags", &tk, last, 8, ta, &na, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK(fp_store_topk(single, "brand|tags", &tk, last, 8, tb, &nb, err, sizeof(err)) == FP_OK, "%s", err);
  FPT_CHECK(na == 4 && nb == na, "terms: %zu and %zu", na, nb);
  for (size_t t = 0; t < na && t < nb; t++)
    FPT_CHECK(!strcmp(ta[t].term, tb[t].term) && ta[t].count == tb[t].count, "term %zu: %s %g vs %s %g",
              t, ta[t].term, ta[t].count, tb[t].term, tb[t].count);
out:
  fp_store_destroy(runs);
  fp_store_destroy(single);
}

int main(void) {
  fpt_run("random_streams", test_random_streams);
  fpt_run("negative_times", test_negative_times);
  fpt_run("long_lateness", test_long_lateness);
  fpt_run("dense_streams", test_dense_streams);
  fpt_run("bucket_floor", test_bucket_floor);
  fpt_run("baseline_by_hand", test_baseline_by_hand);
  fpt_run("fence_and_memo", test_fence_and_memo);
  fpt_run("invalid", test_invalid);
  fpt_run("bounded_memory", test_bounded_memory);
  fpt_run("topk_runs", test_topk_runs);
  return fpt_done();
}
