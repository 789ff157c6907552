/*
 * store.h - the state store: event-time sliding windows and incident lifecycle state,
 * with one interface and two backends (Redis, shared by every engine instance; and an
 * in-process one for the demo, replay and tests).
 *
 * Unit of exactness: an input "source" (topic and partition) and an offset. Every update
 * carries the offset of the mention that caused it. The store remembers, atomically with
 * the update, the highest offset applied per source (the fence), and the results it
 * returned for each offset not yet committed (the memo). Applying an offset at or below the
 * fence changes nothing and returns the memoised results, so a replay after a crash sees
 * exactly what the first run saw and never double-counts.
 */
#ifndef FP_STORE_H
#define FP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"

typedef enum {
  FP_WIN_COUNT = 0, /* number of updates in the window */
  FP_WIN_SUM,       /* sum of the updates' amounts */
  FP_WIN_DISTINCT,  /* distinct members (HyperLogLog in Redis, exact in-process) */
  FP_WIN_TOPK,      /* most frequent members (terms, hashtags); read with fp_store_topk */
  FP_WIN_BASELINE   /* per-step count statistics over a long window, current step excluded */
} fp_win_kind_t;

typedef struct fp_win_spec_s {
  fp_win_kind_t kind;
  int64_t size_ms; /* window length; a whole multiple of step_ms */
  int64_t step_ms; /* bucket width */
} fp_win_spec_t;

/** The value of a window as of an update's event time, after the update. */
typedef struct fp_win_value_s {
  double value;  /* COUNT, SUM, DISTINCT: over (ts - size, ts]; BASELINE: the count of the
                    current step; TOPK: number of updates in the window */
  double mean;   /* BASELINE: mean count per step over the steps before the current one */
  double stddev; /* BASELINE: population standard deviation of those counts */
} fp_win_value_t;

typedef struct fp_win_op_s {
  int64_t offset;             /* input offset that caused this update (fence unit) */
  const char *key;            /* borrowed: window identity, e.g. "rule|entity|window" */
  const fp_win_spec_t *spec;  /* borrowed */
  int64_t ts_ms;              /* event time of the mention */
  double amount;              /* COUNT/BASELINE/TOPK: 1; SUM: the amount added */
  const char *member;         /* DISTINCT/TOPK: the member (borrowed); NULL otherwise */
  fp_win_value_t out;         /* filled by fp_store_apply */
} fp_win_op_t;

/** Result of a batch apply. */
typedef struct fp_store_result_s {
  size_t applied;   /* offsets newly applied */
  size_t replayed;  /* offsets at or below the fence: results came from the memo */
  size_t recomputed; /* of those, offsets whose memo had expired: values recomputed
                        read-only from the current state (may differ from the first run) */
  size_t too_late;  /* ops older than the allowed lateness behind the window's newest
                       bucket: not applied; their value is read-only */
} fp_store_result_t;

typedef struct fp_store_s fp_store_t;

typedef struct fp_store_redis_conf_s {
  const char *host;     /* borrowed for the call */
  int port;
  const char *password; /* NULL or "" for none */
  int db;
  const char *prefix;   /* key namespace, e.g. "fp" */
  int connect_timeout_ms, command_timeout_ms;
  int64_t memo_ttl_ms;  /* how long a memo entry lives at most (default 1 h) */
  int64_t lateness_ms;  /* allowed lateness: buckets are kept (and TTLs extended) this much
                           longer, and older ops are not applied (0: none) */
  int64_t fence_ttl_ms; /* fence key expiry; at least the longest window's (0: 30 days) */
} fp_store_redis_conf_t;

/** Connects to Redis and loads the engine's server-side scripts. One per worker thread. */
fp_store_t *fp_store_redis_new(const fp_store_redis_conf_t *conf, char *errstr, size_t errstr_size);
/** An in-process store. Not shared between threads. */
fp_store_t *fp_store_mem_new(char *errstr, size_t errstr_size);
void fp_store_destroy(fp_store_t *store);

/**
 * Applies a batch of window updates from one source, in one round trip. @p ops must be in
 * ascending offset order (several ops may share an offset). Fills each op's `out`.
 * @param committed offsets below this are committed in Kafka: their memo may be dropped.
 * @returns FP_OK, FP_ERR_REDIS (retriable: nothing or everything was applied; retry the
 *          same batch) or FP_ERR_REDIS_FATAL.
 */
fp_err_t fp_store_apply(fp_store_t *store, const char *source, fp_win_op_t *ops, size_t n,
                        int64_t committed, fp_store_result_t *res, char *errstr,
                        size_t errstr_size);

