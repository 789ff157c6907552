/*
 * incidents_fixture.h - shared by the incident lifecycle tests (unit tier with the
 * in-process store, redis tier with a real redis-server): a hand-built rule and helpers
 * that make signals and run fp_incidents_apply.
 */
#ifndef FP_INCIDENTS_FIXTURE_H
#define FP_INCIDENTS_FIXTURE_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "incidents.h"
#include "store_lc.h"
#include "testlib.h"
#include "util.h"

#define FX_MIN (60 * 1000LL)
#define FX_T0 ((int64_t)1795600800000LL)

static fp_rule_info_t fx_rule, fx_rule2, fx_rule3;
static int fx_rule2_loaded; /* fx_lookup finds fx.rule2 only while set */
static fp_lc_params_t fx_params = {0, 5 * FX_MIN, 30 * FX_MIN, 2};

static void fx_setup(void) {
  memset(&fx_rule, 0, sizeof(fx_rule));
  fx_rule.id = "fx.rule";
  fx_rule.version = 1;
  memcpy(fx_rule.hash, "00112233445566ff", 17);
  fx_rule.resolve_after_ms = 30 * FX_MIN;
  fx_rule2 = fx_rule;
  fx_rule2.id = "fx.rule2";
  fx_rule2_loaded = 1;
  fx_rule3 = fx_rule;
  fx_rule3.id = "fx.rule3";
}

static const fp_rule_info_t *fx_lookup(void *arg, const char *id) {
  (void)arg;
  if (strcmp(id, fx_rule.id) == 0) return &fx_rule;
  if (strcmp(id, fx_rule3.id) == 0) return &fx_rule3;
  return fx_rule2_loaded && strcmp(id, fx_rule2.id) == 0 ? &fx_rule2 : NULL;
}

/* n signals for entity at minutes[i] with severities sevs[i], offsets first..first+n-1. */
typedef struct {
  fp_mention_t m[64];
  char ids[64][16];
  fp_inc_signal_t s[64];
  size_t n;
} fx_batch_t;

static void fx_batch(fx_batch_t *b, const char *entity, int64_t first_offset, size_t n,
                     const int *minutes, const fp_sev_t *sevs) {
  memset(b, 0, sizeof(*b));
  for (size_t i = 0; i < n && i < 64; i++) {
    snprintf(b->ids[i], sizeof(b->ids[i]), "m%lld", (long long)(first_offset + (int64_t)i));
    b->m[i].id = b->ids[i];
    b->m[i].author_id = "u";
    b->m[i].text = "bad";
    b->m[i].followers = 10 * (int64_t)i;
    b->m[i].created_at_ms = FX_T0 + minutes[i] * FX_MIN;
    b->s[i].offset = first_offset + (int64_t)i;
    b->s[i].sig = (fp_lc_signal_t){sevs[i], b->m[i].created_at_ms, &b->m[i], &fx_rule, entity,
                                   NULL, 0, 0, NULL, 0};
  }
  b->n = n;
}

static fp_err_t fx_apply(fp_store_t *st, const char *source, fx_batch_t *b, int64_t due_by,
                         fp_outvec_t *out, size_t *replayed) {
  char err[256];
  int64_t offs[64];
  fp_err_t e;
  for (size_t i = 0; i < b->n; i++) offs[i] = b->s[i].offset;
  /* as the engine's worker does: a store error (Redis, or writers conflicting more often than
   * one call retries) is retried after a jittered pause; the call leaves no partial output */
  for (int attempt = 0;; attempt++) {
    e = fp_incidents_apply(st, source, &fx_params, b->s, b->n, offs, b->n, -1, "incidents", due_by,
                           fx_lookup, NULL, out, replayed, err, sizeof(err));
    if (e != FP_ERR_REDIS || attempt >= 20) break;
    usleep((useconds_t)(1000 + rand() % 5000));
  }
  FPT_CHECK(e == FP_OK, "fp_incidents_apply: %s", e == FP_OK ? "" : err);
  return e;
}

static int fx_count_status(const fp_outvec_t *out, const char *status) {
  int n = 0;
  for (size_t i = 0; i < out->n; i++)
    if (!strcmp(out->recs[i].status, status)) n++;
  return n;
}

