/*
 * engine.c - owns the consume -> evaluate -> emit loop: the Kafka clients, the worker
 * threads, the partition table, back-pressure and offset storage.
 *
 * Threads:
 *   - the run thread (fp_engine_run) polls the consumer, runs rebalance callbacks, hands each
 *     message to the worker that owns its partition (partition index modulo workers), and
 *     pauses a worker's partitions when its queue passes queue.max (resumes below half);
 *   - N workers, each with its own rule set (Lua state) and state-store connection, take
 *     batches from their queue and process them one partition run at a time (batch.c);
 *   - one producer thread serves delivery reports.
 *
 * Invariant: an input offset is stored (and so committed) only after everything it caused -
 * window updates, lifecycle changes, incidents and dead-letter records - is acknowledged.
 * A partition is owned by one worker, which finishes a batch before taking the next, so the
 * stored offset of a partition is always the end of a fully acknowledged, contiguous prefix.
 * On revoke the run thread marks the partitions, waits until no message of theirs is queued
 * or in flight, then unassigns (librdkafka commits the stored offsets). On a lost
 * assignment the in-flight work is dropped unstored: the new owner replays it, and the
 * store's fence and memo make the replay exact.
 */
#include "engine_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"
#include "watch.h"
#include "health.h" /* operations: Kafka statistics and error callbacks */
#include "http.h"   /* operations: /metrics, /healthz, /readyz */
#include "log.h"
#include "util.h"

/* ------------------------------------------------------------------------------------------ */
/* partitions                                                                                   */

fp_part_t *fp_engine_part(fp_engine_t *e, const char *topic, int32_t partition, int create) {
  fp_part_t *p;
  pthread_mutex_lock(&e->parts_mu);
  for (p = e->parts; p; p = p->next)
    if (p->partition == partition && strcmp(p->topic, topic) == 0) break;
  if (!p && create && (p = calloc(1, sizeof(*p)))) {
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->partition = partition;
    snprintf(p->source, sizeof(p->source), "%s:%d", topic, (int)partition);
    /* spread topics too: same partition number of two topics need not share a worker */
    p->worker = (int)((fp_fnv1a(FP_FNV_INIT, topic, strlen(topic)) + (uint64_t)partition) % e->nworkers);
    p->committed = -1;
    p->txn_next = -1; /* nothing to send with a transaction until a run completes */
    p->seek_to = -1;
    p->expect = -1;
    p->next = e->parts;
    e->parts = p;
  }
  pthread_mutex_unlock(&e->parts_mu);
  return p;
}

/* ------------------------------------------------------------------------------------------ */
/* rebalance                                                                                    */

/* Waits until no message of the partitions in @p list is queued or being processed. */
static void drain_partitions(fp_engine_t *e, rd_kafka_topic_partition_list_t *list) {
  int64_t deadline = fp_mono_ns() + (int64_t)30 * 1000000000LL;
  for (;;) {
    int64_t busy = 0;
    for (int i = 0; i < list->cnt; i++) {
      fp_part_t *p = fp_engine_part(e, list->elems[i].topic, list->elems[i].partition, 0);
      if (p) busy += atomic_load(&p->inflight);
    }
    if (!busy) return;
    if (fp_mono_ns() > deadline) {
      fp_log(FP_LOG_WARN, "engine", "revoke: %lld messages still in flight after 30 s; "
             "they will be replayed by the next owner", (long long)busy);
      return;
    }
    usleep(2000);
    rd_kafka_poll(e->producer, 0);
  }
}

/* Resumes those of @p list that we paused (librdkafka 2.0 may rewind a partition that is
 * resumed without being paused, librdkafka#4686: only what we paused is ever resumed). */
