/*
 * store_ref.h - a straightforward reference model of the store's windows, and a seeded
 * random event-time stream, shared by tests/unit/test_store_mem.c and
 * tests/redis/test_store_redis.c (header-only, static functions).
 *
 * The reference keeps every applied update of a window in a list and recomputes each value
 * from scratch (O(n) per op): no running totals, no caches, nothing in common with the
 * script but the definitions in store.h. It models the documented retention rule: an op
 * whose bucket is older than head - L (L = lateness in buckets) is not applied, and data
 * below head - n - L is gone.
 */
#ifndef FP_STORE_REF_H
#define FP_STORE_REF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "testlib.h"

#define REF_MAX_WINDOWS 32

typedef struct {
  int64_t bucket;
  double amount;
  int member; /* index into the member pool, -1 for none */
} ref_upd_t;

typedef struct {
  char key[64];
  fp_win_spec_t spec;
  int64_t head; /* INT64_MIN: none */
  ref_upd_t *u;
  size_t nu, cap;
} ref_win_t;

typedef struct {
  ref_win_t w[REF_MAX_WINDOWS];
  size_t nw;
  int64_t lateness_ms;
  size_t too_late;
} ref_t;

/* The member pool: "u0".."u999" for DISTINCT, "t0".."t59" for TOPK. */
static const char *ref_member_name(int kind, int idx, char *buf, size_t size) {
  if (idx < 0) return NULL;
  snprintf(buf, size, "%s%d", kind == FP_WIN_TOPK ? "t" : "u", idx);
  return buf;
}

static int64_t ref_floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && a < 0) q--;
  return q;
}

static int64_t ref_lb(const ref_t *r, const ref_win_t *w) {
  return (r->lateness_ms + w->spec.step_ms - 1) / w->spec.step_ms;
}

/* Adds the value of window w as of bucket b to out (after the op, if applied). */
static void ref_value(const ref_t *r, const ref_win_t *w, int64_t b, fp_win_value_t *out) {
  int64_t n = w->spec.size_ms / w->spec.step_ms;
  int64_t kf = w->head == INT64_MIN ? INT64_MIN : w->head - n - ref_lb(r, w);
  memset(out, 0, sizeof(*out));
  if (w->spec.kind == FP_WIN_BASELINE) {
    double *cnt = calloc((size_t)n + 1, sizeof(double));
    for (size_t i = 0; i < w->nu; i++) {
      int64_t x = w->u[i].bucket;
      if (x < kf || x < b - n || x > b) continue;
      cnt[x - (b - n)] += 1;
    }
    double t = 0, q = 0;
    for (int64_t j = 0; j < n; j++) {
      t += cnt[j];
      q += cnt[j] * cnt[j];
    }
    out->value = cnt[n];
    out->mean = t / (double)n;
    double var = (q - t * t / (double)n) / (double)n;
    out->stddev = sqrt(var < 0 ? 0 : var);
    free(cnt);
    return;
  }
  if (w->spec.kind == FP_WIN_DISTINCT) {
    static unsigned char seen[1000];
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < w->nu; i++) {
      int64_t x = w->u[i].bucket;
      if (x < kf || x <= b - n || x > b || w->u[i].member < 0) continue;
      if (!seen[w->u[i].member]) {
        seen[w->u[i].member] = 1;
        out->value += 1;
      }
    }
    return;
  }
  for (size_t i = 0; i < w->nu; i++) {
    int64_t x = w->u[i].bucket;
    if (x < kf || x <= b - n || x > b) continue;
    if (w->spec.kind == FP_WIN_TOPK && w->u[i].member < 0) continue;
    out->value += w->spec.kind == FP_WIN_SUM ? w->u[i].amount : 1;
  }
}

/* Applies one op to the reference and computes its expected value. */
static void ref_apply(ref_t *r, size_t wi, int64_t ts, double amount, int member,
                      fp_win_value_t *out) {
  ref_win_t *w = &r->w[wi];
  int64_t b = ref_floordiv(ts, w->spec.step_ms);
  if (w->head != INT64_MIN && b < w->head - ref_lb(r, w)) {
    r->too_late++;
    ref_value(r, w, b, out);
    return;
  }
  if (w->head == INT64_MIN || b > w->head) w->head = b;
  if (w->nu == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 256;
    w->u = realloc(w->u, w->cap * sizeof(*w->u));
  }
  w->u[w->nu++] = (ref_upd_t){b, amount, member};
  ref_value(r, w, b, out);
}

