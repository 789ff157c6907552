/*
 * rules.h - a rule set: the Lua rule files of one directory, loaded into one sandboxed
 * lua_State. One fp_rules_t per worker thread; nothing in it is shared between threads.
 *
 * Evaluation is in two stages so the engine can batch state-store round trips:
 *   1. fp_rules_select(): for one mention, runs every rule's `key` and `when`, and appends
 *      the window updates the selected rules want (fp_win_op_t) to the caller's array.
 *   2. after fp_store_apply() filled the values, fp_rules_severity() runs a rule's
 *      `severity` function on those values.
 * The mention's Lua table is built once in stage 1 and released with fp_rules_release().
 */
#ifndef FP_RULES_H
#define FP_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"
#include "mention.h"
#include "store.h"

#define FP_RULE_MAX_WINDOWS 16

/** Severities, watch (4) to all-hands (1). FP_SEV_NONE means "no signal". */
typedef enum { FP_SEV_NONE = 0, FP_SEV4 = 1, FP_SEV3 = 2, FP_SEV2 = 3, FP_SEV1 = 4 } fp_sev_t;
/** "sev1".."sev4" or "none". */
const char *fp_sev_name(fp_sev_t s);
/** @returns the severity named @p s, or -1. */
int fp_sev_parse(const char *s);

typedef struct fp_rule_window_s {
  const char *name;   /* owned by the rule set */
  fp_win_spec_t spec;
  const char *of;     /* SUM/DISTINCT/TOPK: field path ("author.followers"); NULL for COUNT */
} fp_rule_window_t;

/** What the engine needs to know about one loaded rule. Owned by the rule set. */
typedef struct fp_rule_info_s {
  const char *id;
  int version;
  const char *description, *owner, *file;
  char hash[17];                /* 16 hex digits: FNV-1a 64 of the file's bytes */
  size_t nwindows;
  fp_rule_window_t windows[FP_RULE_MAX_WINDOWS];
  int64_t resolve_after_ms;     /* an open incident resolves after this long with no signal */
  const char *respond;          /* suggested first response, may be NULL */
  const char *topics[5];        /* output topic per severity index (fp_sev_t); NULL = default */
  int quarantined;              /* set after repeated failures; the rule is skipped */
  uint64_t failures;            /* evaluations of this rule that failed (select or severity) */
} fp_rule_info_t;

typedef struct fp_rules_limits_s {
  size_t mem_bytes;         /* cap of the whole lua_State (default 64 MiB) */
  uint64_t instructions;    /* per call of a rule function (default 1e6) */
  int64_t deadline_ms;      /* wall-clock deadline per call (default 250 ms) */
  unsigned quarantine_after;/* consecutive failures before a rule is quarantined (default 5) */
  /* Watchdog strikes (sandbox.h, fp_sandbox_watchdog_start): a rule with at least
   * strikes_quarantine strikes in strikes_dir is quarantined when the set loads, and a file
   * that hung that often while loading fails the load. NULL/"" (default): not consulted. */
  const char *strikes_dir;  /* borrowed for fp_rules_new (copied) */
  unsigned strikes_quarantine; /* default 3 */
} fp_rules_limits_t;

typedef struct fp_rules_s fp_rules_t;

/**
 * Loads every `*.lua` file directly in @p dir (the `lib/` subfolder is the rules' library,
 * reachable through `require`). Fails if any file fails: a rule set is all or nothing.
 * @param limits borrowed; NULL for defaults.
 * @returns the rule set, or NULL with "file:line: reason" in @p errstr.
 */
fp_rules_t *fp_rules_new(const char *dir, const fp_rules_limits_t *limits, char *errstr,
                         size_t errstr_size);
void fp_rules_destroy(fp_rules_t *rules);

size_t fp_rules_count(const fp_rules_t *rules);
/** @returns rule @p i (borrowed, valid until fp_rules_destroy). */
const fp_rule_info_t *fp_rules_info(const fp_rules_t *rules, size_t i);

/** One rule that selected a mention. */
typedef struct fp_rule_hit_s {
  size_t rule;        /* index into the rule set */
  char entity[128];   /* what the rule keys on (brand, product, root post id...) */
  size_t op_first;    /* index of this hit's first window op in the caller's op array; the
                         rule's windows follow in declaration order (TOPK may add several) */
  size_t op_count;
} fp_rule_hit_t;

/** A growable array of window ops whose strings are owned by the array. Zero-initialise. */
typedef struct fp_opvec_s {
  fp_win_op_t *ops;
  size_t n, cap;
  char **strs; size_t nstrs, capstrs; /* arena chunks holding the keys and members */
  size_t chunk, used;                 /* arena fill mark: current chunk, bytes used in it */
} fp_opvec_t;
void fp_opvec_reset(fp_opvec_t *v);   /* keeps capacity */
void fp_opvec_free(fp_opvec_t *v);

/**
 * Stage 1 for mention @p m (offset @p offset). Appends one hit per selecting rule to
 * @p hits (at most @p hits_cap; *nhits gets the count) and their window ops to @p ops.
 * @param mref_out receives a handle of the mention's Lua table for stage 2.
 * @returns FP_OK; a failing rule is counted in *nerrors and skipped, never fatal.
 */
fp_err_t fp_rules_select(fp_rules_t *rules, const fp_mention_t *m, int64_t offset,
                         fp_rule_hit_t *hits, size_t hits_cap, size_t *nhits, fp_opvec_t *ops,
                         int *mref_out, unsigned *nerrors);

/**
 * Stage 2: runs the hit's rule `severity` function with the window values in
 * ops[hit->op_first ...]. @returns FP_OK with *sev_out set, or the rule's failure
 * (FP_ERR_RULE_RUNTIME, FP_ERR_RULE_BUDGET, FP_ERR_RULE_MEMORY) with a message.
 */
fp_err_t fp_rules_severity(fp_rules_t *rules, int mref, const fp_rule_hit_t *hit,
                           const fp_win_op_t *ops, fp_sev_t *sev_out, char *errstr,
                           size_t errstr_size);

/** Releases the mention table of stage 1. */
void fp_rules_release(fp_rules_t *rules, int mref);

#endif
