/*
 * flashpoint.h - the one public header of Flashpoint.
 *
 * Flashpoint reads social-media mentions (JSON) from Kafka, runs sandboxed Lua rules over
 * event-time sliding windows kept in Redis, and writes incidents (versioned JSON) to Kafka
 * output topics. Everything a program embedding the engine needs is here; the structs behind
 * the handles live in the engine's internal headers.
 *
 * Ownership: every function says who owns the pointers it takes and returns. Handles are
 * created by fp_<thing>_new() and released by fp_<thing>_destroy(), which accepts NULL.
 *
 * Threads: an fp_conf_t is not thread-safe. An fp_engine_t is driven by one thread
 * (fp_engine_run); fp_engine_stop() and fp_engine_stats() may be called from any thread,
 * and fp_engine_stop() from a signal handler.
 */
#ifndef FLASHPOINT_H
#define FLASHPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FP_VERSION_STR "0.1.0"
/** Version of the incident JSON document (docs/incident.md). */
#define FP_INCIDENT_SCHEMA_VERSION 1

/**
 * One error enum for the whole engine. FP_OK is 0; every other value names a failure.
 * fp_err2str() gives a sentence for people, fp_err_name() a stable token used in
 * dead-letter headers and metrics labels.
 */
typedef enum {
  FP_OK = 0,
  FP_ERR_INVALID_ARG,   /**< a caller passed something unusable */
  FP_ERR_NOMEM,         /**< an allocation failed */
  FP_ERR_CONFIG,        /**< a configuration value is out of range or malformed */
  FP_ERR_UNKNOWN_KEY,   /**< a configuration key does not exist */
  FP_ERR_IO,            /**< a file or socket operation failed */
  FP_ERR_KAFKA,         /**< Kafka (librdkafka) reported an error */
  FP_ERR_REDIS,         /**< Redis is unreachable or answered with an error (retriable) */
  FP_ERR_REDIS_FATAL,   /**< Redis refused us for good: auth, OOM, read-only */
  FP_ERR_RULE_LOAD,     /**< a rule file does not compile or breaks the rule contract */
  FP_ERR_RULE_RUNTIME,  /**< a rule raised an error while evaluating */
  FP_ERR_RULE_BUDGET,   /**< a rule used up its instruction or time budget */
  FP_ERR_RULE_MEMORY,   /**< a rule hit its memory cap */
  FP_ERR_DECODE,        /**< an input message is not valid JSON */
  FP_ERR_SCHEMA,        /**< a mention lacks a required field or has an ill-typed one */
  FP_ERR_TOO_LARGE,     /**< an input message is larger than input.max.bytes */
  FP_ERR_LATE,          /**< a mention is later than the allowed lateness */
  FP_ERR_TIMEOUT,       /**< an operation did not finish in time */
  FP_ERR_STATE,         /**< the call is not valid in the object's current state */
  FP_ERR_FATAL,         /**< unrecoverable: the engine must stop */
  FP_ERR_STORE_LOST,    /**< the state store has no fence for a partition that has committed
                             offsets: it lost data (flushed, restarted without persistence) */
  FP_ERR__COUNT
} fp_err_t;

/** @returns a static sentence describing @p err (never NULL). */
const char *fp_err2str(fp_err_t err);
/** @returns a static lower-case token for @p err, e.g. "decode", "schema" (never NULL). */
const char *fp_err_name(fp_err_t err);

/* ------------------------------------------------------------------------------------------ */
/* Configuration                                                                               */

typedef struct fp_conf_s fp_conf_t;

/** @returns a configuration holding every default, or NULL on allocation failure. */
fp_conf_t *fp_conf_new(void);
/** Releases @p conf (NULL is fine). */
void fp_conf_destroy(fp_conf_t *conf);
/** @returns an independent copy of @p conf (owned by the caller), or NULL. */
fp_conf_t *fp_conf_dup(const fp_conf_t *conf);

/**
 * Sets one key. Keys are those of `flashpoint --help-config`; `kafka.*` keys are passed to
 * both the librdkafka consumer and producer, `consumer.*` only to the consumer and
 * `producer.*` only to the producer (minus the prefix).
 * @param errstr receives a message naming the key on failure.
 * @returns FP_OK, FP_ERR_UNKNOWN_KEY or FP_ERR_CONFIG.
 */
fp_err_t fp_conf_set(fp_conf_t *conf, const char *key, const char *value, char *errstr,
                     size_t errstr_size);

