/*
 * testlib.h: the small test library every tier links (fptest).
 *
 * A test program is a main() that calls fpt_run() for each case and returns fpt_done():
 *
 *     static void test_roundtrip(void) {
 *         FPT_CHECK_EQ_INT(fp_thing(2), 4);
 *     }
 *     int main(void) {
 *         fpt_run("roundtrip", test_roundtrip);
 *         return fpt_done();
 *     }
 *
 * Checks record a failure (file:line and message, printed at once on stderr) and carry on;
 * a case fails if any check failed or if it executed no check at all. Helpers that fail
 * (a topic that cannot be created, a Redis that does not answer) also record a failure
 * in the current case, and return an error value so the case can stop early.
 *
 * Services (redis/ and kafka/ tiers): tests/harness/services.sh writes an env file and
 * ctest passes its path in FP_SERVICES_ENV. The accessors below load it on first use.
 *
 * Memory: every function that returns a pointer says who frees it. "Borrowed" pointers
 * stay valid until the next fpt_services_load() (services accessors) or fpt_done().
 *
 * Threads: the library is for the test's main thread. Checks are not thread-safe; the
 * Kafka helpers share one producer handle (librdkafka itself is thread-safe).
 */
#ifndef FP_TESTLIB_H
#define FP_TESTLIB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>

#if defined(__GNUC__)
#define FPT_PRINTF(fmtidx, argidx) __attribute__((format(printf, fmtidx, argidx)))
#else
#define FPT_PRINTF(fmtidx, argidx)
#endif

/* ------------------------------------------------------------------------------------ */
/* Checks and cases                                                                      */
/* ------------------------------------------------------------------------------------ */

/**
 * @brief Records one check: counted always, a failure (file:line: case: message) if !ok.
 * Use through the FPT_CHECK* macros.
 * @returns ok (0 or 1), so `if (!FPT_CHECK(p != NULL, "alloc")) return;` works.
 */
int fpt_check_(int ok, const char *file, int line, const char *fmt, ...) FPT_PRINTF(4, 5);

/** FPT_CHECK(cond, fmt, ...): a printf-style message is required (it says what failed). */
#define FPT_CHECK(cond, ...) fpt_check_((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)

/** Integers compared as long long; the message shows both expressions and values. */
#define FPT_CHECK_EQ_INT(a, b) fpt_check_eq_int_((long long)(a), (long long)(b), #a, #b, \
                                                 __FILE__, __LINE__)
/** Strings compared with strcmp; NULL equals only NULL. */
#define FPT_CHECK_EQ_STR(a, b) fpt_check_eq_str_((a), (b), #a, #b, __FILE__, __LINE__)
/** Doubles: |a - b| <= eps. */
#define FPT_CHECK_NEAR(a, b, eps) fpt_check_near_((double)(a), (double)(b), (double)(eps), \
                                                  #a, #b, __FILE__, __LINE__)

int fpt_check_eq_int_(long long a, long long b, const char *ea, const char *eb,
                      const char *file, int line);
int fpt_check_eq_str_(const char *a, const char *b, const char *ea, const char *eb,
                      const char *file, int line);
int fpt_check_near_(double a, double b, double eps, const char *ea, const char *eb,
                    const char *file, int line);

/**
 * @brief Records a failure in the current case without a condition (helpers use it).
 */
void fpt_fail(const char *file, int line, const char *fmt, ...) FPT_PRINTF(3, 4);
#define FPT_FAIL(...) fpt_fail(__FILE__, __LINE__, __VA_ARGS__)

/** @returns the number of failed checks so far in the current case. */
long fpt_failed_checks(void);

/** @brief Prints a progress note on stderr, prefixed with the current case name. */
void fpt_note(const char *fmt, ...) FPT_PRINTF(1, 2);

/**
 * @brief Runs one test case: fn() is called once; the case passes if it executed at least
 * one check and none failed. Prints "PASS name (N checks, T ms)" or "FAIL name".
 * @param name borrowed, must outlive fpt_done() (a string literal).
 */
void fpt_run(const char *name, void (*fn)(void));

/**
 * @brief Prints every case's result and the final line "N passed, N failed" (cases),
 * releases the library's shared handles (Kafka producer, service settings).
 * @returns the process exit code: 0 if at least one case ran and all passed, else 1.
 */
int fpt_done(void);

/** @brief Monotonic clock in milliseconds. */
int64_t fpt_now_ms(void);

/**
 * @brief Polls fn(arg) until it returns non-zero or deadline_ms (a duration from now)
 * passes. Backs off from 1 ms to 50 ms between calls. Use instead of sleeping.
 * @returns 1 if the condition became true, 0 on timeout (records nothing).
 */
int fpt_wait_until(int (*fn)(void *arg), void *arg, int deadline_ms);

/**
 * @brief Makes a fresh directory under $TMPDIR (or /tmp), named fpt-<prefix>-XXXXXX.
 * @returns the path, owned by the caller (free()); NULL on error (recorded).
 * The directory is not removed automatically.
 */
