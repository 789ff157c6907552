/*
 * engine_int.h - the engine's internal structs, shared by engine.c (Kafka clients,
 * rebalances, back-pressure), worker.c (batches) and output.c (acknowledged produce).
 * Nothing outside those files includes it.
 */
#ifndef FP_ENGINE_INT_H
#define FP_ENGINE_INT_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conf.h"
#include "flashpoint/flashpoint.h"
#include "metrics.h"
#include "rules.h"
#include "store.h"

/** One input partition. Created on first assignment and kept until the engine is
 * destroyed, so workers may hold the pointer across rebalances. */
typedef struct fp_part_s {
  char topic[200];
  int32_t partition;
  char source[224];              /* "topic:partition": the store's fence unit */
  int worker;                    /* index of the owning worker (fixed) */
  _Atomic int revoked;           /* 0 assigned, 1 revoked (finish and store), 2 lost (drop) */
  _Atomic int64_t inflight;      /* messages queued or being processed */
  _Atomic int64_t max_event_ms;  /* highest event time seen: the watermark is this - lateness */
  _Atomic int64_t committed;     /* last committed offset reported by Kafka, -1 if none */
  _Atomic int needs_register;    /* assigned: the owning worker registers it in the store */
  _Atomic int64_t txn_next;      /* exactly-once: next offset to send with the transaction, -1 none */
  _Atomic int64_t rebuild_until; /* rebuilding after Redis lost data: outputs of offsets below
                                    this were emitted before and are not produced again */
  _Atomic int64_t seek_to;       /* a worker asks the run thread to seek here (rebuild), -1 none */
  _Atomic unsigned gen;          /* bumped by the run thread at each seek: queued messages of an
                                    older generation are stale and dropped */
  int64_t expect;                /* run thread only: highest offset handed to the worker + 1 in
                                    this assignment, -1 unknown (see drop_redelivered) */
  int paused;                    /* run thread only: we paused it in librdkafka */
  int rewind_logged;             /* run thread only */
  struct fp_part_s *next;
} fp_part_t;

/** Counts the outputs of one batch until Kafka acknowledged all of them. */
typedef struct fp_ack_s {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int64_t pending;
  int64_t failed;
  rd_kafka_resp_err_t first_err;
} fp_ack_t;
void fp_ack_init(fp_ack_t *a);
void fp_ack_destroy(fp_ack_t *a);
void fp_ack_done(fp_ack_t *a, rd_kafka_resp_err_t err);

typedef struct fp_qnode_s {
  rd_kafka_message_t *msg; /* owned */
  fp_part_t *part;         /* borrowed from the engine */
  unsigned gen;            /* part->gen when it was queued */
  int64_t queued_ns;       /* fp_mono_ns() when it was queued (run.linger.ms) */
  struct fp_qnode_s *next;
} fp_qnode_t;

typedef struct fp_worker_s {
  struct fp_engine_s *e;
  int idx;
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  fp_qnode_t *head, *tail;
  size_t qlen;
  int stopping;
  _Atomic int register_pending;  /* some partition of ours waits for fp_store_lc_register */
  _Atomic int reload;    /* set by fp_engine_reload: swap rule sets at the next batch */
  _Atomic int blocked;   /* the state store or Kafka is failing: pause our partitions */
  struct fp_pipeline_s *pipeline; /* owned, worker thread only: rules + state store */
  struct fp_batch_s *batch; /* owned scratch space */
} fp_worker_t;

typedef struct fp_engine_stats_s {
  _Atomic uint64_t mentions_in, mentions_decoded, dead_lettered, late, duplicates_fenced,
      rule_evals, rule_errors, incidents, offsets_stored, redis_roundtrips, redis_errors,
      txn_commits, txn_aborts, redelivered, outputs_failed;
} fp_engine_stats_t;

struct fp_engine_s {
  fp_conf_t *conf;
  fp_rules_limits_t limits;
  rd_kafka_t *consumer, *producer;
  rd_kafka_topic_t **out_topics; /* held handles of every output topic (warm metadata) */
  size_t n_out_topics;
  pthread_t producer_thread;
  int producer_started, closed;
  int ever_assigned;             /* run thread: an assignment (even empty) arrived once */
  _Atomic unsigned rebalances;   /* rebalance callbacks so far (leave_group waits for quiet) */
  _Atomic int producer_stop, stop, fatal;
  size_t nworkers;
  fp_worker_t *workers;
  pthread_mutex_t parts_mu;
  fp_part_t *parts;
  fp_engine_stats_t stats;
  fp_metrics_t *metrics; /* owned */
  struct fp_watch_s *watch;      /* owned: reloads the rules when their files change */
  int watchdog_started;
  _Atomic unsigned reload_gen, reload_logged_gen; /* a failed reload is logged once */
  /* exactly-once mode (txn.c) */
  _Atomic int seek_pending;      /* some partition's seek_to is set */
  int eos;                       /* delivery.mode=exactly-once */
  int txn_open, closing;         /* run thread only */
  _Atomic int txn_abort;         /* a worker saw an abortable produce error */
  pthread_mutex_t barrier_mu;
  pthread_cond_t barrier_cv;
  int barrier, busy_workers;     /* under barrier_mu */
  /* ---- operations (owner: http.c, health.c): heartbeat, HTTP endpoint, Kafka health ---- */
  _Atomic int64_t heartbeat_ns;   /* run thread: fp_mono_ns() at each loop turn; 0 = not looping yet */
  _Atomic int kafka_down[2];      /* [0] consumer, [1] producer: 1 from ALL_BROKERS_DOWN until the
                                     statistics show a broker UP again */
  _Atomic int kafka_brokers_up[2];/* brokers in state UP at the last statistics; -1 before any */
  int kafka_stats_ms[2];          /* statistics.interval.ms per client (0: no statistics) */
  struct fp_http_s *http;         /* owned; NULL when http.port = -1 */
  /* ---- end operations ---- */
};

fp_part_t *fp_engine_part(struct fp_engine_s *e, const char *topic, int32_t partition, int create);

/* exactly-once mode (txn.c) */
fp_err_t fp_txn_init(struct fp_engine_s *e, char *errstr, size_t es);
/** Commits the open transaction with the offsets of every partition that moved (or aborts
 * it when @p lost), then begins the next one unless the engine is closing. Run thread. */
fp_err_t fp_txn_commit(struct fp_engine_s *e, int lost);
/** A worker holds a run between these two (waits while the commit barrier is up). */
void fp_txn_run_begin(struct fp_engine_s *e);
void fp_txn_run_end(struct fp_engine_s *e);

fp_err_t fp_worker_init(fp_worker_t *w, struct fp_engine_s *e, int idx, char *errstr, size_t es);
fp_err_t fp_worker_start(fp_worker_t *w);
void fp_worker_push(fp_worker_t *w, fp_part_t *p, rd_kafka_message_t *m);
/** Wakes the worker to register newly assigned partitions in the store. */
void fp_worker_wake_register(fp_worker_t *w);
/** Drops the queued messages of partition @p p (run thread, before a seek). */
void fp_worker_purge_part(fp_worker_t *w, fp_part_t *p);
/** Drops every queued message (exactly-once rewind; only with the barrier raised). */
void fp_worker_purge(fp_worker_t *w);
size_t fp_worker_qlen(fp_worker_t *w);
/** Finishes the queued work and joins the thread. */
void fp_worker_stop(fp_worker_t *w);
void fp_worker_destroy(fp_worker_t *w);

#endif