/**
 * Reads a file of `key = value` lines (`#` starts a comment) into @p conf.
 * @returns FP_OK, or the first failure with the file and line in @p errstr.
 */
fp_err_t fp_conf_load_file(fp_conf_t *conf, const char *path, char *errstr, size_t errstr_size);

/**
 * Applies environment overrides: FLASHPOINT_<KEY> with dots written as `__` and the key
 * upper-cased (FLASHPOINT_REDIS__HOST=redis sets redis.host).
 * @param envp a NULL-terminated environment array (borrowed), e.g. `environ`.
 */
fp_err_t fp_conf_load_env(fp_conf_t *conf, char *const *envp, char *errstr, size_t errstr_size);

/**
 * Reads a key's current value as text into @p buf.
 * @returns FP_OK or FP_ERR_UNKNOWN_KEY. Secrets (passwords) read back as "[redacted]".
 */
fp_err_t fp_conf_get(const fp_conf_t *conf, const char *key, char *buf, size_t buf_size);

/** Prints the configuration table (name, type, default, range, description) to @p out. */
void fp_conf_print_help(FILE *out, int markdown);

/* ------------------------------------------------------------------------------------------ */
/* Rules                                                                                       */

/**
 * Loads and validates every rule file of @p rules_dir in a sandbox, as the engine would at
 * start-up, and prints one line per rule to @p out (may be NULL).
 * @returns FP_OK, or FP_ERR_RULE_LOAD with file and line in @p errstr.
 */
fp_err_t fp_rules_check_dir(const char *rules_dir, FILE *out, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------------------------------ */
/* Engine                                                                                      */

typedef struct fp_engine_s fp_engine_t;

/** Counters of a running engine (monotonic since fp_engine_new). */
typedef struct fp_stats_s {
  uint64_t mentions_in;       /**< messages read from the input topics */
  uint64_t mentions_decoded;  /**< messages that decoded into a valid mention */
  uint64_t dead_lettered;     /**< records acknowledged on the dead-letter topic */
  uint64_t late;              /**< mentions later than the allowed lateness (counted, not windowed) */
  uint64_t duplicates_fenced; /**< mentions whose window update Redis had already applied */
  uint64_t rule_evals;        /**< (mention, rule) evaluations */
  uint64_t rule_errors;       /**< evaluations that failed (error, budget, memory) */
  uint64_t incidents;         /**< incident events acknowledged by Kafka */
  uint64_t offsets_stored;    /**< input offsets handed to the consumer for commit */
  uint64_t redis_roundtrips;  /**< round trips to the state store */
  uint64_t redis_errors;      /**< failed round trips (each followed by a retry) */
  uint64_t txn_commits;       /**< exactly-once: transactions committed */
  uint64_t txn_aborts;        /**< exactly-once: transactions aborted (then rewound) */
  uint64_t redelivered;       /**< messages the consumer delivered twice in one assignment, dropped */
  uint64_t outputs_failed;    /**< at-least-once: outputs Kafka did not acknowledge (each emitted again) */
} fp_stats_t;

/**
 * Creates an engine: validates the configuration, loads the rules (fatal if any fails),
 * connects the Kafka clients and the state store.
 * @param conf borrowed; the engine keeps its own copy.
 * @returns the engine, or NULL with the reason in @p errstr.
 */
fp_engine_t *fp_engine_new(const fp_conf_t *conf, char *errstr, size_t errstr_size);

/**
 * Consumes, evaluates and emits until fp_engine_stop() is called, then drains in-flight
 * work, flushes the producer, commits stored offsets and closes the consumer.
 * @returns FP_OK after a clean stop, otherwise the fatal error that ended the run.
 */
fp_err_t fp_engine_run(fp_engine_t *engine);

/** Asks a running engine to stop. Async-signal-safe. */
void fp_engine_stop(fp_engine_t *engine);

/** Asks the engine to reload its rules at the next batch boundary. Async-signal-safe. */
void fp_engine_reload(fp_engine_t *engine);

/** Copies the current counters into @p out. Thread-safe. */
void fp_engine_stats(fp_engine_t *engine, fp_stats_t *out);

/** Releases @p engine (NULL is fine). Call after fp_engine_run() returned. */
void fp_engine_destroy(fp_engine_t *engine);

#ifdef __cplusplus
}
#endif
#endif /* FLASHPOINT_H */
