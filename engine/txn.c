/*
 * txn.c - owns exactly-once mode (delivery.mode=exactly-once): the transactional producer's
 * life and the commit barrier.
 *
 * Incidents and dead-letter records of every run are produced inside the current Kafka
 * transaction; instead of storing offsets, a worker records the partition's next offset
 * (fp_part_t.txn_next). Every commit.interval.ms the run thread raises the barrier: workers
 * finish the run they hold and take no new one; then the offsets of every partition that
 * moved are sent to the transaction with the consumer's group metadata (KIP-447), the
 * transaction commits, and the next one begins. A read_committed consumer therefore sees each
 * run's outputs exactly when the group's offsets move past its inputs, never twice.
 *
 * An abortable error aborts the transaction and rewinds every assigned partition to its
 * committed offset, dropping what was queued: the replay is exact because the state store
 * fences and memoises window and lifecycle updates per offset (store.h). A fatal error
 * (fenced by a newer instance with the same transactional.id, for example) stops the engine.
 *
 * After a crash the dead instance's open transaction holds back the last stable offset of
 * every output partition it wrote to, so read_committed consumers see nothing past it, from
 * any instance, until it ends. With a stable instance.id the restarted instance has the same
 * transactional.id and fp_txn_init aborts that transaction at once; without one (the id then
 * holds the pid) only the broker's transaction timeout ends it.
 * librdkafka 2.0.2 facts: ../shared/notes/delivery-and-faults.md section 1.3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "log.h"
#include "util.h"

#define FP_TXN_TIMEOUT_MS 30000

static void txn_fatal(fp_engine_t *e, const char *what, rd_kafka_error_t *error) {
  fp_log(FP_LOG_ERROR, "txn", "%s: %s (fatal: stopping)", what, rd_kafka_error_string(error));
  rd_kafka_error_destroy(error);
  atomic_store(&e->fatal, 1);
}

fp_err_t fp_txn_init(fp_engine_t *e, char *errstr, size_t es) {
  rd_kafka_error_t *error = rd_kafka_init_transactions(e->producer, FP_TXN_TIMEOUT_MS);
  if (!error) error = rd_kafka_begin_transaction(e->producer);
  if (error) {
    fp_seterr(errstr, es, FP_ERR_KAFKA, "transactions: %s", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    return FP_ERR_KAFKA;
  }
  e->txn_open = 1;
  if (!e->conf->instance_id[0])
    fp_log(FP_LOG_WARN, "txn", "exactly-once without instance.id: after a crash, read_committed "
           "consumers of the outputs wait for the dead instance's transaction to time out; set "
           "instance.id to a stable name per instance");
  return FP_OK;
}

/* Raises the barrier and waits until no worker holds a run. */
static void barrier_raise(fp_engine_t *e) {
  pthread_mutex_lock(&e->barrier_mu);
  e->barrier = 1;
  while (e->busy_workers > 0) pthread_cond_wait(&e->barrier_cv, &e->barrier_mu);
  pthread_mutex_unlock(&e->barrier_mu);
}

static void barrier_lower(fp_engine_t *e) {
  pthread_mutex_lock(&e->barrier_mu);
  e->barrier = 0;
  pthread_cond_broadcast(&e->barrier_cv);
  pthread_mutex_unlock(&e->barrier_mu);
}

void fp_txn_run_begin(fp_engine_t *e) {
  pthread_mutex_lock(&e->barrier_mu);
  while (e->barrier) pthread_cond_wait(&e->barrier_cv, &e->barrier_mu);
  e->busy_workers++;
  pthread_mutex_unlock(&e->barrier_mu);
}

void fp_txn_run_end(fp_engine_t *e) {
  pthread_mutex_lock(&e->barrier_mu);
  if (--e->busy_workers == 0) pthread_cond_broadcast(&e->barrier_cv);
  pthread_mutex_unlock(&e->barrier_mu);
}

/* Rewinds every assigned partition to its committed offset and drops what was queued. */
static void rewind_all(fp_engine_t *e) {
  rd_kafka_topic_partition_list_t *l = NULL;
  rd_kafka_error_t *error;
  rd_kafka_resp_err_t err;

  for (size_t i = 0; i < e->nworkers; i++) fp_worker_purge(&e->workers[i]);
  if ((err = rd_kafka_assignment(e->consumer, &l)) || !l) {
    fp_log(FP_LOG_ERROR, "txn", "rewind: no assignment: %s", rd_kafka_err2str(err));
    atomic_store(&e->fatal, 1);
    return;
  }
  if (l->cnt && (err = rd_kafka_committed(e->consumer, l, 10000))) {
    fp_log(FP_LOG_ERROR, "txn", "rewind: reading committed offsets failed: %s", rd_kafka_err2str(err));
    atomic_store(&e->fatal, 1);
  } else if (l->cnt) {
    for (int i = 0; i < l->cnt; i++) {
      fp_part_t *p = fp_engine_part(e, l->elems[i].topic, l->elems[i].partition, 0);
      if (l->elems[i].offset < 0) l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
      if (p) {
        atomic_fetch_add(&p->gen, 1);
        p->expect = l->elems[i].offset >= 0 ? l->elems[i].offset : -1;
        atomic_store(&p->txn_next, -1);
        atomic_store(&p->max_event_ms, INT64_MIN);
      }
    }
    if ((error = rd_kafka_seek_partitions(e->consumer, l, 10000))) {
      fp_log(FP_LOG_ERROR, "txn", "rewind: seek failed: %s", rd_kafka_error_string(error));
      rd_kafka_error_destroy(error);
      atomic_store(&e->fatal, 1);
    }
  }
  rd_kafka_topic_partition_list_destroy(l);
}

