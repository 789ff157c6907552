/*
 * pipeline.h - the evaluation of one partition run, without Kafka: decode, lateness,
 * rules stage 1, one window round trip, severities, sweeps, the incident lifecycle. The
 * Kafka worker (worker.c) and the offline tools (replay, rule tests) drive the same code, so
 * what a replay shows is what production would have done.
 *
 * Exactness comes from the store (fence and memo): running the same inputs again returns the
 * same events. A pipeline is single-threaded; it owns its rule set and its store.
 */
#ifndef FP_PIPELINE_H
#define FP_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "incidents.h"
#include "metrics.h"
#include "rules.h"
#include "store.h"

typedef struct fp_pipeline_s fp_pipeline_t;

/** One input message. Borrowed for the duration of fp_pipeline_run(). */
typedef struct fp_input_s {
  const void *payload;
  size_t len;
  int64_t offset;
} fp_input_t;

/**
 * Called when the store fails with a retriable error (FP_ERR_REDIS): @returns 1 to retry
 * the failed step (after waiting as it sees fit), 0 to abandon the run (nothing of it is
 * reported; the caller must not store its offsets).
 */
typedef int (*fp_pipeline_retry_fn)(void *opaque, const char *what, const char *errstr, int attempt);

/** What a run produced. Everything is borrowed from the pipeline until its next run. */
typedef struct fp_pipeline_out_s {
  const fp_err_t *status;        /* per input: FP_OK, or why it goes to the dead-letter topic */
  const char (*reason)[256];     /* per input: the reason when status != FP_OK */
  const fp_outvec_t *events;     /* incident events, in offset order */
  size_t decoded, late, evals, rule_errors, replayed, roundtrips;
} fp_pipeline_out_t;

/**
 * @param conf borrowed for the call (the settings used are copied).
 * @param store taken over (destroyed with the pipeline), also on failure.
 * @param metrics borrowed, may be NULL; must outlive the pipeline.
 */
fp_pipeline_t *fp_pipeline_new(const fp_conf_t *conf, const fp_rules_limits_t *limits,
                               fp_store_t *store, fp_metrics_t *metrics, char *errstr,
                               size_t errstr_size);
void fp_pipeline_destroy(fp_pipeline_t *p);

/** Replaces the rule set with a fresh load of the rules directory; on failure the running
 * rules stay and @p errstr says why. */
fp_err_t fp_pipeline_reload(fp_pipeline_t *p, char *errstr, size_t errstr_size);

fp_rules_t *fp_pipeline_rules(fp_pipeline_t *p);
fp_store_t *fp_pipeline_store(fp_pipeline_t *p);

/**
 * Runs @p n inputs of @p source (ascending offsets).
 * @param watermark in: the highest event time seen on the source (INT64_MIN if none);
 *        out: updated only when the run succeeds.
 * @param committed offsets below it are committed: the store may drop their memo.
 * @param sweep non-zero: also resolve open incidents due by the watermark (no extra round
 *        trip; the worker asks for it on every run, see incidents.h).
 * @returns FP_OK; FP_ERR_REDIS when @p retry abandoned the run; FP_ERR_REDIS_FATAL or
 *          FP_ERR_NOMEM when the run cannot be done.
 */
fp_err_t fp_pipeline_run(fp_pipeline_t *p, const char *source, int64_t *watermark,
                         int64_t committed, const fp_input_t *in, size_t n, int sweep,
                         fp_pipeline_retry_fn retry, void *retry_opaque, fp_pipeline_out_t *out,
                         char *errstr, size_t errstr_size);

/*
 * A run in two halves, for a caller that prepares its next run while the store applies this
 * one (the worker): fp_pipeline_run() is prepare, then finish, in slot 0.
 *
 *   prepare(s)  decode and rules stage 1 of the inputs into slot s (releasing what the slot
 *               held); *watermark is moved past the inputs (the caller keeps it for the
 *               source's next prepare, and makes it the source's own once finish succeeds);
 *   send(s)     sends the slot's window round trip without waiting (best effort: when it
 *               cannot, finish does it); nothing else may use the store until finish(s);
 *   finish(s)   the window round trip (or its reply), severities and the lifecycle; the
 *               outputs are borrowed until the slot's next prepare or the next finish;
 *   discard(s)  drops a prepared run that will not be finished.
 *
 * Order: rules stage 1 of a later run may run before stage 2 of an earlier one (rules see
 * the same mentions and window values either way). The store sees every run's calls in
 * order: a run is sent only after the one before it is finished.
 */
#define FP_PIPELINE_SLOTS 2
fp_err_t fp_pipeline_prepare(fp_pipeline_t *p, int slot, const char *source, int64_t *watermark,
                             const fp_input_t *in, size_t n, char *errstr, size_t errstr_size);
void fp_pipeline_send(fp_pipeline_t *p, int slot, int64_t committed);
fp_err_t fp_pipeline_finish(fp_pipeline_t *p, int slot, int64_t committed, int sweep,
                            fp_pipeline_retry_fn retry, void *retry_opaque, fp_pipeline_out_t *out,
                            char *errstr, size_t errstr_size);
void fp_pipeline_discard(fp_pipeline_t *p, int slot);

#endif