static void resume_paused(fp_engine_t *e, rd_kafka_topic_partition_list_t *list) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(list->cnt > 0 ? list->cnt : 1);
  for (int i = 0; i < list->cnt; i++) {
    fp_part_t *p = fp_engine_part(e, list->elems[i].topic, list->elems[i].partition, 0);
    if (p && p->paused) {
      rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
      p->paused = 0;
    }
  }
  if (l->cnt) rd_kafka_resume_partitions(e->consumer, l);
  rd_kafka_topic_partition_list_destroy(l);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  fp_engine_t *e = opaque;
  rd_kafka_error_t *error = NULL;
  int lost = rd_kafka_assignment_lost(rk);

  atomic_fetch_add(&e->rebalances, 1);

  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    for (int i = 0; i < parts->cnt; i++) {
      fp_part_t *p = fp_engine_part(e, parts->elems[i].topic, parts->elems[i].partition, 1);
      if (!p) continue;
      atomic_store(&p->revoked, 0);
      p->paused = 0;
      atomic_store(&p->max_event_ms, INT64_MIN);
      atomic_store(&p->needs_register, 1);
      atomic_store(&p->txn_next, -1);
      atomic_store(&p->rebuild_until, 0);
      atomic_store(&p->seek_to, -1);
      p->expect = -1; /* the consumer starts at the committed offset */
      p->rewind_logged = 0;
    }
    e->ever_assigned = 1;
    fp_log(FP_LOG_INFO, "engine", "assigned %d partition(s)", parts->cnt);
    error = rd_kafka_incremental_assign(rk, parts);
    /* the workers register the partitions and check the store (a seek needs the assignment) */
    for (size_t w = 0; w < e->nworkers; w++) fp_worker_wake_register(&e->workers[w]);
  } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    for (int i = 0; i < parts->cnt; i++) {
      fp_part_t *p = fp_engine_part(e, parts->elems[i].topic, parts->elems[i].partition, 0);
      if (p) atomic_store(&p->revoked, lost ? 2 : 1);
    }
    /* Workers finish the batch they hold (storing its offsets unless lost) and drop the
     * rest of these partitions' queued messages. */
    drain_partitions(e, parts);
    resume_paused(e, parts); /* a partition leaves unpaused: the next assignment starts clean */
    if (e->eos) fp_txn_commit(e, lost); /* their outputs and offsets commit together, or not at all */
    fp_log(FP_LOG_INFO, "engine", "%s %d partition(s)", lost ? "lost" : "revoked", parts->cnt);
    error = rd_kafka_incremental_unassign(rk, parts);
  } else {
    fp_log(FP_LOG_ERROR, "engine", "rebalance error: %s", rd_kafka_err2str(err));
    error = rd_kafka_incremental_unassign(rk, parts);
  }
  if (error) {
    fp_log(FP_LOG_ERROR, "engine", "incremental (un)assign failed: %s", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
  }
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque) {
  fp_engine_t *e = opaque;
  (void)rk;
  if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    fp_log_once(FP_LOG_WARN, "engine", "offset commit failed: %s (retried at the next interval)",
                rd_kafka_err2str(err));
    return;
  }
  for (int i = 0; offsets && i < offsets->cnt; i++) {
    fp_part_t *p;
    if (offsets->elems[i].err || offsets->elems[i].offset < 0) continue;
    p = fp_engine_part(e, offsets->elems[i].topic, offsets->elems[i].partition, 0);
    if (p) atomic_store(&p->committed, offsets->elems[i].offset);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Kafka clients                                                                                */

typedef struct {
  rd_kafka_conf_t *rk;
} kconf_t;

static fp_err_t kconf_set(void *opaque, const char *key, const char *value, char *errstr,
                          size_t es) {
  kconf_t *k = opaque;
  char kerr[256];
  if (rd_kafka_conf_set(k->rk, key, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "kafka setting %s: %s", key, kerr);
  return FP_OK;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  fp_ack_t *ack = m->_private;
  (void)rk, (void)opaque;
  if (ack) fp_ack_done(ack, m->err);
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  (void)rk;
  fp_log(level <= 3 ? FP_LOG_ERROR : level <= 4 ? FP_LOG_WARN : level <= 6 ? FP_LOG_INFO : FP_LOG_DEBUG,
         "kafka", "%s: %s", fac, buf);
}

static rd_kafka_conf_t *kafka_conf(fp_engine_t *e, const char *which, char *errstr, size_t es) {
  kconf_t k = {rd_kafka_conf_new()};
  static const char *const consumer_defaults[][2] = {
      {"enable.auto.commit", "true"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"},
      {"partition.assignment.strategy", "cooperative-sticky"},
      {"enable.partition.eof", "false"},
      {"isolation.level", "read_committed"},
      {"statistics.interval.ms", "5000"}, /* operations: consumer lag and broker state */
      /* the broker answers a fetch once 64 KB (about 200 mentions) are there or 25 ms have
       * passed, instead of at the first byte: at a steady moderate rate librdkafka otherwise
       * fetches back to back, a few mentions each, and the broker spent a third more CPU per
       * mention (docs/operations.md, Kafka settings) */
      {"fetch.min.bytes", "65536"},
      {"fetch.wait.max.ms", "25"},
  };
  static const char *const producer_defaults[][2] = {
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"linger.ms", "5"},
      {"compression.type", "lz4"},
      {"message.timeout.ms", "300000"},
      {"statistics.interval.ms", "5000"}, /* operations: broker state */
  };
  char buf[64];
  int is_consumer = strcmp(which, "consumer") == 0;

  rd_kafka_conf_set_log_cb(k.rk, kafka_log_cb);
  for (size_t i = 0; is_consumer && i < sizeof(consumer_defaults) / sizeof(consumer_defaults[0]); i++)
    if (kconf_set(&k, consumer_defaults[i][0], consumer_defaults[i][1], errstr, es)) goto err;
  for (size_t i = 0; !is_consumer && i < sizeof(producer_defaults) / sizeof(producer_defaults[0]); i++)
    if (kconf_set(&k, producer_defaults[i][0], producer_defaults[i][1], errstr, es)) goto err;
  if (e->eos) { /* exactly-once: offsets travel in the transaction (txn.c) */
    if (is_consumer && kconf_set(&k, "enable.auto.commit", "false", errstr, es)) goto err;
    if (!is_consumer) {
      char tid[512], host[256] = "host";
      gethostname(host, sizeof(host) - 1);
      if (e->conf->instance_id[0]) snprintf(tid, sizeof(tid), "flashpoint-%s-%s", e->conf->group_id, e->conf->instance_id);
      else snprintf(tid, sizeof(tid), "flashpoint-%s-%s-%d", e->conf->group_id, host, (int)getpid());
      /* a killed instance's open transaction blocks the partitions' committed offsets until
       * the broker aborts it: keep that short */
      if (kconf_set(&k, "transactional.id", tid, errstr, es) ||
          kconf_set(&k, "transaction.timeout.ms", "10000", errstr, es) ||
          kconf_set(&k, "message.timeout.ms", "9000", errstr, es))
        goto err;
    }
  }
  if (is_consumer) {
    snprintf(buf, sizeof(buf), "%lld", (long long)e->conf->commit_interval_ms);
    if (kconf_set(&k, "group.id", e->conf->group_id, errstr, es) ||
        kconf_set(&k, "auto.commit.interval.ms", buf, errstr, es))
      goto err;
    rd_kafka_conf_set_rebalance_cb(k.rk, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(k.rk, commit_cb);
  } else {
    rd_kafka_conf_set_dr_msg_cb(k.rk, dr_msg_cb);
  }
  if (fp_conf_each_kafka(e->conf, which, kconf_set, &k, errstr, es) != FP_OK) goto err;
  /* ---- operations: statistics (lag, broker state) and errors (all brokers down) ---- */
  {
    size_t sz = sizeof(buf);
    int64_t ms = 0;
    int c = is_consumer ? 0 : 1;
    if (rd_kafka_conf_get(k.rk, "statistics.interval.ms", buf, &sz) == RD_KAFKA_CONF_OK)
      fp_parse_i64(buf, 0, INT32_MAX, &ms);
    e->kafka_stats_ms[c] = (int)ms;
    atomic_store(&e->kafka_brokers_up[c], -1);
    rd_kafka_conf_set_stats_cb(k.rk, fp_health_stats_cb);
    rd_kafka_conf_set_error_cb(k.rk, fp_health_error_cb);
    if (!ms && e->conf->http_port >= 0)
      fp_log(FP_LOG_WARN, "kafka", "%s: statistics.interval.ms=0: /metrics has no %s and /readyz "
             "cannot see brokers go down", which, is_consumer ? "consumer lag" : "broker state");
  }
  /* ---- end operations ---- */
  rd_kafka_conf_set_opaque(k.rk, e);
  return k.rk;
err:
  rd_kafka_conf_destroy(k.rk);
  return NULL;
}

static void watch_reload(void *arg) { fp_engine_reload(arg); }

static void *producer_main(void *arg) {
  fp_engine_t *e = arg;
  while (!atomic_load(&e->producer_stop)) rd_kafka_poll(e->producer, 50);
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                    */

/* Adds a held producer handle for @p name unless one exists. */
static fp_err_t warm_topic(fp_engine_t *e, const char *name) {
  rd_kafka_topic_t **t;
  if (!name || !*name) return FP_OK;
  for (size_t i = 0; i < e->n_out_topics; i++)
    if (!strcmp(rd_kafka_topic_name(e->out_topics[i]), name)) return FP_OK;
  if (!(t = realloc(e->out_topics, (e->n_out_topics + 1) * sizeof(*t)))) return FP_ERR_NOMEM;
  e->out_topics = t;
  if ((t[e->n_out_topics] = rd_kafka_topic_new(e->producer, name, NULL))) e->n_out_topics++;
  return FP_OK;
}

/*
 * The first message to a topic the producer has not seen waits for that topic's metadata
 * (measured here: ~750 ms), and its worker waits for the acknowledgement: the first incident
 * of a crisis, exactly the one that matters, would be late, and every partition of the
 * worker behind it. A held topic handle makes librdkafka fetch the metadata at once (in the
 * background) and keep it refreshed, so the handles for the default output, the dead-letter
 * topic and every topic the rules route to are created at start-up and kept until destroy.
 * Topics that rules name only after a reload are warmed by their first message.
 */
static fp_err_t warm_output_topics(fp_engine_t *e, const fp_rules_t *rules) {
  fp_err_t err = warm_topic(e, e->conf->output_topic);
  if (!err) err = warm_topic(e, e->conf->dlq_topic);
  for (size_t i = 0; !err && i < fp_rules_count(rules); i++)
    for (int s = 0; !err && s < 5; s++) err = warm_topic(e, fp_rules_info(rules, i)->topics[s]);
  return err;
}

fp_engine_t *fp_engine_new(const fp_conf_t *conf, char *errstr, size_t es) {
  fp_engine_t *e = calloc(1, sizeof(*e));
  rd_kafka_conf_t *kc = NULL;
  char kerr[512];
  fp_rules_t *probe = NULL;

  if (!e) return NULL;
  pthread_mutex_init(&e->parts_mu, NULL);
  pthread_mutex_init(&e->barrier_mu, NULL);
  pthread_cond_init(&e->barrier_cv, NULL);
  if (!(e->metrics = fp_metrics_new()) || !(e->conf = fp_conf_dup(conf))) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto err;
  }
  fp_log_setup((fp_log_level_t)e->conf->log_level, (int)e->conf->log_json);
  e->eos = e->conf->delivery == FP_DELIVERY_EOS;
  /* Two workers per core by default: a worker waits on the store for about as long as it
   * computes (a run's window script takes about as long as its decoding and rules), so one
   * per core left a core idle most of the time while both workers waited on Redis together.
   * Side by side (bench/run.py --quick --vary workers=2,4,3 --repeat 3, 400k, 2 cores):
   * 49-52k/s with 2, 58-61k/s with 4, at 164-174 against 259-277 MB peak RSS. */
  e->nworkers = fp_conf_workers(e->conf, sysconf(_SC_NPROCESSORS_ONLN));

  /* Rules are checked once here so a broken rule set refuses to start (fatal). */
  e->limits.mem_bytes = (size_t)e->conf->rules_memory;
  e->limits.instructions = (uint64_t)e->conf->rules_instructions;
  e->limits.deadline_ms = e->conf->rules_deadline_ms;
  e->limits.quarantine_after = (unsigned)e->conf->rules_quarantine_after;
  e->limits.strikes_dir = e->conf->rules_strikes_dir; /* borrowed: e->conf lives as long as e */
  e->limits.strikes_quarantine = (unsigned)e->conf->rules_strikes_quarantine;
  {
    fp_watchdog_conf_t wc;
    memset(&wc, 0, sizeof(wc));
    wc.hard_ms = e->conf->rules_watchdog_ms;
    wc.strikes_dir = e->conf->rules_strikes_dir;
    if (fp_sandbox_watchdog_start(&wc, errstr, es) != FP_OK) goto err;
    e->watchdog_started = 1;
  }
  if (!(probe = fp_rules_new(e->conf->rules_dir, &e->limits, errstr, es))) goto err;
  fp_log(FP_LOG_INFO, "rules", "loaded %zu rule(s) from %s", fp_rules_count(probe), e->conf->rules_dir);

  if (!(kc = kafka_conf(e, "producer", errstr, es))) goto err;
  if (!(e->producer = rd_kafka_new(RD_KAFKA_PRODUCER, kc, kerr, sizeof(kerr)))) {
    fp_seterr(errstr, es, FP_ERR_KAFKA, "producer: %s", kerr);
    rd_kafka_conf_destroy(kc);
    goto err;
  }
  if (warm_output_topics(e, probe) != FP_OK) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto err;
  }
  fp_rules_destroy(probe);
  probe = NULL;
  if (!(kc = kafka_conf(e, "consumer", errstr, es))) goto err;
  if (!(e->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, kc, kerr, sizeof(kerr)))) {
    fp_seterr(errstr, es, FP_ERR_KAFKA, "consumer: %s", kerr);
    rd_kafka_conf_destroy(kc);
    goto err;
  }
  rd_kafka_poll_set_consumer(e->consumer);
  if (e->eos && fp_txn_init(e, errstr, es) != FP_OK) goto err;

  if (!(e->workers = calloc(e->nworkers, sizeof(*e->workers)))) goto err;
  for (size_t i = 0; i < e->nworkers; i++)
    if (fp_worker_init(&e->workers[i], e, (int)i, errstr, es) != FP_OK) goto err;
  return e;
err:
  fp_rules_destroy(probe);
  fp_engine_destroy(e);
  return NULL;
}

void fp_engine_stop(fp_engine_t *e) {
  if (e) atomic_store(&e->stop, 1);
}

void fp_engine_reload(fp_engine_t *e) {
  if (!e) return;
  atomic_fetch_add(&e->reload_gen, 1);
  for (size_t i = 0; i < e->nworkers; i++) atomic_store(&e->workers[i].reload, 1);
}

void fp_engine_stats(fp_engine_t *e, fp_stats_t *out) {
  memset(out, 0, sizeof(*out));
  if (!e) return;
#define LOAD(f) out->f = atomic_load(&e->stats.f)
  LOAD(mentions_in); LOAD(mentions_decoded); LOAD(dead_lettered); LOAD(late);
  LOAD(duplicates_fenced); LOAD(rule_evals); LOAD(rule_errors); LOAD(incidents);
  LOAD(offsets_stored); LOAD(redis_roundtrips); LOAD(redis_errors);
  LOAD(txn_commits); LOAD(txn_aborts); LOAD(redelivered); LOAD(outputs_failed);
#undef LOAD
}

/* Pauses the partitions of workers whose queue passed queue.max (or whose store or outputs
 * fail) and resumes them below half of it. State is kept per partition: a partition assigned
 * while its worker is paused gets paused too, and only partitions we paused are resumed. */
static void backpressure(fp_engine_t *e) {
  for (size_t w = 0; w < e->nworkers; w++) {
    fp_worker_t *wk = &e->workers[w];
    size_t q = fp_worker_qlen(wk);
    int want = q >= (size_t)e->conf->queue_max || atomic_load(&wk->blocked);
    if (!want && q > (size_t)e->conf->queue_max / 2) want = -1; /* hysteresis: leave as is */
    rd_kafka_topic_partition_list_t *l = NULL;
    pthread_mutex_lock(&e->parts_mu);
    for (fp_part_t *p = e->parts; p; p = p->next) {
      if (p->worker != (int)w || atomic_load(&p->revoked) || want < 0 || p->paused == want) continue;
      if (!l) l = rd_kafka_topic_partition_list_new(8);
      rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
      p->paused = want;
    }
    pthread_mutex_unlock(&e->parts_mu);
    if (!l) continue;
    if (want) rd_kafka_pause_partitions(e->consumer, l);
    else rd_kafka_resume_partitions(e->consumer, l);
    fp_log(FP_LOG_DEBUG, "engine", "worker %zu: %s %d partition(s) (queue %zu)", w,
           want ? "paused" : "resumed", l->cnt, q);
    rd_kafka_topic_partition_list_destroy(l);
  }
}

/*
 * A consumer may hand out an offset again that it already delivered in this assignment:
 * librdkafka 2.0 restarts a fetch from a stale position after some resume and cooperative
 * rebalance sequences (librdkafka#4637, #4686). The worker already has those messages, so a
 * second copy would be evaluated twice in one run. Offsets only move forward within an
 * assignment except after our own seeks, which reset p->expect. @returns 1 if m is such a
 * redelivery (counted, logged once per assignment; the caller drops it).
 */
static int drop_redelivered(fp_engine_t *e, fp_part_t *p, const rd_kafka_message_t *m) {
  if (p->expect < 0 || m->offset >= p->expect) {
    p->expect = m->offset + 1;
    return 0;
  }
  atomic_fetch_add(&e->stats.redelivered, 1);
  if (!p->rewind_logged) {
    p->rewind_logged = 1;
    fp_log(FP_LOG_WARN, "kafka", "%s: the consumer delivered offset %lld again (next expected %lld); "
           "dropping redelivered messages", p->source, (long long)m->offset, (long long)p->expect);
  }
  return 1;
}

/* Serves the workers' seek requests (store rebuilds): drops the partition's queued messages,
 * makes whatever a worker still holds stale (gen), then seeks. Run thread. */
static void serve_seeks(fp_engine_t *e) {
  fp_part_t *want[64];
  size_t n = 0;
  if (!atomic_exchange(&e->seek_pending, 0)) return;
  pthread_mutex_lock(&e->parts_mu);
  for (fp_part_t *p = e->parts; p && n < 64; p = p->next)
    if (atomic_load(&p->seek_to) >= 0) want[n++] = p;
  pthread_mutex_unlock(&e->parts_mu);
  if (n == 64) atomic_store(&e->seek_pending, 1); /* more next turn */
  for (size_t i = 0; i < n; i++) {
    fp_part_t *p = want[i];
    int64_t to = atomic_load(&p->seek_to);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_error_t *error;
    atomic_fetch_add(&p->gen, 1);
    fp_worker_purge_part(&e->workers[p->worker], p);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = to;
    if (atomic_load(&p->revoked)) {
      /* not ours any more: the next owner checks the store itself */
    } else if ((error = rd_kafka_seek_partitions(e->consumer, l, 5000))) {
      fp_log(FP_LOG_ERROR, "store", "%s: seek for the rebuild failed: %s", p->source,
             rd_kafka_error_string(error));
      rd_kafka_error_destroy(error);
      atomic_store(&p->rebuild_until, 0);
      p->expect = -1;
    } else {
      p->expect = to;
      /* the replay starts back in event time too: a watermark left at the old position
       * would take every replayed mention for a late one */
      atomic_store(&p->max_event_ms, INT64_MIN);
    }
    rd_kafka_topic_partition_list_destroy(l);
    atomic_store(&p->seek_to, -1);
  }
}

/*
 * Leaves the consumer group before the consumer is closed. librdkafka before 2.4.0 can hang
 * for ever in rd_kafka_consumer_close() of a cooperative consumer when a rebalance is under
 * way (librdkafka#4527, fixed by #4528): e.g. two instances stopped together, one of them
 * handed the other's partitions as it closes. Seen here: an instance stopped 0.5 s after a
 * second one joined never returned from close. So the engine unsubscribes first and serves
 * the rebalance callbacks (revoke: the stored offsets are committed, a transaction commits)
 * until nothing is assigned and no callback came for FP_LEAVE_QUIET_MS, at most
 * FP_LEAVE_MAX_MS; the close then has no rebalance to finish. Messages still delivered
 * meanwhile are dropped unstored (workers are stopped): the next owner reads them again.
 * Run thread, after the workers stopped.
 */
#define FP_LEAVE_QUIET_MS 300
#define FP_LEAVE_MAX_MS 15000
static void leave_group(fp_engine_t *e) {
  int64_t t0 = fp_mono_ns(), quiet_since = t0, dropped = 0;
  unsigned seen = atomic_load(&e->rebalances);
  rd_kafka_resp_err_t err = rd_kafka_unsubscribe(e->consumer);
  if (err) {
    fp_log(FP_LOG_WARN, "engine", "unsubscribe: %s", rd_kafka_err2str(err));
    return;
  }
  for (;;) {
    rd_kafka_topic_partition_list_t *a = NULL;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(e->consumer, 50);
    int64_t now = fp_mono_ns();
    int assigned = -1;
    unsigned r;
    if (m) {
      dropped += !m->err;
      rd_kafka_message_destroy(m);
    }
    if ((r = atomic_load(&e->rebalances)) != seen) {
      seen = r;
      quiet_since = now;
    }
    if (!rd_kafka_assignment(e->consumer, &a)) assigned = a->cnt;
    if (a) rd_kafka_topic_partition_list_destroy(a);
    if (assigned == 0 && now - quiet_since >= (int64_t)FP_LEAVE_QUIET_MS * 1000000) break;
    if (now - t0 >= (int64_t)FP_LEAVE_MAX_MS * 1000000) {
      fp_log(FP_LOG_WARN, "engine", "leaving the group: %d partition(s) still assigned after %d ms; "
             "closing anyway", assigned, FP_LEAVE_MAX_MS);
      break;
    }
  }
  fp_log(FP_LOG_INFO, "engine", "left the group in %lld ms (%lld message(s) fetched meanwhile, "
         "not processed: they stay uncommitted)", (long long)((fp_mono_ns() - t0) / 1000000),
         (long long)dropped);
}

fp_err_t fp_engine_run(fp_engine_t *e) {
  rd_kafka_topic_partition_list_t *topics;
  rd_kafka_resp_err_t kerr;
  const char *tok, *end;
  fp_err_t result = FP_OK;

  if (!e) return FP_ERR_INVALID_ARG;
  /* ---- operations: the HTTP endpoint lives from here to fp_engine_destroy ---- */
  if (e->conf->http_port >= 0 && !e->http) {
    char herr[512];
    if (!(e->http = fp_http_start(e, herr, sizeof(herr)))) {
      fp_log(FP_LOG_ERROR, "http", "%s", herr);
      return FP_ERR_CONFIG;
    }
  }
  /* ---- end operations ---- */
  if (pthread_create(&e->producer_thread, NULL, producer_main, e) != 0) return FP_ERR_FATAL;
  e->producer_started = 1;
  for (size_t i = 0; i < e->nworkers; i++)
    if (fp_worker_start(&e->workers[i]) != FP_OK) {
      result = FP_ERR_FATAL;
      goto out;
    }

  if (e->conf->rules_watch) {
    char werr[256];
    if (!(e->watch = fp_watch_new(e->conf->rules_dir, watch_reload, e, werr, sizeof(werr))))
      fp_log(FP_LOG_WARN, "rules", "not watching the rules directory: %s (SIGHUP still reloads)", werr);
  }
  topics = rd_kafka_topic_partition_list_new(4);
  for (tok = e->conf->input_topics; *tok; tok = *end ? end + 1 : end) {
    char name[256];
    end = strchr(tok, ',');
    if (!end) end = tok + strlen(tok);
    if (end > tok && (size_t)(end - tok) < sizeof(name)) {
      memcpy(name, tok, (size_t)(end - tok));
      name[end - tok] = '\0';
      rd_kafka_topic_partition_list_add(topics, name, RD_KAFKA_PARTITION_UA);
    }
  }
  kerr = rd_kafka_subscribe(e->consumer, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (kerr) {
    fp_log(FP_LOG_ERROR, "engine", "subscribe failed: %s", rd_kafka_err2str(kerr));
    result = FP_ERR_KAFKA;
    goto out;
  }
  fp_log(FP_LOG_INFO, "engine", "consuming %s as group %s with %zu worker(s)",
         e->conf->input_topics, e->conf->group_id, e->nworkers);

  int64_t next_commit = fp_mono_ns() + e->conf->commit_interval_ms * 1000000LL;
  /* Per message this loop does only what must be: the last message's partition is looked up
   * again only when the next one is another's (fetches hand out a partition's messages
   * together), and the workers' queues are checked for backpressure every 64 messages and
   * when the consumer is idle, not after each (a lock per worker and per partition). */
  fp_part_t *last = NULL;
  unsigned since_bp = 0;
  while (!atomic_load(&e->stop) && !atomic_load(&e->fatal)) {
    rd_kafka_message_t *m;
    if (e->eos && (fp_mono_ns() >= next_commit || atomic_load(&e->txn_abort))) {
      fp_txn_commit(e, 0);
      next_commit = fp_mono_ns() + e->conf->commit_interval_ms * 1000000LL;
    }
    /* operations: liveness (/healthz, seconds): the coarse clock, no clock read */
    atomic_store(&e->heartbeat_ns, fp_mono_coarse_ns(NULL));
    m = rd_kafka_consumer_poll(e->consumer, 50);
    if (m) {
      if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
          fp_log(FP_LOG_WARN, "kafka", "consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
      } else {
        const char *topic = rd_kafka_topic_name(m->rkt);
        /* parts live until the engine is destroyed: a kept pointer stays valid */
        fp_part_t *p = last && last->partition == m->partition && strcmp(last->topic, topic) == 0
                           ? last
                           : (last = fp_engine_part(e, topic, m->partition, 1));
        if (!p) {
          rd_kafka_message_destroy(m);
          result = FP_ERR_NOMEM;
          break;
        }
        if (drop_redelivered(e, p, m)) {
          rd_kafka_message_destroy(m);
        } else {
          atomic_fetch_add(&p->inflight, 1);
          fp_worker_push(&e->workers[p->worker], p, m);
        }
      }
    }
    serve_seeks(e);
    if (!m || ++since_bp >= 64) {
      since_bp = 0;
      backpressure(e);
    }
  }
  if (atomic_load(&e->fatal)) result = FP_ERR_FATAL;

out:
  /* Stop taking work: workers finish what they hold (acknowledged work is stored), then the
   * consumer close commits the stored offsets and leaves the group. */
  fp_log(FP_LOG_INFO, "engine", "stopping: draining workers");
  fp_watch_destroy(e->watch);
  e->watch = NULL;
  for (size_t i = 0; i < e->nworkers; i++) fp_worker_stop(&e->workers[i]);
  if (e->eos) {
    e->closing = 1; /* the last transaction: no next one begins */
    if (e->txn_open && !atomic_load(&e->fatal)) fp_txn_commit(e, 0);
  }
  rd_kafka_flush(e->producer, 10000);
  if (e->consumer) {
    rd_kafka_resp_err_t cerr;
    if (!e->eos) rd_kafka_commit(e->consumer, NULL, 0);
    leave_group(e);
    cerr = rd_kafka_consumer_close(e->consumer);
    if (cerr) fp_log(FP_LOG_WARN, "engine", "consumer close: %s", rd_kafka_err2str(cerr));
  }
  e->closed = 1;
  fp_log(FP_LOG_INFO, "engine", "stopped");
  return result;
}

/*
 * librdkafka before 2.3.0 asserts in rd_kafka_destroy() of a cooperative-sticky consumer that
 * joined its group but never received an assignment (its assignor state is still NULL:
 * librdkafka#4312, fixed by #4381), e.g. an instance stopped within a second of starting.
 * Such a consumer, already closed (it left the group), is kept here instead of destroyed:
 * a few kilobytes until the process exits, reachable, so LeakSanitizer stays quiet.
 */
static void destroy_consumer(fp_engine_t *e) {
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  static rd_kafka_t *kept[16];
  static size_t nkept;
  if (e->ever_assigned || rd_kafka_version() >= 0x020300ff) {
    rd_kafka_destroy(e->consumer);
    return;
  }
  pthread_mutex_lock(&mu);
  if (nkept < sizeof(kept) / sizeof(kept[0])) {
    kept[nkept++] = e->consumer;
    e->consumer = NULL;
  }
  pthread_mutex_unlock(&mu);
  if (e->consumer) rd_kafka_destroy(e->consumer); /* too many kept: take the chance */
}

void fp_engine_destroy(fp_engine_t *e) {
  if (!e) return;
  fp_http_stop(e->http); /* operations: first, its handlers read everything below */
  e->http = NULL;
  if (e->workers) {
    for (size_t i = 0; i < e->nworkers; i++) fp_worker_destroy(&e->workers[i]);
    free(e->workers);
  }
  if (e->producer_started) {
    atomic_store(&e->producer_stop, 1);
    pthread_join(e->producer_thread, NULL);
  }
  if (e->consumer) {
    if (!e->closed) rd_kafka_consumer_close(e->consumer);
    destroy_consumer(e);
  }
  for (size_t i = 0; i < e->n_out_topics; i++) rd_kafka_topic_destroy(e->out_topics[i]);
  free(e->out_topics);
  if (e->producer) {
    rd_kafka_flush(e->producer, 5000);
    rd_kafka_destroy(e->producer);
  }
  while (e->parts) {
    fp_part_t *n = e->parts->next;
    free(e->parts);
    e->parts = n;
  }
  pthread_mutex_destroy(&e->parts_mu);
  pthread_mutex_destroy(&e->barrier_mu);
  pthread_cond_destroy(&e->barrier_cv);
  fp_metrics_destroy(e->metrics);
  fp_watch_destroy(e->watch);
  if (e->watchdog_started) fp_sandbox_watchdog_stop();
  fp_conf_destroy(e->conf);
  free(e);
}
