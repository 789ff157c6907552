/*
 * incidents.h - turns the severities of one batch into incident events, exactly once per
 * input offset: lifecycle state is loaded from the store, stepped through lifecycle.c in
 * offset order, and committed atomically with the events it produced (optimistic versions;
 * a conflict with another worker or instance reloads and recomputes). Offsets the store had
 * already applied return their memoised events, byte for byte.
 */
#ifndef FP_INCIDENTS_H
#define FP_INCIDENTS_H

#include "lifecycle.h"
#include "store.h"

/** One severity signal of the batch. */
typedef struct fp_inc_signal_s {
  int64_t offset;
  fp_lc_signal_t sig; /* borrowed pointers must live until fp_incidents_apply returns */
} fp_inc_signal_t;

/** One record to produce. Strings owned by the record (free with fp_outvec_free). */
typedef struct fp_outrec_s {
  int64_t offset;
  char *topic, *key, *payload;
  size_t len;
  char status[16], severity[8]; /* of the event, for metrics */
} fp_outrec_t;

typedef struct fp_outvec_s {
  fp_outrec_t *recs;
  size_t n, cap;
} fp_outvec_t;
void fp_outvec_reset(fp_outvec_t *v);
void fp_outvec_free(fp_outvec_t *v);
fp_err_t fp_outvec_add(fp_outvec_t *v, int64_t offset, const char *topic, const char *key,
                       const char *payload, size_t len);
/** Appends a copy of @p rec (borrowed), its status and severity included. */
fp_err_t fp_outvec_copy(fp_outvec_t *v, const fp_outrec_t *rec);

/** Finds a loaded rule by id (for sweeps); NULL when it is not loaded. */
typedef const fp_rule_info_t *(*fp_rule_lookup_fn)(void *arg, const char *rule_id);

/**
 * Applies @p sig (ascending offsets) for @p source; @p offsets are every input offset of
 * the run, ascending (the lifecycle fence moves to the last even when it produced nothing). @p due_by is the
 * source's watermark; in the same round trip as the states, open incidents due by the low
 * watermark of all active sources are found and get a "time passes" signal at
 * @p last_offset (sweeps; @p lookup NULL: none).
 * Events are appended to @p out with their offsets.
 * @returns FP_OK, or FP_ERR_REDIS / FP_ERR_REDIS_FATAL from the store (retry the batch).
 */
fp_err_t fp_incidents_apply(fp_store_t *store, const char *source, const fp_lc_params_t *params,
                            const fp_inc_signal_t *sig, size_t n, const int64_t *offsets,
                            size_t n_offsets, int64_t committed, const char *default_topic,
                            int64_t due_by, fp_rule_lookup_fn lookup, void *lookup_arg,
                            fp_outvec_t *out, size_t *replayed, char *errstr,
                            size_t errstr_size);

/** The lifecycle key of a (rule, entity): "rule|entity" into @p buf. */
void fp_incidents_key(const char *rule_id, const char *entity, char *buf, size_t size);

#endif