static void abort_and_rewind(fp_engine_t *e, rd_kafka_error_t *cause) {
  rd_kafka_error_t *error;
  fp_log(FP_LOG_WARN, "txn", "transaction aborted (%s): rewinding to the committed offsets",
         rd_kafka_error_string(cause));
  rd_kafka_error_destroy(cause);
  if ((error = rd_kafka_abort_transaction(e->producer, FP_TXN_TIMEOUT_MS))) {
    txn_fatal(e, "abort_transaction", error);
    return;
  }
  e->txn_open = 0;
  rewind_all(e);
  atomic_fetch_add(&e->stats.txn_aborts, 1);
}

fp_err_t fp_txn_commit(fp_engine_t *e, int lost) {
  rd_kafka_topic_partition_list_t *offsets;
  rd_kafka_consumer_group_metadata_t *cgmd;
  rd_kafka_error_t *error = NULL;
  int n = 0;

  if (!e->txn_open) goto begin;
  if (!lost && !e->closing) /* a worker waiting out a Redis outage holds its run: try later */
    for (size_t i = 0; i < e->nworkers; i++)
      if (atomic_load(&e->workers[i].blocked)) return FP_OK;
  barrier_raise(e);
  if (atomic_exchange(&e->txn_abort, 0)) { /* a produce failed inside the transaction */
    error = rd_kafka_abort_transaction(e->producer, FP_TXN_TIMEOUT_MS);
    if (error) {
      txn_fatal(e, "abort_transaction", error);
    } else {
      fp_log(FP_LOG_WARN, "txn", "transaction aborted after a failed produce: rewinding");
      e->txn_open = 0;
      rewind_all(e);
      atomic_fetch_add(&e->stats.txn_aborts, 1);
    }
    barrier_lower(e);
    goto begin;
  }
  if (lost) {
    /* the partitions are someone else's now: our work on them must not become visible */
    error = rd_kafka_abort_transaction(e->producer, FP_TXN_TIMEOUT_MS);
    if (error) txn_fatal(e, "abort_transaction", error);
    e->txn_open = 0;
    pthread_mutex_lock(&e->parts_mu);
    for (fp_part_t *p = e->parts; p; p = p->next) atomic_store(&p->txn_next, -1);
    pthread_mutex_unlock(&e->parts_mu);
    barrier_lower(e);
    goto begin;
  }
  offsets = rd_kafka_topic_partition_list_new(8);
  pthread_mutex_lock(&e->parts_mu);
  for (fp_part_t *p = e->parts; p; p = p->next) {
    int64_t next = atomic_load(&p->txn_next);
    if (next < 0 || atomic_load(&p->revoked) == 2) continue;
    rd_kafka_topic_partition_list_add(offsets, p->topic, p->partition)->offset = next;
    n++;
  }
  pthread_mutex_unlock(&e->parts_mu);
  cgmd = rd_kafka_consumer_group_metadata(e->consumer);
  for (int attempt = 0; attempt < 5; attempt++) {
    error = n ? rd_kafka_send_offsets_to_transaction(e->producer, offsets, cgmd, FP_TXN_TIMEOUT_MS) : NULL;
    if (!error) error = rd_kafka_commit_transaction(e->producer, FP_TXN_TIMEOUT_MS);
    if (!error || !rd_kafka_error_is_retriable(error)) break;
    fp_log(FP_LOG_WARN, "txn", "commit: %s (retrying)", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    error = NULL;
    usleep(200000);
  }
  rd_kafka_consumer_group_metadata_destroy(cgmd);
  rd_kafka_topic_partition_list_destroy(offsets);
  if (!error) {
    e->txn_open = 0;
    atomic_fetch_add(&e->stats.txn_commits, 1);
    pthread_mutex_lock(&e->parts_mu);
    for (fp_part_t *p = e->parts; p; p = p->next) {
      int64_t next = atomic_load(&p->txn_next);
      if (next >= 0) atomic_store(&p->committed, next);
      atomic_store(&p->txn_next, -1);
    }
    pthread_mutex_unlock(&e->parts_mu);
  } else if (rd_kafka_error_txn_requires_abort(error)) {
    abort_and_rewind(e, error);
  } else {
    txn_fatal(e, "commit_transaction", error);
  }
  barrier_lower(e);
begin:
  if (atomic_load(&e->fatal) || e->closing) return atomic_load(&e->fatal) ? FP_ERR_FATAL : FP_OK;
  if ((error = rd_kafka_begin_transaction(e->producer))) {
    txn_fatal(e, "begin_transaction", error);
    return FP_ERR_FATAL;
  }
  e->txn_open = 1;
  return FP_OK;
}
