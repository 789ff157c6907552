/*
 * store_lc.h - the state store's incident-lifecycle half: per (rule, entity) state blobs
 * with optimistic versions, a fence per source, and a memo of the events each offset
 * produced. Same exactness contract as the windows (store.h): an offset at or below the
 * lifecycle fence of its source was applied before, and its events are read back from the
 * memo instead of being computed again.
 */
#ifndef FP_STORE_LC_H
#define FP_STORE_LC_H

#include "store.h"

/** An open incident found due by fp_store_lc_load (a sweep). All strings malloc'd. */
typedef struct fp_lc_due_s {
  char *key;
  char *state;
  int64_t version;
  int no_rule; /* the caller's mark: its rule is not loaded (fp_store_lc_load sets 0) */
} fp_lc_due_t;

/**
 * Loads the state of @p n lifecycle keys and the lifecycle fence of @p source, and (when
 * @p wm, the source's watermark, is not INT64_MIN) the low watermark over every source that
 * moved in the last minute and up to @p max_due other open incidents due by it, in the same
 * round trip.
 * @param states_out receives malloc'd JSON texts (NULL where no state exists); the caller
 *        frees them.
 * @param versions_out receives each key's version (0 where none).
 * @param due_out receives a malloc'd array of *ndue_out entries (free each field and the
 *        array with fp_store_lc_due_free).
 */
fp_err_t fp_store_lc_load(fp_store_t *s, const char *source, const char *const *keys, size_t n,
                          int64_t wm, size_t max_due, char **states_out, int64_t *versions_out,
                          int64_t *silenced_until_out, int64_t *fence_out, int64_t *low_wm_out,
                          fp_lc_due_t **due_out, size_t *ndue_out, char *errstr,
                          size_t errstr_size);

/**
 * Silences lifecycle key @p key ("rule|entity") until @p until_ms (wall clock): its events
 * are still recorded, on the default topic and marked "silenced", but not paged. 0 lifts it.
 */
fp_err_t fp_store_lc_silence(fp_store_t *s, const char *key, int64_t until_ms, const char *reason,
                             char *errstr, size_t errstr_size);
void fp_store_lc_due_free(fp_lc_due_t *due, size_t n);

/** Reads the memoised events of @p n offsets (malloc'd texts, NULL where none). */
fp_err_t fp_store_lc_memo(fp_store_t *s, const char *source, const int64_t *offsets, size_t n,
                          char **texts_out, char *errstr, size_t errstr_size);

/**
 * Atomically: if any key's version differs from @p versions, changes nothing and sets
 * *conflict; otherwise writes the new states (version + 1), records the memo entries,
 * moves the lifecycle fence of @p source to @p fence, drops memo entries below
 * @p committed, keeps the index of open incidents (due time per key, -1 = closed), and
 * records @p wm as the source's watermark (INT64_MIN: leave it). @p due_now (may be NULL)
 * receives how many open incidents are due by the low watermark after the commit.
 */
fp_err_t fp_store_lc_commit(fp_store_t *s, const char *source, const char *const *keys,
                            const int64_t *versions, const char *const *states,
                            const int64_t *due_ms, size_t n, const int64_t *memo_offsets,
                            const char *const *memo_texts, size_t nmemo, int64_t fence,
                            int64_t committed, int64_t wm, int *conflict, size_t *due_now,
                            char *errstr, size_t errstr_size);

/**
 * Says that @p source was just assigned to this engine: until it reports a watermark of its
 * own (or stays idle for a minute) it holds back the low watermark that sweeps use, so an
 * entity's incident is not resolved while one of its partitions has not been read yet.
 */
fp_err_t fp_store_lc_register(fp_store_t *s, const char *source, char *errstr, size_t errstr_size);

#endif