/* A run that opens many incidents (a crisis) reads all their top terms in one round trip:
 * 20 of a rule with a TOPK window, each with its own terms (one with none: an empty list),
 * and 2 of a rule without one (top_terms empty), in one batch. Each event carries what
 * fp_store_topk reads for its window alone. */
static void fx_top_terms_batched(fp_store_t *st, const char *source) {
  static char names[22][16];
  static const fp_win_spec_t spec = {FP_WIN_TOPK, 10 * FX_MIN, FX_MIN};
  int minutes[64] = {0};
  fp_sev_t sevs[64];
  fp_win_op_t ops[64];
  char wkeys[20][48], err[256];
  size_t nops = 0, replayed;
  fp_store_result_t res;
  fp_outvec_t out = {0};
  fx_batch_t b;
  fx_setup();
  fx_rule.nwindows = 1;
  fx_rule.windows[0].name = "terms";
  fx_rule.windows[0].spec = spec;
  for (int i = 0; i < 20; i++) {
    snprintf(wkeys[i], sizeof(wkeys[i]), "fx.rule|t%02d|terms", i);
    for (int k = 0; k < i % 3 && nops < 64; k++) /* t00, t03, ...: no terms */
      ops[nops] = (fp_win_op_t){.offset = (int64_t)nops, .key = wkeys[i], .spec = &spec, .ts_ms = FX_T0,
                                .amount = 1, .member = k ? "fire" : (i % 2 ? "recall" : "smoke")}, nops++;
  }
  FPT_CHECK(fp_store_apply(st, "tt-win:0", ops, nops, -1, &res, err, sizeof(err)) == FP_OK, "%s", err);
  for (int i = 0; i < 22; i++) sevs[i] = FP_SEV3;
  fx_batch(&b, "x", 10, 22, minutes, sevs);
  for (int i = 0; i < 22; i++) {
    snprintf(names[i], sizeof(names[i]), "t%02d", i);
    b.s[i].sig.entity = names[i];
    if (i >= 20) b.s[i].sig.rule = &fx_rule3; /* no TOPK window */
  }
  { /* the lifecycle script loaded (Redis: SCRIPT LOAD is a round trip of its own) */
    int64_t fence, low;
    fp_lc_due_t *due = NULL;
    size_t ndue = 0;
    FPT_CHECK(fp_store_lc_load(st, source, NULL, 0, INT64_MIN, 0, NULL, NULL, NULL, &fence, &low, &due, &ndue,
                               err, sizeof(err)) == FP_OK, "%s", err);
    fp_store_lc_due_free(due, ndue);
  }
  uint64_t rt = fp_store_roundtrips(st);
  fx_apply(st, source, &b, INT64_MIN, &out, &replayed);
  FPT_CHECK_EQ_INT(fx_count_status(&out, "opened"), 22);
  FPT_CHECK_EQ_INT(fp_store_roundtrips(st) - rt, 3); /* load, the top terms, commit */
  for (size_t e = 0; e < out.n; e++) {
    const char *p = out.recs[e].payload, *ent = strstr(p, "\"entity\":\"t");
    if (!FPT_CHECK(ent != NULL, "event names its entity: %.120s", p)) continue;
    int i = atoi(ent + 11);
    if (i >= 20) {
      FPT_CHECK(strstr(p, "\"top_terms\":[]") != NULL, "t%02d: no TOPK window, no top terms", i);
      continue;
    }
    fp_topk_entry_t top[5];
    size_t n = 0;
    char want[1024] = "\"top_terms\":[";
    FPT_CHECK(fp_store_topk(st, wkeys[i], &spec, FX_T0, 5, top, &n, err, sizeof(err)) == FP_OK, "%s", err);
    for (size_t t = 0; t < n; t++)
      snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s{\"count\":%.1f,\"term\":\"%s\"}",
               t ? "," : "", top[t].count, top[t].term);
    strcat(want, "]");
    FPT_CHECK(n == (size_t)(i % 3), "t%02d: %zu terms", i, n);
    FPT_CHECK(strstr(p, want) != NULL, "t%02d: %s in %s", i, want, strstr(p, "top_terms") ? strstr(p, "top_terms") : p);
  }
  fp_outvec_free(&out);
  fx_setup();
}

