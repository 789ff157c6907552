/*
 * sandbox.h - the one door into Lua: a capped, budgeted, allow-listed lua_State for rule
 * code. Only sandbox.c opens Lua libraries, installs hooks or calls lua_pcall on rule code.
 *
 * One sandbox per worker thread (a lua_State is not thread-safe). Every call into rule code
 * goes through fp_sandbox_pcall(), which arms the instruction budget and deadline and maps
 * failures onto FP_ERR_RULE_RUNTIME / _BUDGET / _MEMORY.
 */
#ifndef FP_SANDBOX_H
#define FP_SANDBOX_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"

/** Instructions between two runs of the count hook (deadline is checked there too). */
#define FP_SANDBOX_HOOK_EVERY 1000
/** Longest subject the pattern functions (find/match/gmatch/gsub) accept; plain finds exempt. */
#define FP_SANDBOX_MAX_SUBJECT (64 * 1024)
/** Highest estimated pattern cost (see sandbox.c, pattern_cost) accepted. */
#define FP_SANDBOX_MAX_PATTERN_COST 1.0e8

typedef struct fp_sandbox_limits_s {
  size_t mem_bytes;      /* cap of the whole state (0: 64 MiB) */
  uint64_t instructions; /* per fp_sandbox_pcall (0: 1e6) */
  int64_t deadline_ms;   /* wall clock per fp_sandbox_pcall (0: 250) */
} fp_sandbox_limits_t;

typedef struct fp_sandbox_s fp_sandbox_t;

/**
 * Creates a sandboxed state: base/table/string/math/utf8 only, allow-listed read-only
 * globals, a private read-only `string` behind the string metatable, guarded patterns and
 * a `require` that resolves only @p lib_dir/<name>.lua.
 * @param limits borrowed; NULL for defaults.  @param lib_dir copied; may be NULL (no require).
 * @returns the sandbox (owned by the caller), or NULL with a reason in @p errstr.
 */
fp_sandbox_t *fp_sandbox_new(const fp_sandbox_limits_t *limits, const char *lib_dir,
                             char *errstr, size_t errstr_size);
/** Closes the state and frees the sandbox. NULL is fine. */
void fp_sandbox_destroy(fp_sandbox_t *sb);

/** @returns the state (borrowed, valid until fp_sandbox_destroy). */
lua_State *fp_sandbox_lua(fp_sandbox_t *sb);

/**
 * Pops the value on top of the stack and installs it as a shared global visible to every
 * rule under @p name (borrowed for the call). Tables are sealed read-only (recursively)
 * first. Host use only. @returns FP_OK or FP_ERR_RULE_MEMORY.
 */
fp_err_t fp_sandbox_add_global(fp_sandbox_t *sb, const char *name);

/** Pushes a fresh, private environment table for one rule (reads fall through to globals). */
void fp_sandbox_push_env(fp_sandbox_t *sb);

/**
 * Compiles @p len bytes of Lua *text* (binary chunks are refused) named @p chunkname
 * ("@path" gives "path:line:" messages). Pops the env table on top of the stack and makes
 * it the chunk's _ENV. On success pushes the function; on failure pushes nothing.
 * @returns FP_OK or FP_ERR_RULE_LOAD with the compiler's message.
 */
fp_err_t fp_sandbox_load(fp_sandbox_t *sb, const char *buf, size_t len, const char *chunkname,
                         char *errstr, size_t errstr_size);

/**
 * Calls the function below @p nargs arguments with a fresh instruction budget and deadline,
 * under a traceback handler. Like lua_pcall: on success the @p nresults results replace the
 * function and arguments; on failure nothing is left. The host-side flags are the truth: a
 * rule that swallowed its budget or memory error with pcall still fails.
 * @returns FP_OK, FP_ERR_RULE_RUNTIME, FP_ERR_RULE_BUDGET or FP_ERR_RULE_MEMORY (message in
 *          @p errstr, which may be NULL).
 */
fp_err_t fp_sandbox_pcall(fp_sandbox_t *sb, int nargs, int nresults, char *errstr,
                          size_t errstr_size);

/**
 * Replaces the table on top of the stack by a read-only proxy of it: reads, `#`, pairs and
 * ipairs work; writes and rawset raise an error; getmetatable returns "locked". The table
 * itself becomes unreachable from Lua. Not recursive (callers seal children first).
 */
void fp_sandbox_seal(lua_State *L);

/**
 * Runs trusted host C code @p fn in protected mode (no budget) so that allocation failures
 * become errors instead of a panic. @p fn receives the @p nargs values below the call plus
 * @p ud as a light userdata last argument, and leaves @p nresults results.
 * @returns FP_OK, FP_ERR_RULE_MEMORY or FP_ERR_RULE_RUNTIME (message in @p errstr).
 */
fp_err_t fp_sandbox_cpcall(fp_sandbox_t *sb, lua_CFunction fn, void *ud, int nargs,
                           int nresults, char *errstr, size_t errstr_size);

/** Bytes currently allocated by the state. */
size_t fp_sandbox_mem_used(const fp_sandbox_t *sb);

/* ---------------------------------------------------------------------------------------- */
/* Watchdog: the last line of defence against a C call the count hook cannot preempt       */

/** Who is running in a sandbox, for the watchdog's report and strike. All borrowed. */
typedef struct fp_sandbox_label_s {
  const char *rule_id; /* NULL while a file is being loaded (its rule id is not known yet) */
  const char *file;
  const char *hash;    /* 16 hex digits of the file's FNV-1a 64 */
} fp_sandbox_label_t;

/**
 * Says which rule the next fp_sandbox_pcall() runs. @p label is borrowed until the next call
 * of this function or fp_sandbox_destroy() (rules.c points it at the rule's own record).
 */
void fp_sandbox_set_label(fp_sandbox_t *sb, const fp_sandbox_label_t *label);

/** Watchdog settings. Zero-initialise, then set what you need. */
typedef struct fp_watchdog_conf_s {
  int64_t hard_ms;          /* a single call longer than this aborts the process; 0: per
                               sandbox max(10 x its deadline_ms, FP_WATCHDOG_MIN_MS) */
  const char *strikes_dir;  /* copied; where strike files go (see fp_sandbox_strikes); NULL
                               or "": no strikes are recorded */
} fp_watchdog_conf_t;

#define FP_WATCHDOG_MIN_MS 2000

/**
 * Starts the process-wide watchdog thread. It checks every sandbox of the process about ten
 * times per hard limit; a call that has run past the hard limit is stuck in C code (the
 * count hook would have stopped Lua code at its deadline long before), and nothing can
 * interrupt a C function safely: the watchdog logs the rule, file and elapsed time at ERROR,
 * adds a strike for the rule (when a strikes directory is set), and calls abort(). The
 * process restarts and replays from its committed offsets; a rule with enough strikes is
 * quarantined when the rules load (fp_rules_limits_t.strikes_dir).
 * Calling it again replaces the settings. @returns FP_OK, or FP_ERR_FATAL (thread) /
 * FP_ERR_NOMEM with a reason in @p errstr.
 */
fp_err_t fp_sandbox_watchdog_start(const fp_watchdog_conf_t *conf, char *errstr,
                                   size_t errstr_size);

/** Stops the watchdog thread (if running). Sandboxes stay usable. */
void fp_sandbox_watchdog_stop(void);

/**
 * Strikes recorded for a rule: the number in @p dir/<rule_id>@<hash>.strikes (0 if there is
 * none). Keyed by the file's hash, so a fixed rule file starts again from 0.
 */
unsigned fp_sandbox_strikes(const char *dir, const char *rule_id, const char *hash);

#endif