/* Term counts of a TOPK window as of ts; fills out (sorted: count desc, term asc). */
static size_t ref_topk(const ref_t *r, size_t wi, int64_t ts, size_t k, fp_topk_entry_t *out) {
  const ref_win_t *w = &r->w[wi];
  int64_t n = w->spec.size_ms / w->spec.step_ms, b = ref_floordiv(ts, w->spec.step_ms);
  int64_t kf = w->head == INT64_MIN ? INT64_MIN : w->head - n - ref_lb(r, w);
  double cnt[1000] = {0};
  for (size_t i = 0; i < w->nu; i++) {
    int64_t x = w->u[i].bucket;
    if (x < kf || x <= b - n || x > b || w->u[i].member < 0) continue;
    cnt[w->u[i].member] += 1;
  }
  size_t m = 0;
  for (size_t taken = 0; taken < k; taken++) {
    int best = -1;
    char bn[16], cn[16];
    for (int j = 0; j < 1000; j++) {
      if (cnt[j] <= 0) continue;
      if (best < 0 || cnt[j] > cnt[best]) {
        best = j;
        continue;
      }
      if (cnt[j] == cnt[best]) {
        ref_member_name(FP_WIN_TOPK, j, cn, sizeof(cn));
        ref_member_name(FP_WIN_TOPK, best, bn, sizeof(bn));
        if (strcmp(cn, bn) < 0) best = j;
      }
    }
    if (best < 0) break;
    ref_member_name(FP_WIN_TOPK, best, out[m].term, sizeof(out[m].term));
    out[m].count = cnt[best];
    cnt[best] = 0;
    m++;
  }
  return m;
}

static void ref_free(ref_t *r) {
  for (size_t i = 0; i < r->nw; i++) free(r->w[i].u);
}

/* ---------------------------------------------------------------------------------------- */
/* A seeded random stream. */

typedef struct {
  uint64_t s;
} ref_rng_t;

