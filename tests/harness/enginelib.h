/*
 * enginelib.h: what the kafka/ tests that drive the real `flashpoint` binary share, on top
 * of testlib.h: a scenario (unique input, output and dead-letter topics, group, Redis
 * prefix), a deterministic mention generator, starting the engine with a settings list,
 * waiting until the group's committed offsets reach the end of the input, and reading the
 * engine's observable results back (window hashes in Redis, incident events, dead letters).
 *
 * Every function records failures through testlib (FPT_FAIL) and returns an error value;
 * nothing here sleeps for correctness: waits are conditions with deadlines.
 *
 * Memory: functions returning pointers say who frees them.
 */
#ifndef FP_ENGINELIB_H
#define FP_ENGINELIB_H

#include <stddef.h>
#include <stdint.h>

#include "testlib.h"

#define FPE_MAX_PARTS 16

/** One run of the engine over an input topic: names are unique per call of fpe_env_init. */
typedef struct fpe_env_s {
  char *in;        /**< input topic (shared by fpe_env_init_sibling copies; owned if own_in) */
  char *out;       /**< output (incident) topic, owned */
  char *dlq;       /**< dead-letter topic, owned */
  char *group;     /**< consumer group, owned */
  char prefix[64]; /**< Redis key prefix */
  char rules[512]; /**< rules directory */
  int nparts;      /**< partitions of the input topic */
  int own_in;      /**< 1 if this env created (and deletes) the input topic */
} fpe_env_t;

/**
 * Creates a scenario: an input topic with @p nparts partitions, a 1-partition output and
 * dead-letter topic, a group name and a Redis prefix, all unique.
 * @param name short tag used in every name ("order", "crash-ref").
 * @param rules_subdir directory under tests/kafka/ holding the rules ("rules-core").
 * @returns 0, or -1 (recorded).
 */
int fpe_env_init(fpe_env_t *env, const char *name, const char *rules_subdir, int nparts);

/**
 * Another scenario over the same input topic as @p base (which keeps owning it): own
 * output and dead-letter topics, group and prefix. For reference runs.
 */
int fpe_env_init_sibling(fpe_env_t *env, const fpe_env_t *base, const char *name);

/** Deletes the topics this env owns and every Redis key under its prefix; frees names. */
void fpe_env_cleanup(fpe_env_t *env);

/* ------------------------------------------------------------------------------------ */
/* Input                                                                                 */

/** Mention generator parameters; the content is a pure function of these. */
typedef struct fpe_gen_s {
  int first;       /**< sequence number of the first mention (for producing in chunks) */
  int n;           /**< mentions to produce (sequence first .. first+n-1) */
  int nbrands;     /**< brands "brand-00".. (the message key) */
  int64_t t0_ms;   /**< created_at of sequence 0 */
  int64_t step_ms; /**< created_at increment per sequence number */
  int bad_every;   /**< after every bad_every-th mention a malformed message (0: none) */
  int alarm_until; /**< ALARM bursts only for sequence numbers below this (0: everywhere);
                        a quiet tail lets every incident become due well before the end */
} fpe_gen_t;

/** What fpe_produce() sent. */
typedef struct fpe_gen_count_s {
  int64_t valid;  /**< mentions that decode */
  int64_t bad;    /**< malformed messages (decode or schema errors) */
  int64_t alarm;  /**< valid mentions whose text contains ALARM */
} fpe_gen_count_t;

/** 1 if mention @p seq of brand index @p brand says ALARM (bursts for a few brands),
 * before fpe_gen_t.alarm_until. */
int fpe_is_alarm(int seq, int brand);

/**
 * Produces the mentions of @p g (keyed by brand, partitioner chooses) plus malformed
 * messages, waiting for every delivery report. Adds what was sent to @p count.
 * @returns 0, or -1 (recorded).
 */
int fpe_produce(const char *topic, const fpe_gen_t *g, fpe_gen_count_t *count);

/* ------------------------------------------------------------------------------------ */
/* Engine                                                                                */

/**
 * Starts `flashpoint run` for @p env: input/output/dlq topics, group, broker, Redis port
 * and prefix, rules dir, commit.interval.ms=200, then @p extra "key=value" settings
 * (NULL-terminated, may be NULL; later settings override).
 * @param log_path log file, or NULL for a fresh one.
 * @returns owned by the caller (fpt_proc_free() kills it); NULL (recorded) on failure.
 */
fpt_proc_t *fpe_engine_start(const fpe_env_t *env, const char *const *extra, const char *log_path);

/**
 * Reads the group's committed offsets into @p out (-1001 where none).
 * @returns the sum of the committed offsets that are >= 0, or -1 on failure (recorded).
 */
int64_t fpe_committed(const fpe_env_t *env, int64_t *out);

/** End offsets of the input's partitions into @p out. @returns their sum, or -1. */
int64_t fpe_end_offsets(const fpe_env_t *env, int64_t *out);

/**
 * Waits until the group's committed offsets equal @p end for every partition, or until
 * @p deadline_ms passes or @p proc (may be NULL) exits.
 * @returns 1 when caught up, 0 otherwise (not recorded).
 */
int fpe_wait_committed(const fpe_env_t *env, const int64_t *end, fpt_proc_t *proc, int deadline_ms);

/**
 * Waits until the sum of committed offsets reaches @p target (or the deadline, or @p proc
 * exits). @returns 1 when reached, 0 otherwise.
 */
