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
void fp_metrics_rule_quarantined(fp_rule_metrics_t *r);

/** An incident event acknowledged by Kafka. */
void fp_metrics_incident(fp_metrics_t *m, const char *status, const char *severity);
/** One state-store round trip. */
void fp_metrics_store_call(fp_metrics_t *m, int64_t ns, int failed);

/** Appends every series of the registry to @p out in the Prometheus text format. */
fp_err_t fp_metrics_render(fp_metrics_t *m, fp_buf_t *out);

#endif