char *fpt_tmpdir(const char *prefix);

/**
 * @brief Reads a whole file. @returns a NUL-terminated malloc'd buffer (caller frees) and
 * its length in *lenp (may be NULL); NULL if the file cannot be read (not recorded).
 */
char *fpt_read_file(const char *path, size_t *lenp);

/* ------------------------------------------------------------------------------------ */
/* Services                                                                              */
/* ------------------------------------------------------------------------------------ */

/**
 * @brief (Re)reads the env file named by FP_SERVICES_ENV (KEY=VALUE lines).
 * Called implicitly by the accessors; call it again after something restarted a service
 * outside fpt_services_cmd(). @returns 0, or -1 (recorded) if unset or unreadable.
 */
int fpt_services_load(void);

/** @returns the value of KEY from the env file, borrowed; NULL if absent. */
const char *fpt_services_get(const char *key);

/** @returns "127.0.0.1:PORT" (FP_TEST_KAFKA), borrowed; NULL (recorded) if unavailable. */
const char *fpt_kafka_bootstrap(void);

/** @returns FP_TEST_REDIS_HOST, borrowed; NULL (recorded) if unavailable. */
const char *fpt_redis_host(void);

/** @returns FP_TEST_REDIS_PORT, or -1 (recorded) if unavailable. */
int fpt_redis_port(void);

/**
 * @brief Runs `bash services.sh SUBCMD ENVFILE` (restart-kafka, restart-redis, kill-redis,
 * start-redis, kill-kafka, start-kafka), waits for it and reloads the env file.
 * @returns the script's exit code (0 = done and the service answers); non-zero is
 * recorded as a failure.
 */
int fpt_services_cmd(const char *subcmd);

/* ------------------------------------------------------------------------------------ */
/* Kafka (librdkafka)                                                                    */
/* ------------------------------------------------------------------------------------ */

/**
 * @brief A unique topic name: "<prefix>-<pid>-<seq>-<random>" (legal Kafka characters).
 * @returns malloc'd, caller frees.
 */
char *fpt_topic_name(const char *prefix);

/**
 * @brief A new rd_kafka_conf_t with bootstrap.servers set to the test broker (and
 * client.id "fptest"). @returns owned by the caller (pass it to rd_kafka_new or destroy
 * it); NULL (recorded) if the services are not available.
 */
rd_kafka_conf_t *fpt_kafka_conf(void);

/**
 * @brief Creates a topic and waits until every partition has a leader.
 * @param config NULL, or a NULL-terminated list of name, value pairs
 *        ({"max.message.bytes", "4194304", NULL}).
 * @returns 0, or -1 (recorded).
 */
int fpt_topic_create(const char *topic, int partitions, const char *const *config);

/** @brief Deletes a topic (a missing topic is not an error). @returns 0, or -1 (recorded). */
int fpt_topic_delete(const char *topic);

/** @returns the topic's partition count from metadata, or -1 (not recorded). */
int fpt_topic_partitions(const char *topic);

/** A header to produce: name and value are borrowed for the call; value may be NULL. */
typedef struct fpt_header_s {
  const char *name;
  const void *value;
  size_t len;
} fpt_header_t;

/** A message to produce. Everything is borrowed for the duration of fpt_produce(). */
typedef struct fpt_msg_s {
  int32_t partition;   /**< RD_KAFKA_PARTITION_UA (-1) for the partitioner */
  const void *key;     /**< NULL for no key */
  size_t key_len;      /**< 0 with a non-NULL key means strlen(key) */
  const void *value;   /**< NULL for a null value (tombstone) */
  size_t len;
  const fpt_header_t *headers;
  size_t nheaders;
} fpt_msg_t;

/**
 * @brief Produces n messages with the shared producer (acks=all, idempotent) and waits
 * (up to 120 s) for every delivery report.
 * @returns the number of messages not delivered (0 = all acknowledged); failures are
 * recorded.
 */
int fpt_produce(const char *topic, const fpt_msg_t *msgs, size_t n);

/** @brief Produces one message (key may be NULL); same as fpt_produce with n = 1. */
int fpt_produce1(const char *topic, int32_t partition, const char *key, const void *value,
                 size_t len);

/** A consumed header: name and value are owned by the record; value NULL if null. */
typedef struct fpt_rec_header_s {
  char *name;
  char *value; /**< NUL-terminated copy (the NUL is not counted in len) */
  size_t len;
} fpt_rec_header_t;

/** A consumed record. key and value are NUL-terminated copies (NUL not counted). */
typedef struct fpt_record_s {
  int32_t partition;
  int64_t offset;
  int64_t timestamp; /**< ms, -1 if none */
  char *key;         /**< NULL if the message had no key */
  size_t key_len;
  char *value;       /**< NULL for a null value */
  size_t len;
  fpt_rec_header_t *headers;
  size_t nheaders;
} fpt_record_t;

/** The result of fpt_consume_all(). Free with fpt_records_free(). */
typedef struct fpt_records_s {
  fpt_record_t *recs; /**< in arrival order: per partition by offset */
  size_t n;
  int complete;       /**< 1 if every partition was read up to its end watermark */
} fpt_records_t;