int fpe_wait_committed_sum(const fpe_env_t *env, int64_t target, fpt_proc_t *proc, int deadline_ms);

/**
 * Runs the engine over @p env until every partition is committed to its end, then SIGTERM;
 * checks exit code 0 within 10 s. For reference runs. @returns 0, or -1 (recorded).
 */
int fpe_run_to_end(const fpe_env_t *env, const char *const *extra, int deadline_ms);

/** @returns how many lines of the process log contain @p needle. */
int fpe_log_count(const fpt_proc_t *proc, const char *needle);

/** @returns 1 if the engine's log shows an assignment of at least one partition. */
int fpe_log_assigned(const fpt_proc_t *proc);

/**
 * Waits until the engine logs an assignment of at least one partition (or it exits, or the
 * deadline passes). @returns 1 if it did.
 */
int fpe_wait_assigned(fpt_proc_t *proc, int deadline_ms);

/* ------------------------------------------------------------------------------------ */
/* Results                                                                               */

/**
 * Dumps the window hashes of rule @p rule_id under the env's prefix as sorted lines
 * "<key> <bucket> <value>" (bucket fields only, i.e. numeric field names).
 * @returns malloc'd array of malloc'd strings (free with fpe_lines_free), count in *n;
 * NULL on failure (recorded).
 */
char **fpe_windows_dump(const fpe_env_t *env, const char *rule_id, size_t *n);

/** Sum of every bucket value of rule @p rule_id's windows; -1 on failure (recorded). */
int64_t fpe_windows_sum(const fpe_env_t *env, const char *rule_id);

/** Frees a line array. */
void fpe_lines_free(char **lines, size_t n);

/**
 * Compares two sorted line arrays; records a failure naming the first differences.
 * @returns 1 if equal.
 */
int fpe_lines_check_equal(char **a, size_t na, char **b, size_t nb, const char *what);

/**
 * @brief Checks that every window of @p rule_id in @p got equals the reference run @p want
 * bucket for bucket (and that the reference has windows at all). Failures are recorded.
 */
void fpe_windows_check_equal(const fpe_env_t *got, const fpe_env_t *want, const char *rule_id);

/** Incident events of an output topic, deduplicated by event_id. */
typedef struct fpe_events_s {
  char **ids;      /**< sorted event ids */
  char **payloads; /**< payload of each id */
  size_t n;        /**< distinct event ids */
  size_t records;  /**< records read (n + duplicates) */
  size_t conflicts; /**< duplicates whose bytes differ from the first copy (must be 0) */
  size_t bad;      /**< records that are not JSON with an event_id */
  int complete;    /**< the topic was read to its end */
} fpe_events_t;

/** Reads @p topic (read_committed). @returns owned (fpe_events_free); NULL on failure. */
fpe_events_t *fpe_events_read(const char *topic);
void fpe_events_free(fpe_events_t *ev);

/**
 * Checks that @p got has the same event ids with the same bytes as @p want, no conflicting
 * duplicates and no bad records. @returns 1 if so (failures recorded).
 */
int fpe_events_check_equal(const fpe_events_t *got, const fpe_events_t *want);

/** Number of records on @p topic (read_committed), -1 on failure (recorded). */
int64_t fpe_topic_count(const char *topic);

/**
 * Number of distinct input messages (x-err-partition, x-err-offset) on a dead-letter topic;
 * *records receives the record count (duplicates included). -1 on failure (recorded).
 */
int64_t fpe_dlq_distinct(const char *topic, int64_t *records);

/**
 * Reads the Redis fences of every input partition: the window fence (P:fence:S) when
 * @p lifecycle is 0, the lifecycle fence (P:lcf:S) otherwise; -1 where none.
 * @returns 0, or -1 (recorded).
 */
int fpe_fences(const fpe_env_t *env, int lifecycle, int64_t *out);

/**
 * How far a (killed) engine got in Redis beyond what its group committed: the number of
 * input offsets at or below the higher of the two fences and at or above the committed
 * offset, summed over the partitions; that is what a restart replays from the memo.
 * @returns the count, or -1 (recorded) if the fences cannot be read.
 */
int64_t fpe_applied_uncommitted(const fpe_env_t *env);

/** Calls of EVALSHA the Redis server has served so far (INFO commandstats), -1 on failure. */
int64_t fpe_redis_evalsha_calls(void);

/** Number of incident events whose rule id is @p rule_id in @p ev. */
size_t fpe_events_count_rule(const fpe_events_t *ev, const char *rule_id);

/**
 * Starts watching every command Redis serves (MONITOR) on a new connection.
 * @returns owned by the caller (fpe_monitor_stop); NULL on failure (recorded).
 */
redisContext *fpe_monitor_start(void);

/**
 * Reads the monitored commands for @p duration_ms and counts those that contain every one
 * of the NULL-terminated @p needles (e.g. {"\"EVALSHA\"", "\"apply\"", prefix, NULL});
 * the first few matches are printed as notes. @returns the count, or -1 on failure.
 */
int64_t fpe_monitor_count(redisContext *c, int duration_ms, const char *const *needles);

/** Closes a MONITOR connection (NULL is fine). */
void fpe_monitor_stop(redisContext *c);

/** Number of incident events in @p ev whose status is @p status ("resolved"). */
size_t fpe_events_count_status(const fpe_events_t *ev, const char *status);

#endif /* FP_ENGINELIB_H */