/**
 * Sends the first round trip of fp_store_apply(@p store, @p source, @p ops, @p n,
 * @p committed) without waiting for it, so the caller can work while the server runs it
 * (the worker decodes its next run). The fp_store_apply() call with the same arguments, the
 * next call on the store, then takes its reply. Best effort: when the backend cannot send
 * ahead (the in-process store), the arguments are bad or the send fails, nothing is
 * outstanding and fp_store_apply() does the whole call itself, so the result is the same.
 * @p ops is borrowed until that fp_store_apply() call, and must not change before it.
 */
void fp_store_apply_send(fp_store_t *store, const char *source, const fp_win_op_t *ops, size_t n,
                         int64_t committed);

/** Highest offset applied for @p source, or -1 when none is recorded. */
fp_err_t fp_store_fence(fp_store_t *store, const char *source, int64_t *offset_out,
                        char *errstr, size_t errstr_size);

/** One term of a top-k read. */
typedef struct fp_topk_entry_s {
  char term[64];
  double count;
} fp_topk_entry_t;

/**
 * Reads the @p k most frequent members of a TOPK window as of @p ts_ms.
 * @returns FP_OK with *n_out <= k entries, most frequent first (ties: term ascending).
 */
fp_err_t fp_store_topk(fp_store_t *store, const char *key, const fp_win_spec_t *spec,
                       int64_t ts_ms, size_t k, fp_topk_entry_t *out, size_t *n_out,
                       char *errstr, size_t errstr_size);

/** One read of fp_store_topk_many: the arguments of fp_store_topk, and its results. */
typedef struct fp_topk_req_s {
  const char *key;            /* borrowed for the call (k 0: may be NULL) */
  const fp_win_spec_t *spec;  /* borrowed for the call (k 0: may be NULL) */
  int64_t ts_ms;
  size_t k;                   /* 0: nothing is read for it */
  fp_topk_entry_t *out;       /* room for k entries (caller's) */
  size_t n_out;               /* set by the call */
} fp_topk_req_t;

/**
 * Reads several TOPK windows in one round trip (fp_store_topk of each, in one script call).
 * @returns FP_OK with each request's out and n_out set; on any error every n_out is 0.
 */
fp_err_t fp_store_topk_many(fp_store_t *store, fp_topk_req_t *reqs, size_t n, char *errstr,
                            size_t errstr_size);

/** Round trips made so far (for benchmarks and metrics). */
uint64_t fp_store_roundtrips(const fp_store_t *store);
/** Ops sent to the store as part of a run (consecutive ops of one COUNT, BASELINE or DISTINCT
 * window on one bucket, and member, that cost the script one op; of one TOPK window on one
 * bucket, their terms counted), cumulative. */
uint64_t fp_store_ops_in_runs(const fp_store_t *store);

/** Replayed offsets whose memo had expired, so their values were recomputed (cumulative). */
uint64_t fp_store_memo_misses(const fp_store_t *store);
/** Ops refused as older than the allowed lateness (cumulative). */
uint64_t fp_store_too_late(const fp_store_t *store);
/** Sets the allowed lateness (the in-process store has no conf; Redis takes it from conf). */
void fp_store_set_lateness(fp_store_t *store, int64_t lateness_ms);

/** Default of fp_store_set_distinct_exact(): ~550 KB of Redis memory per window at most. */
#define FP_STORE_DEFAULT_DISTINCT_EXACT 5000
/**
 * Sets how many members a DISTINCT window counts exactly (a sorted set of the members of its
 * head's buckets) before it goes to a HyperLogLog of them; 0: HyperLogLog only. Exact
 * counting costs Redis the same per op at any size, where a sparse HyperLogLog's union
 * costs its size squared to rebuild; the cap bounds the memory (docs/windows.md).
 * Default FP_STORE_DEFAULT_DISTINCT_EXACT. The in-process store counts exactly either way.
 */
void fp_store_set_distinct_exact(fp_store_t *store, int64_t members);

/**
 * Turns on the store-loss check of fp_store_apply(): a call whose source has no fence while
 * @p committed > 0 (Kafka says offsets were done, the store does not know them: it was
 * flushed or restarted without persistence) changes nothing and fails with
 * FP_ERR_STORE_LOST, so the caller can rebuild before counting anything. The engine's
 * workers turn it on; they pass committed <= 0 while they rebuild.
 */
void fp_store_set_loss_check(fp_store_t *store, int on);

#endif