typedef enum {
  FPT_READ_UNCOMMITTED = 0,
  FPT_READ_COMMITTED = 1
} fpt_isolation_t;

/**
 * @brief Reads every message of a topic with a fresh consumer: all partitions assigned
 * from the beginning (no group join, no commit), up to the end watermarks taken at the
 * start (the last stable offset when read_committed), or until timeout_ms passes.
 * @returns owned by the caller (fpt_records_free()); never NULL except on allocation or
 * set-up failure (recorded). Check ->complete.
 */
fpt_records_t *fpt_consume_all(const char *topic, fpt_isolation_t iso, int timeout_ms);

/** @brief Frees a result of fpt_consume_all(); accepts NULL. */
void fpt_records_free(fpt_records_t *recs);

/**
 * @brief Finds a header by name (the last one if repeated).
 * @returns the value (borrowed from rec) and its length in *lenp; NULL if absent.
 */
const char *fpt_record_header(const fpt_record_t *rec, const char *name, size_t *lenp);

/**
 * @brief High watermarks (end offsets) of partitions 0..nparts-1 into out[].
 * @returns 0, or -1 (recorded).
 */
int fpt_high_watermarks(const char *topic, int nparts, int64_t *out);

/**
 * @brief The offsets committed by a consumer group for partitions 0..nparts-1, read with
 * rd_kafka_committed() from a consumer that does not join the group.
 * out[i] is RD_KAFKA_OFFSET_INVALID (-1001) where nothing is committed.
 * @returns 0, or -1 (recorded).
 */
int fpt_committed_offsets(const char *group, const char *topic, int nparts, int64_t *out);

/* ------------------------------------------------------------------------------------ */
/* Redis (hiredis)                                                                       */
/* ------------------------------------------------------------------------------------ */

/**
 * @brief Connects to the test redis-server (5 s timeout).
 * @returns owned by the caller (redisFree()); NULL (recorded) on failure.
 */
redisContext *fpt_redis_connect(void);

/**
 * @brief redisCommand() with a printf-style format (hiredis %s / %b conventions).
 * @returns the reply, owned by the caller (freeReplyObject()); NULL (recorded) if the
 * connection failed. An error reply (REDIS_REPLY_ERROR) is returned, not recorded.
 */
redisReply *fpt_redis_cmd(redisContext *c, const char *fmt, ...);

/* ------------------------------------------------------------------------------------ */
/* Processes                                                                             */
/* ------------------------------------------------------------------------------------ */

/** A spawned child process (opaque). */
typedef struct fpt_proc_s fpt_proc_t;

/**
 * @brief Starts argv[0] (searched in PATH if it has no '/') with argv, the current
 * environment plus env ("KEY=VALUE" strings, overriding same-named variables; NULL-terminated,
 * may be NULL), stdin from /dev/null, stdout and stderr appended to one log file, in its own
 * process group.
 * @param log_path the log file, or NULL for a fresh file under $TMPDIR.
 * @returns owned by the caller (fpt_proc_free()); NULL (recorded) on failure.
 */
fpt_proc_t *fpt_proc_spawn(const char *const *argv, const char *const *env,
                           const char *log_path);

/** @returns the child's pid. */
pid_t fpt_proc_pid(const fpt_proc_t *p);

/** @returns the log file path, borrowed from p. */
const char *fpt_proc_log(const fpt_proc_t *p);

/** @brief Sends sig to the child if it is still running. @returns 0, or -1 if it has exited. */
int fpt_proc_signal(fpt_proc_t *p, int sig);

/**
 * @brief Waits up to timeout_ms for the child to exit (reaps it).
 * @returns its exit code (0..255), 128 + signal number if a signal killed it, or -1 on
 * timeout (the child keeps running). Once reaped, returns the same value again.
 */
int fpt_proc_wait(fpt_proc_t *p, int timeout_ms);

/** @returns 1 if the child has not exited yet (reaps it if it just did). */
int fpt_proc_running(fpt_proc_t *p);

/** @brief SIGKILL and reap. @returns the same as fpt_proc_wait(). */
int fpt_proc_kill(fpt_proc_t *p);

/**
 * @brief Reads the child's log so far. @returns malloc'd, NUL-terminated (caller frees);
 * NULL if unreadable.
 */
char *fpt_proc_output(const fpt_proc_t *p, size_t *lenp);

/** @brief Copies the last max_lines lines of the child's log to stderr (for failures). */
void fpt_proc_dump_log(const fpt_proc_t *p, int max_lines);

/**
 * @brief Kills the child if it is still running (SIGKILL), reaps it and frees p.
 * A log file the library created is deleted if the current case has no failed check so far,
 * else kept for the post-mortem (its path is noted), and always kept when FPT_KEEP_LOGS is
 * set; a caller-chosen log_path is always kept.
 * Accepts NULL.
 */
void fpt_proc_free(fpt_proc_t *p);

#endif /* FP_TESTLIB_H */
