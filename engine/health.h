/*
 * health.h - what /healthz and /readyz answer, and the signals they are made of: the Kafka
 * clients' statistics and error callbacks (broker state, consumer lag) and a Redis probe with
 * its own connection. Used by engine.c (callbacks) and http.c (verdicts).
 */
#ifndef FP_HEALTH_H
#define FP_HEALTH_H

#include <librdkafka/rdkafka.h>

#include "util.h"

struct fp_engine_s;

/** The run loop counts as stalled (unhealthy) when it has not turned for this long. Longer
 * than the longest wait inside a loop turn (a revoke drains for at most 30 s). */
#define FP_HEALTH_STALL_MS 60000

/** librdkafka statistics callback (both clients; opaque is the engine): records which
 * brokers are UP and, for the consumer, the lag of every assigned partition
 * (topics.<t>.partitions.<p>.consumer_lag, partition -1 and unknown lags skipped).
 * Runs on the thread that polls the client. @returns 0: librdkafka frees @p json. */
int fp_health_stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque);

/** librdkafka error callback (both clients; opaque is the engine): ALL_BROKERS_DOWN marks the
 * client's brokers down until the statistics show one UP again; a fatal error (idempotent
 * producer) stops the engine; anything else is logged once per occurrence as a warning. */
void fp_health_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);

/** Pings the state store from a thread and a connection of its own (never a worker's:
 * hiredis contexts are single-threaded), once a second. */
typedef struct fp_probe_s fp_probe_t;

/** Starts the probe for @p e (borrowed; must outlive the probe). With store.backend=memory
 * the probe has nothing to ping and always reports reachable.
 * @returns the probe (owned by the caller, fp_probe_stop()), or NULL on allocation or
 * thread failure with the reason in @p errstr. */
fp_probe_t *fp_probe_start(struct fp_engine_s *e, char *errstr, size_t errstr_size);
/** Stops and frees the probe; accepts NULL. */
void fp_probe_stop(fp_probe_t *p);
/** @returns 1 if the last PING was answered, 0 if it failed, -1 before the first one.
 * @p detail (may be NULL) receives a sentence for people. Thread-safe. */
int fp_probe_state(fp_probe_t *p, char *detail, size_t detail_size);

/** Liveness: the process answers and the run loop turns. Appends a JSON body to @p out.
 * @returns the HTTP status: 200 alive, 503 stalled. */
int fp_health_live(struct fp_engine_s *e, fp_buf_t *out);

/** Readiness: the run loop runs (not starting, not stopping), rules are loaded and not all
 * quarantined, the state store answers and no worker is blocked on it or on its outputs,
 * and each Kafka client has a broker up. Appends a JSON body naming every check to @p out
 * (NULL: no body). @p probe may be NULL (store check then relies on the workers alone).
 * @returns the HTTP status: 200 ready, 503 not ready. */
int fp_health_ready(struct fp_engine_s *e, fp_probe_t *probe, fp_buf_t *out);

#endif