/* 150 incidents (more than one run sweeps) open on one source, due at 30..59 min; then time
 * moves to 100 min and runs of one quiet mention each follow. Every incident resolves exactly
 * once, dated at its due time, and the earliest due go first: what one run cannot sweep
 * waits for the next, never an incident due earlier than one already resolved. */
#define FX_MANY 150
/* @p drop, if not NULL, deletes the state of an incident (as its expiry would): called for
 * the 70 due earliest; those then resolve never, and the index forgets them. */
static void fx_many_due(fp_store_t *st, const char *source, void (*drop)(const char *key)) {
  static char names[FX_MANY][16];
  int resolved_in[FX_MANY], run = 0, total = 0;
  int64_t offset = 1000, last_due_of_run[8] = {0};
  fp_outvec_t out = {0};
  fx_batch_t b;
  size_t replayed;
  fx_setup();
  for (int i = 0; i < FX_MANY; i++) resolved_in[i] = -1;
  /* open them: batches of up to 64 signals, one entity each, opened at minute i % 30 */
  for (int base = 0; base < FX_MANY; base += 50) {
    int minutes[64];
    fp_sev_t sevs[64];
    for (int i = 0; i < 50; i++) minutes[i] = (base + i) % 30, sevs[i] = FP_SEV3;
    fx_batch(&b, "x", offset, 50, minutes, sevs);
    for (int i = 0; i < 50; i++) {
      snprintf(names[base + i], sizeof(names[0]), "e%03d", base + i);
      b.s[i].sig.entity = names[base + i];
    }
    /* event time stays at minute 29 on this source: nothing due yet */
    fx_apply(st, source, &b, FX_T0 + 29 * FX_MIN, &out, &replayed);
    offset += 50;
  }
  FPT_CHECK_EQ_INT(fx_count_status(&out, "opened"), FX_MANY);
  fp_outvec_reset(&out);
  int live = FX_MANY;
  if (drop)
    for (int i = 0; i < FX_MANY; i++)
      if (i % 30 < 14) { /* due at 30..43 min: the first 70 in the index */
        char k[64];
        snprintf(k, sizeof(k), "fx.rule|%s", names[i]);
        drop(k);
        resolved_in[i] = 99; /* must not resolve */
        live--;
      }
  for (run = 0; run < 8 && total < live; run++) {
    /* a quiet mention, and signals of three due incidents: the run asks for those itself */
    static const int m[] = {100, 100, 100, 100};
    static const fp_sev_t sv[] = {FP_SEV_NONE, FP_SEV_NONE, FP_SEV_NONE, FP_SEV_NONE};
    fx_batch(&b, "tick", offset, 4, m, sv);
    offset += 4;
    b.s[1].sig.entity = names[15 + run], b.s[2].sig.entity = names[75 + run], b.s[3].sig.entity = names[136 + run];
    fx_apply(st, source, &b, FX_T0 + 100 * FX_MIN, &out, &replayed);
    for (size_t i = 0; i < out.n; i++) {
      const char *e = strstr(out.recs[i].payload, "\"entity\":\"e");
      const char *t = strstr(out.recs[i].payload, "\"event_time\":\"");
      int64_t at = 0;
      char ts[32] = {0};
      if (strcmp(out.recs[i].status, "resolved")) continue;
      if (!FPT_CHECK(e && t, "resolution names its entity and time: %.200s", out.recs[i].payload)) continue;
      int k = atoi(e + 11);
      memcpy(ts, t + 14, 24);
      fp_time_parse_rfc3339(ts, &at);
      FPT_CHECK(k >= 0 && k < FX_MANY && resolved_in[k] < 0, "e%03d resolved once", k);
      if (k >= 0 && k < FX_MANY) resolved_in[k] = run;
      FPT_CHECK_EQ_INT(at, FX_T0 + (k % 30 + 30) * FX_MIN); /* dated at its due time */
      int asked = k == 15 + run || k == 75 + run || k == 136 + run;
      if (asked) { /* resolved by its own signal, whatever the index order */
        total++;
        continue;
      }
      if (at > last_due_of_run[run]) last_due_of_run[run] = at;
      if (run > 0)
        FPT_CHECK(at >= last_due_of_run[run - 1], "run %d resolves e%03d (due %lld) after run %d "
                  "resolved one due at %lld: earliest due first", run, k, (long long)at, run - 1,
                  (long long)last_due_of_run[run - 1]);
      total++;
    }
    fp_outvec_reset(&out);
  }
  FPT_CHECK_EQ_INT(total, live);
  if (drop) /* the load pages past the 70 gone ones: 64 live, then the second sweep's 16 */
    FPT_CHECK(run == 1, "the 80 live incidents resolve in one run (%d runs)", run);
  else
    FPT_CHECK(run >= 2, "one run sweeps at most a bounded number, 2 x 64 (%d runs)", run);
  fp_outvec_free(&out);
}

