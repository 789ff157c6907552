/*
 * store_int.h - what the store's backends (store_redis.c, store_mem.c) and the modules built
 * on them (windows in store.c; the lifecycle half) share: the backend vtable, the store
 * struct, and one door for running a server-side script. Not for other modules.
 *
 * A backend knows how to run an embedded Lua script with string arguments and hand back a
 * flat array of strings; everything about windows, fences and memos is in the script
 * (store_windows.lua), so the Redis and in-process stores cannot drift apart.
 */
#ifndef FP_STORE_INT_H
#define FP_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "util.h"

/** An embedded server-side script. Identity is the struct's address. */
typedef struct fp_store_script_s {
  const char *name; /* for messages, e.g. "store_windows.lua" */
  const char *text; /* Lua source, NUL-terminated */
  size_t len;
} fp_store_script_t;

/** The windows script (generated from engine/store_windows.lua at build time). */
extern const fp_store_script_t fp_store_windows_script;

/**
 * A script's reply: a flat array of strings. Borrowed from the backend until its next call
 * or its destruction. An element may be NULL (a nil/false element).
 */
typedef struct fp_store_reply_s {
  size_t n;
  const char **str;
  size_t *len;
} fp_store_reply_t;

typedef struct fp_store_backend_s {
  const char *name; /* "redis", "mem" */
  /**
   * Runs @p script with ARGV = argv[0..argc) in one round trip, atomically.
   * @returns FP_OK, FP_ERR_REDIS (retriable), FP_ERR_REDIS_FATAL, or FP_ERR_FATAL (a bug
   *          in the script itself, in-process).
   */
  fp_err_t (*eval)(fp_store_t *st, const fp_store_script_t *script, size_t argc,
                   const char **argv, const size_t *argvlen, fp_store_reply_t *rep,
                   char *errstr, size_t errstr_size);
  void (*destroy)(fp_store_t *st);
  /**
   * Optional (NULL: eval only), the two halves of eval for a caller with work to do while
   * the server runs the script: send writes the call without waiting (what the socket does
   * not take yet goes with recv); recv waits for its reply, as eval would return it.
   * Any other call in between first reads the outstanding reply and drops it, so recv then
   * fails with FP_ERR_INVALID_ARG ("nothing sent") and the caller calls eval instead.
   */
  fp_err_t (*send)(fp_store_t *st, const fp_store_script_t *script, size_t argc,
                   const char **argv, const size_t *argvlen, char *errstr, size_t errstr_size);
  fp_err_t (*recv)(fp_store_t *st, fp_store_reply_t *rep, char *errstr, size_t errstr_size);
} fp_store_backend_t;

struct fp_store_s {
  const fp_store_backend_t *be;
  char *prefix;         /* owned: key namespace */
  int64_t memo_ttl_ms;  /* memo hash expiry */
  int64_t fence_ttl_ms; /* fence key expiry (at least the data's) */
  int64_t lateness_ms;  /* allowed lateness: data retention and "too late" */
  int64_t distinct_exact; /* members a DISTINCT window counts exactly at most (0: HLL only) */
  int loss_check;       /* refuse (FP_ERR_STORE_LOST) when the fence is gone but committed > 0 */
  uint64_t roundtrips;
  uint64_t ops_in_runs; /* ops sent as part of a run of two or more (applied calls) */
  uint64_t call_in_runs; /* of the last call built: counted into ops_in_runs once applied */
  uint64_t memo_misses; /* replayed offsets whose memo had expired (values recomputed) */
  uint64_t too_late;    /* ops older than the lateness: not applied */
  /* scratch, reused between calls */
  const char **argv;
  size_t *argvlen;
  size_t *numoff;
  size_t argc, argcap;
  char *nums;
  size_t numlen, numcap;
  /* first_use's table (open addressing, slot -> item index + 1, 0 = empty): the window
     table over the ops' keys, then a TOPK run's terms; and each op's window position
     (1-based) */
  uint32_t *wslot;
  size_t wslotcap;
  uint32_t *opwin;
  size_t opwincap;
  uint32_t *perm, *wstart, *kidx; /* sending order, per-window ends, position within offset */
  size_t permcap, wstartcap, kidxcap;
  uint32_t *wruns; /* per window: how many runs its ops make (see call_ops) */
  size_t wrunscap;
  uint32_t *tid, *tcount; /* a TOPK run: each op's term number (first_use), each term's count */
  size_t tidcap, tcountcap;
  fp_buf_t blob; /* the memo index of an apply call */
  /* an apply call sent ahead (fp_store_apply_send) whose reply fp_store_apply takes: the
     ops it was built from (borrowed), so a different apply is not given its reply */
  struct {
    const fp_win_op_t *ops;
    size_t n;
    int64_t committed;
    char source[320];
  } sent;
};

/** Initialises the common part; @p prefix is copied. @returns FP_OK or FP_ERR_NOMEM. */
fp_err_t fp_store_init_common(fp_store_t *st, const fp_store_backend_t *be, const char *prefix);

/**
 * Test hook: runs one emulated command ("DBSIZE", or e.g. "PTTL" with a key) in an
 * in-process store and returns its integer result (-3 if not an integer).
 */
long long fp_store_mem_debug_cmd(fp_store_t *st, const char *cmd, const char *arg);

#endif
