/*
 * metrics.h - the engine's counters and histograms, updated by every worker with relaxed
 * atomics (no lock on the hot path) and rendered in the Prometheus text format by the HTTP
 * endpoint. Per-rule series are created on first use and live as long as the registry, so a
 * worker may keep the pointer across rule reloads.
 */
#ifndef FP_METRICS_H
#define FP_METRICS_H

#include <stdint.h>

#include "util.h"

typedef struct fp_metrics_s fp_metrics_t;
typedef struct fp_rule_metrics_s fp_rule_metrics_t;

fp_metrics_t *fp_metrics_new(void);
void fp_metrics_destroy(fp_metrics_t *m);

/** @returns the series of rule @p id (created on first use; owned by the registry), or NULL
 * on allocation failure (callers then skip the update). Thread-safe. */
fp_rule_metrics_t *fp_metrics_rule(fp_metrics_t *m, const char *id);
/** One evaluation of a rule function: its duration, whether it failed, whether it returned
 * a severity. NULL @p r is ignored. */
void fp_metrics_rule_eval(fp_rule_metrics_t *r, int64_t ns, int failed, int fired);
/** A worker quarantined rule @p r: counts it and raises the rule's "quarantined now" gauge
 * (worker rule sets in which the rule is quarantined). */
void fp_metrics_rule_quarantined(fp_rule_metrics_t *r);
/** Adds @p n failed evaluations that were not timed one by one (the select stage). */
void fp_metrics_rule_errors(fp_rule_metrics_t *r, uint64_t n);
/** A worker dropped a rule set in which @p r was quarantined (a reload): lowers the gauge. */
void fp_metrics_rule_unquarantined(fp_rule_metrics_t *r);
/** Readiness: @p nrules is the number of rule series, @p nquarantined the number of them
 * quarantined in at least @p nworkers worker rule sets (that is, evaluated nowhere). */
void fp_metrics_rules_state(fp_metrics_t *m, int64_t nworkers, size_t *nrules, size_t *nquarantined);

/** Consumer lag of one partition, from librdkafka's statistics. */
typedef struct fp_lag_s {
  char topic[200];
  int32_t partition;
  int64_t lag;
} fp_lag_t;
/** Replaces the consumer lag table with @p n entries of @p lags (copied; borrowed for the
 * call). Thread-safe. */
fp_err_t fp_metrics_set_lags(fp_metrics_t *m, const fp_lag_t *lags, size_t n);

/** An incident event acknowledged by Kafka. */
void fp_metrics_incident(fp_metrics_t *m, const char *status, const char *severity);
/** One state-store round trip. */
void fp_metrics_store_call(fp_metrics_t *m, int64_t ns, int failed);

/** Appends every series of the registry (rules, incidents, store, consumer lag) to @p out in
 * the Prometheus text format. */
fp_err_t fp_metrics_render(fp_metrics_t *m, fp_buf_t *out);

#endif