/* Index entries a sweep loads but cannot resolve must not stay at the head of the index
 * (earliest due first) and block what is behind them: 40 incidents whose rule now waits
 * longer (resolve_after 30 -> 120 min: the index says due at 30, the state at 120) and 40 of
 * a rule no longer loaded, all due before "z" (another rule) by the index. z resolves anyway
 * within a few runs; the others resolve once really due, the removed rule's once it is back
 * (an hour of event time after a sweep found it missing). */
static void fx_stuck_due(fp_store_t *st, const char *source) {
  static char names[80][16];
  int minutes[64];
  fp_sev_t sevs[64];
  fp_outvec_t out = {0};
  fx_batch_t b;
  size_t replayed;
  int64_t offset = 1;
  int z = 0, others = 0, runs = 0;
  fx_setup();
  for (int part = 0; part < 2; part++) {
    for (int i = 0; i < 40; i++) minutes[i] = 0, sevs[i] = FP_SEV3;
    fx_batch(&b, "x", offset, 40, minutes, sevs);
    offset += 40;
    for (int i = 0; i < 40; i++) {
      snprintf(names[part * 40 + i], sizeof(names[0]), "s%02d", part * 40 + i);
      b.s[i].sig.entity = names[part * 40 + i];
      if (part) b.s[i].sig.rule = &fx_rule2;
    }
    fx_apply(st, source, &b, FX_T0, &out, &replayed);
  }
  {
    static const int m[] = {10};
    static const fp_sev_t sv[] = {FP_SEV3};
    fx_batch(&b, "z", offset++, 1, m, sv);
    b.s[0].sig.rule = &fx_rule3;
    fx_apply(st, source, &b, FX_T0 + 10 * FX_MIN, &out, &replayed);
  }
  FPT_CHECK_EQ_INT(fx_count_status(&out, "opened"), 81);
  fp_outvec_reset(&out);
  fx_rule.resolve_after_ms = 120 * FX_MIN; /* s00..s39: due at 120 min now */
  fx_rule2_loaded = 0;                     /* s40..s79: their rule is gone */
  for (runs = 0; runs < 4 && !z; runs++) {
    static const int m[] = {60};
    static const fp_sev_t sv[] = {FP_SEV_NONE};
    fx_batch(&b, "tick", offset++, 1, m, sv);
    fx_apply(st, source, &b, FX_T0 + 60 * FX_MIN, &out, &replayed);
    for (size_t i = 0; i < out.n; i++)
      if (!strcmp(out.recs[i].status, "resolved")) {
        if (strstr(out.recs[i].payload, "\"entity\":\"z\"")) z++;
        else others++;
      }
    fp_outvec_reset(&out);
  }
  FPT_CHECK(z == 1, "z resolved behind 80 entries the sweeps could not resolve (%d runs)", runs);
  FPT_CHECK_EQ_INT(others, 0); /* s00..s39 not due until 120 min; s40..s79 pushed back an hour */
  /* at 200 min every one of them is due and both rules are loaded */
  fx_rule2_loaded = 1;
  for (int r = 0; r < 4; r++) {
    static const int m[] = {200};
    static const fp_sev_t sv[] = {FP_SEV_NONE};
    fx_batch(&b, "tick", offset++, 1, m, sv);
    fx_apply(st, source, &b, FX_T0 + 200 * FX_MIN, &out, &replayed);
  }
  FPT_CHECK_EQ_INT(fx_count_status(&out, "resolved"), 80);
  fp_outvec_free(&out);
  fx_setup();
}

#endif