static uint64_t ref_rand(ref_rng_t *g) { /* splitmix64 */
  uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static int64_t ref_range(ref_rng_t *g, int64_t lo, int64_t hi) { /* [lo, hi] */
  return lo + (int64_t)(ref_rand(g) % (uint64_t)(hi - lo + 1));
}

typedef struct {
  fp_win_op_t *ops;
  size_t n;
  size_t *wi;    /* window index per op */
  int *member;   /* member index per op (-1 none) */
  char (*mbuf)[16];
  fp_win_value_t *expect;
  unsigned char *at_head; /* 1: the op was applied and its bucket is its window's head */
  int64_t last_ts;
} ref_stream_t;

/* Window specs used by the random tests. */
static const fp_win_spec_t ref_specs[] = {
    {FP_WIN_COUNT, 10 * 60000, 60000},      {FP_WIN_SUM, 5 * 60000, 60000},
    {FP_WIN_DISTINCT, 10 * 60000, 60000},   {FP_WIN_TOPK, 10 * 60000, 60000},
    {FP_WIN_BASELINE, 60 * 60000, 5 * 60000}, {FP_WIN_COUNT, 3600000, 60000},
    {FP_WIN_BASELINE, 7 * 86400000LL, 3600000},
};
#define REF_NSPECS (sizeof(ref_specs) / sizeof(ref_specs[0]))

/*
 * Builds @p noffsets offsets of 1-3 ops each over 2 entities per spec; about 10% of the
 * events are out of order (up to 1.5x the lateness behind), a few beyond the lateness.
 * @p dense: a high rate instead (offsets 0-300 ms apart, 4 DISTINCT members, late events
 * often at the time of the late one before), so that most ops of a window in a batch share
 * a bucket and the store sends them as runs, late and too-late runs included.
 * Computes every expected value in the reference as it goes.
 */
static void ref_stream_build(ref_t *r, ref_stream_t *st, uint64_t seed, size_t noffsets,
                             int64_t t0, int64_t lateness_ms, const char *tag, int dense) {
  ref_rng_t g = {seed};
  memset(r, 0, sizeof(*r));
  memset(st, 0, sizeof(*st));
  r->lateness_ms = lateness_ms;
  for (size_t i = 0; i < REF_NSPECS; i++) {
    for (int e = 0; e < 2; e++) {
      ref_win_t *w = &r->w[r->nw++];
      snprintf(w->key, sizeof(w->key), "%s|r%zu|ent %d|w", tag, i, e);
      w->spec = ref_specs[i];
      w->head = INT64_MIN;
    }
  }
  size_t cap = noffsets * 3;
  st->ops = calloc(cap, sizeof(*st->ops));
  st->wi = calloc(cap, sizeof(*st->wi));
  st->member = calloc(cap, sizeof(*st->member));
  st->mbuf = calloc(cap, sizeof(*st->mbuf));
  st->expect = calloc(cap, sizeof(*st->expect));
  st->at_head = calloc(cap, sizeof(*st->at_head));
  int64_t cur = t0, late = t0, too_late = t0;
  for (size_t off = 0; off < noffsets; off++) {
    cur += ref_range(&g, 0, dense ? 300 : 20000);
    int64_t ts = cur;
    int64_t roll = ref_range(&g, 0, 99);
    if (roll < 9) ts = late = dense && ref_range(&g, 0, 1) ? late : cur - ref_range(&g, 0, lateness_ms);
    else if (roll < 11)
      ts = too_late = dense && ref_range(&g, 0, 1) ? too_late
                                                    : cur - ref_range(&g, lateness_ms, lateness_ms * 3 + 600000);
    int nops = (int)ref_range(&g, 1, 3);
    for (int k = 0; k < nops; k++) {
      size_t i = st->n++;
      size_t wi = (size_t)ref_range(&g, 0, (int64_t)r->nw - 1);
      const ref_win_t *w = &r->w[wi];
      int member = -1;
      if (w->spec.kind == FP_WIN_DISTINCT) member = (int)ref_range(&g, 0, dense ? 3 : 999);
      if (w->spec.kind == FP_WIN_TOPK) { /* skewed: small indices are frequent */
        int64_t a = ref_range(&g, 0, 59), b = ref_range(&g, 0, 59);
        member = (int)(a < b ? a : b);
      }
      if (member >= 0 && ref_range(&g, 0, 19) == 0) member = -1; /* NULL member */
      double amount = w->spec.kind == FP_WIN_SUM ? (double)ref_range(&g, -8, 40) * 0.25 : 1;
      st->wi[i] = wi;
      st->member[i] = member;
      st->ops[i].offset = (int64_t)off + 1000;
      st->ops[i].key = w->key;
      st->ops[i].spec = &w->spec;
      st->ops[i].ts_ms = ts;
      st->ops[i].amount = amount;
      st->ops[i].member = ref_member_name(w->spec.kind, member, st->mbuf[i], sizeof(st->mbuf[i]));
      size_t late0 = r->too_late;
      ref_apply(r, wi, ts, amount, member, &st->expect[i]);
      st->at_head[i] = r->too_late == late0 && r->w[wi].head == ref_floordiv(ts, w->spec.step_ms);
    }
  }
  st->last_ts = cur;
}

static void ref_stream_free(ref_stream_t *st) {
  free(st->ops);
  free(st->wi);
  free(st->member);
  free(st->mbuf);
  free(st->expect);
  free(st->at_head);
}

/* 1 if a and b agree: exactly (1e-9 relative) or, for DISTINCT with tol, within 2% + 2. */
static int ref_same(fp_win_kind_t kind, const fp_win_value_t *a, const fp_win_value_t *b,
                    int hll) {
  if (kind == FP_WIN_DISTINCT && hll) return fabs(a->value - b->value) <= 0.02 * b->value + 2;
  double e = 1e-9;
  return fabs(a->value - b->value) <= e * (1 + fabs(b->value)) &&
         fabs(a->mean - b->mean) <= e * (1 + fabs(b->mean)) &&
         fabs(a->stddev - b->stddev) <= e * (1 + fabs(b->stddev));
}

/* ---------------------------------------------------------------------------------------- */
/* Driving a store with a stream and checking it against the reference. */

/* Index of the first op of the next offset after op i. */
static size_t ref_next_offset(const ref_stream_t *s, size_t i) {
  size_t j = i + 1;
  while (j < s->n && s->ops[j].offset == s->ops[i].offset) j++;
  return j;
}

static size_t ref_count_offsets(const ref_stream_t *s, size_t a, size_t b) {
  size_t c = 0;
  for (size_t i = a; i < b; i = ref_next_offset(s, i)) c++;
  return c;
}

/*
 * Applies the stream in random batches (1..maxbatch offsets), checking every out against
 * the reference; now and then re-applies the previous batch together with the current one
 * (an overlap) and checks the replayed outs are identical to the first run's. Fills
 * got[i] with the first-run outs. @returns 0 if nothing failed.
 */
static int ref_drive(fp_store_t *st, const char *source, const ref_stream_t *s, const ref_t *r,
                     uint64_t seed, size_t maxbatch, int hll, fp_win_value_t *got) {
  ref_rng_t g = {seed ^ 0x5bd1e995};
  fp_win_op_t *tmp = calloc(s->n, sizeof(*tmp));
  size_t prev = 0, i = 0, too_late = 0, bad = 0;
  char err[256];
  while (i < s->n) {
    size_t nb = (size_t)ref_range(&g, 1, (int64_t)maxbatch), end = i;
    for (size_t k = 0; k < nb && end < s->n; k++) end = ref_next_offset(s, end);
    memcpy(tmp, s->ops + i, (end - i) * sizeof(*tmp));
    fp_store_result_t res;
    fp_err_t e = fp_store_apply(st, source, tmp, end - i, s->ops[prev].offset, &res, err,
                                sizeof(err));
    if (!FPT_CHECK(e == FP_OK, "apply [%zu, %zu): %s", i, end, err)) break;
    FPT_CHECK_EQ_INT(res.applied, ref_count_offsets(s, i, end));
    FPT_CHECK_EQ_INT(res.replayed, 0);
    too_late += res.too_late;
    for (size_t k = i; k < end; k++) {
      got[k] = tmp[k - i].out;
      if (!ref_same(s->ops[k].spec->kind, &got[k], &s->expect[k], hll) && bad++ < 10)
        FPT_CHECK(0, "seed %llu op %zu (offset %lld, key %s, kind %d, ts %lld): got %.17g/%g/%g "
                  "want %.17g/%g/%g", (unsigned long long)seed, k, (long long)s->ops[k].offset,
                  s->ops[k].key, (int)s->ops[k].spec->kind, (long long)s->ops[k].ts_ms,
                  got[k].value, got[k].mean, got[k].stddev, s->expect[k].value,
                  s->expect[k].mean, s->expect[k].stddev);
    }
    if (i > 0 && ref_range(&g, 0, 3) == 0) { /* overlap: previous batch + this one again */
      memcpy(tmp, s->ops + prev, (end - prev) * sizeof(*tmp));
      e = fp_store_apply(st, source, tmp, end - prev, s->ops[prev].offset, &res, err, sizeof(err));
      FPT_CHECK(e == FP_OK, "re-apply: %s", err);
      FPT_CHECK_EQ_INT(res.applied, 0);
      FPT_CHECK_EQ_INT(res.replayed, ref_count_offsets(s, prev, end));
      FPT_CHECK_EQ_INT(res.recomputed, 0);
      for (size_t k = prev; k < end; k++)
        if (memcmp(&tmp[k - prev].out, &got[k], sizeof(got[k])) != 0 && bad++ < 10)
          FPT_CHECK(0, "replayed op %zu differs: %.17g vs %.17g", k, tmp[k - prev].out.value,
                    got[k].value);
    }
    prev = i;
    i = end;
  }
  FPT_CHECK_EQ_INT(too_late, r->too_late);
  FPT_CHECK(bad == 0, "seed %llu: %zu mismatches", (unsigned long long)seed, bad);
  free(tmp);
  return bad != 0;
}

/* Checks a few TOPK reads against the reference. */
static void ref_check_topk(fp_store_t *st, const ref_t *r, int64_t ts) {
  char err[256];
  for (size_t wi = 0; wi < r->nw; wi++) {
    if (r->w[wi].spec.kind != FP_WIN_TOPK) continue;
    for (int64_t back = 0; back <= 5 * 60000; back += 150000) {
      fp_topk_entry_t got[5], want[5];
      size_t ng = 0, nw = ref_topk(r, wi, ts - back, 5, want);
      fp_err_t e = fp_store_topk(st, r->w[wi].key, &r->w[wi].spec, ts - back, 5, got, &ng, err,
                                 sizeof(err));
      FPT_CHECK(e == FP_OK, "topk: %s", err);
      FPT_CHECK_EQ_INT(ng, nw);
      for (size_t k = 0; k < ng && k < nw; k++) {
        FPT_CHECK(strcmp(got[k].term, want[k].term) == 0 && got[k].count == want[k].count,
                  "topk %s @%lld #%zu: got %s=%g want %s=%g", r->w[wi].key,
                  (long long)(ts - back), k, got[k].term, got[k].count, want[k].term,
                  want[k].count);
      }
    }
  }
}

#endif
