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
#include "testlib.h"

#define FX_MIN (60 * 1000LL)
#define FX_T0 ((int64_t)1795600800000LL)

static fp_rule_info_t fx_rule;
static fp_lc_params_t fx_params = {0, 5 * FX_MIN, 30 * FX_MIN, 2};

static void fx_setup(void) {
  memset(&fx_rule, 0, sizeof(fx_rule));
  fx_rule.id = "fx.rule";
  fx_rule.version = 1;
  memcpy(fx_rule.hash, "00112233445566ff", 17);
  fx_rule.resolve_after_ms = 30 * FX_MIN;
}

static const fp_rule_info_t *fx_lookup(void *arg, const char *id) {
  (void)arg;
  return strcmp(id, fx_rule.id) == 0 ? &fx_rule : NULL;
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

#endif
