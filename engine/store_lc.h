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

/**
 * Loads the state of @p n lifecycle keys and the lifecycle fence of @p source.
 * @param states_out receives malloc'd JSON texts (NULL where no state exists); the caller
 *        frees them.
 * @param versions_out receives each key's version (0 where none).
 */
fp_err_t fp_store_lc_load(fp_store_t *s, const char *source, const char *const *keys, size_t n,
                          char **states_out, int64_t *versions_out, int64_t *fence_out,
                          char *errstr, size_t errstr_size);

/** Reads the memoised events of @p n offsets (malloc'd texts, NULL where none). */
fp_err_t fp_store_lc_memo(fp_store_t *s, const char *source, const int64_t *offsets, size_t n,
                          char **texts_out, char *errstr, size_t errstr_size);

/**
 * Atomically: if any key's version differs from @p versions, changes nothing and sets
 * *conflict; otherwise writes the new states (version + 1), records the memo entries,
 * moves the lifecycle fence of @p source to @p fence, drops memo entries below
 * @p committed, and keeps the index of open incidents (due time per key, -1 = closed).
 */
fp_err_t fp_store_lc_commit(fp_store_t *s, const char *source, const char *const *keys,
                            const int64_t *versions, const char *const *states,
                            const int64_t *due_ms, size_t n, const int64_t *memo_offsets,
                            const char *const *memo_texts, size_t nmemo, int64_t fence,
                            int64_t committed, int *conflict, char *errstr, size_t errstr_size);

/** Lists up to @p max keys of open incidents due (no signal) at or before @p now_ms. */
fp_err_t fp_store_lc_due(fp_store_t *s, int64_t now_ms, size_t max, char ***keys_out,
                         size_t *n_out, char *errstr, size_t errstr_size);

#endif
