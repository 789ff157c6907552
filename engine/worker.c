/*
 * worker.c - owns one worker thread: its queue of Kafka messages, its pipeline (rule set
 * and state-store connection, see pipeline.c), and what Kafka needs around a run: producing
 * the incident events and dead-letter records, waiting until Kafka acknowledged every one,
 * and only then storing the run's last offset + 1 for commit.
 *
 * At-least-once, the acknowledgements of one round (every run the worker took from its queue
 * at once, one per partition) are awaited together after its last run, not run by run: a
 * round's runs then cost one wait for Kafka instead of one each (a run with an incident waited
 * 5-10 ms for its acknowledgement while the worker's other partitions waited behind it, and
 * in a crisis most runs have one). Offsets are still stored only for acknowledged runs, in
 * order. Exactly-once, each run's outputs are flushed before the next (the transaction).
 *
 * Runs are pipelined, one deep: while Redis runs a run's window script, the worker decodes
 * and evaluates rules stage 1 of its next run (two pipeline slots, see pipeline.h), and sends
 * that run's script once the one before is finished. A worker used to wait idle for the
 * script, and with four workers sharing one Redis they waited together: on the 2-core bench
 * 30% of the time no worker could run while Redis worked (thread states sampled every 5 ms).
 *
 * Failures of Redis or Kafka are retried with jittered exponential backoff while the run
 * thread pauses this worker's partitions (the blocked flag), so the group membership stays
 * and nothing beyond the acknowledged prefix is ever stored. A retry repeats the failed step
 * of the same run: the store's fence and memo make that exact. A run is abandoned (nothing
 * stored) when its partition is lost or the engine stops; the next owner replays it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "log.h"
#include "pipeline.h"
#include "store_lc.h"
#include "util.h"

/* A processed run whose outputs were produced and are not yet acknowledged. What emitting
 * them again needs is copied out of the pipeline's scratch, which the next run reuses. */
typedef struct fp_pending_s {
  fp_part_t *p;
  fp_qnode_t **nodes; /* owned, held until the run is finished */
  size_t k;
  struct fp_dlq_s {
    size_t i; /* index into nodes */
    fp_err_t status;
    char reason[256];
  } *dlq;
  size_t ndlq;
  fp_outvec_t events;   /* owned copies */
  fp_pipeline_out_t po; /* counters only: its pointers are not used */
  int refused;          /* a produce call failed: emit again before storing */
} fp_pending_t;

/* A run between fp_pipeline_prepare and fp_pipeline_finish, in pipeline slot s (its
 * messages are nodes[s]). */
typedef struct fp_staged_s {
  fp_part_t *p;       /* NULL: none since the take began */
  size_t k;
  int64_t wm;         /* the partition's watermark after it */
  int64_t committed;  /* the commit point its store calls were sent with */
  int live;           /* prepared, not finished yet */
  int dropped;        /* released: every later run of its partition in the take is too */
} fp_staged_t;

typedef struct fp_batch_s {
  fp_qnode_t **nodes[FP_PIPELINE_SLOTS]; /* the runs in hand, one per pipeline slot */
  fp_input_t *in[FP_PIPELINE_SLOTS];
  fp_staged_t st[FP_PIPELINE_SLOTS];
  size_t cap;
  fp_pending_t *pend; /* this round's runs, in processing order */
  size_t npend, cappend;
  fp_ack_t ack;       /* acknowledgements of this round's first emissions */
} fp_batch_t;

/* ---- acknowledgements ---- */

void fp_ack_init(fp_ack_t *a) {
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->pending = a->failed = 0;
  a->first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
}

void fp_ack_destroy(fp_ack_t *a) {
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
}

void fp_ack_done(fp_ack_t *a, rd_kafka_resp_err_t err) {
  pthread_mutex_lock(&a->mu);
  if (err) {
    if (!a->failed) a->first_err = err;
    a->failed++;
  }
  if (--a->pending == 0) pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

static void ack_wait(fp_ack_t *a) {
  pthread_mutex_lock(&a->mu);
  while (a->pending > 0) pthread_cond_wait(&a->cv, &a->mu);
  pthread_mutex_unlock(&a->mu);
}

/* ---- backoff ---- */

static void backoff_sleep(int attempt) {
  int64_t cap = 50LL << (attempt < 7 ? attempt : 7); /* 50 ms .. 6.4 s */
  if (cap > 5000) cap = 5000;
  int64_t ms = cap / 2 + (int64_t)(rand() % (int)(cap / 2 + 1)); /* jitter: [cap/2, cap] */
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- queue ---- */

void fp_worker_push(fp_worker_t *w, fp_part_t *p, rd_kafka_message_t *m) {
  fp_qnode_t *n = malloc(sizeof(*n));
  if (!n) { /* cannot queue: drop unstored, the partition replays it after a restart */
    fp_log(FP_LOG_ERROR, "engine", "out of memory queueing a message");
    atomic_fetch_sub(&p->inflight, 1);
    rd_kafka_message_destroy(m);
    atomic_store(&w->e->fatal, 1);
    return;
  }
  n->msg = m;
  n->part = p;
  n->gen = atomic_load(&p->gen);
  n->queued_ns = w->e->conf->linger_ms > 0 ? fp_mono_ns() : 0;
  n->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->tail) w->tail->next = n;
  else w->head = n;
  w->tail = n;
  w->qlen++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

void fp_worker_purge(fp_worker_t *w) {
  pthread_mutex_lock(&w->mu);
  while (w->head) {
    fp_qnode_t *n = w->head->next;
    atomic_fetch_sub(&w->head->part->inflight, 1);
    rd_kafka_message_destroy(w->head->msg);
    free(w->head);
    w->head = n;
  }
  w->tail = NULL;
  w->qlen = 0;
  pthread_mutex_unlock(&w->mu);
}

void fp_worker_wake_register(fp_worker_t *w) {
  pthread_mutex_lock(&w->mu);
  atomic_store(&w->register_pending, 1);
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Drops the queued messages of one partition (they are fetched again after a seek). */
void fp_worker_purge_part(fp_worker_t *w, fp_part_t *p) {
  fp_qnode_t **pp, *n;
  pthread_mutex_lock(&w->mu);
  w->tail = NULL;
  for (pp = &w->head; (n = *pp);) {
    if (n->part == p) {
      *pp = n->next;
      atomic_fetch_sub(&p->inflight, 1);
      rd_kafka_message_destroy(n->msg);
      free(n);
      w->qlen--;
    } else {
      w->tail = n;
      pp = &n->next;
    }
  }
  pthread_mutex_unlock(&w->mu);
}

/*
 * After Redis lost data (restarted without persistence, flushed, failed over to a stale
 * replica) its fence for a partition is behind the partition's committed offset: windows
 * miss mentions that were counted before. The worker notices when the partition is assigned,
 * has the run thread seek it back by store.rebuild of Kafka time (seek_to: the run thread is
 * the one that queues messages, so it can drop the stale ones and seek without a race), and
 * replays: windows and lifecycle state are rebuilt, while the outputs of offsets already
 * committed are not produced again (rebuild_until). What lies further back than
 * store.rebuild is gone; the log says so.
 */
static void check_store_loss(fp_worker_t *w, fp_part_t *p, int force) {
  fp_engine_t *e = w->e;
  char errbuf[256];
  int64_t fence = -1, committed;
  rd_kafka_topic_partition_list_t *l;

  if (e->conf->backend != FP_BACKEND_REDIS || e->eos) return;
  if (force) { /* the window store said it lost this partition's fence: rebuild */
  } else {
    /* the lifecycle fence moves to the end of every run (the window fence only where a rule
     * updated a window), so after a clean stop it is exactly the committed offset - 1 */
    int64_t low;
    fp_lc_due_t *due = NULL;
    size_t ndue = 0;
    if (fp_store_lc_load(fp_pipeline_store(w->pipeline), p->source, NULL, 0, INT64_MIN, 0, NULL, NULL,
                         NULL, &fence, &low, &due, &ndue, errbuf, sizeof(errbuf)) != FP_OK)
      return; /* Redis unreachable: the first run will wait for it */
    fp_store_lc_due_free(due, ndue);
  }
  l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
  if (rd_kafka_committed(e->consumer, l, 5000) || (committed = l->elems[0].offset) <= 0 ||
      (!force && fence >= committed - 1)) {
    rd_kafka_topic_partition_list_destroy(l);
    return;
  }
  /* the offset of the first message within store.rebuild of now, by Kafka timestamp */
  l->elems[0].offset = fp_now_ms() - e->conf->rebuild_ms;
  int64_t from = committed;
  if (!rd_kafka_offsets_for_times(e->consumer, l, 5000) && !l->elems[0].err && l->elems[0].offset >= 0 &&
      l->elems[0].offset < committed)
    from = l->elems[0].offset;
  if (from > fence + 1) {
    fp_log(FP_LOG_WARN, "store", "%s: the state store lost data (fence %lld, committed %lld); "
           "offsets %lld..%lld are beyond store.rebuild and stay uncounted", p->source,
           (long long)fence, (long long)committed, (long long)(fence + 1), (long long)(from - 1));
  }
  fp_log(FP_LOG_WARN, "store", "%s: the state store lost data (fence %lld, committed %lld): "
         "rebuilding windows from offset %lld", p->source, (long long)fence, (long long)committed,
         (long long)from);
  atomic_store(&p->rebuild_until, committed);
  atomic_store(&p->seek_to, from); /* runs of this partition are dropped until the seek */
  atomic_store(&e->seek_pending, 1);
  rd_kafka_topic_partition_list_destroy(l);
}

/* Registers our newly assigned partitions' sources (see fp_store_lc_register) and checks
 * that the state store still knows what Kafka says was done. */
static void register_parts(fp_worker_t *w) {
  fp_engine_t *e = w->e;
  char errbuf[256];
  fp_part_t *mine[256];
  size_t n = 0;
  if (!atomic_exchange(&w->register_pending, 0)) return;
  pthread_mutex_lock(&e->parts_mu);
  for (fp_part_t *p = e->parts; p && n < 256; p = p->next)
    if (p->worker == w->idx && atomic_exchange(&p->needs_register, 0)) mine[n++] = p;
  pthread_mutex_unlock(&e->parts_mu);
  for (size_t i = 0; i < n; i++) {
    if (fp_store_lc_register(fp_pipeline_store(w->pipeline), mine[i]->source, errbuf, sizeof(errbuf)) != FP_OK)
      fp_log_once(FP_LOG_WARN, "incidents", "registering %s failed: %s (sweeps may resolve early)",
                  mine[i]->source, errbuf);
    check_store_loss(w, mine[i], 0);
  }
}

size_t fp_worker_qlen(fp_worker_t *w) {
  size_t n;
  pthread_mutex_lock(&w->mu);
  n = w->qlen;
  pthread_mutex_unlock(&w->mu);
  return n;
}

/* ---- batch scratch ---- */

static fp_err_t batch_reserve(fp_batch_t *b, size_t n) {
  void *p;
  if (n <= b->cap) return FP_OK;
  for (int s = 0; s < FP_PIPELINE_SLOTS; s++) {
    if (!(p = realloc(b->nodes[s], n * sizeof(*b->nodes[s])))) return FP_ERR_NOMEM;
    b->nodes[s] = p;
    if (!(p = realloc(b->in[s], n * sizeof(*b->in[s])))) return FP_ERR_NOMEM;
    b->in[s] = p;
  }
  b->cap = n;
  return FP_OK;
}

static void batch_free(fp_batch_t *b) {
  if (!b) return;
  for (int s = 0; s < FP_PIPELINE_SLOTS; s++) free(b->nodes[s]), free(b->in[s]);
  free(b->pend);
  fp_ack_destroy(&b->ack);
  free(b);
}

/* ---- outputs ---- */

static fp_err_t produce_one(fp_worker_t *w, fp_ack_t *ack, const char *topic, const char *key,
                            size_t keylen, const void *val, size_t len, rd_kafka_headers_t *hdrs) {
  fp_engine_t *e = w->e;
  for (int attempt = 0;; attempt++) {
    rd_kafka_resp_err_t err;
    pthread_mutex_lock(&ack->mu);
    ack->pending++;
    pthread_mutex_unlock(&ack->mu);
    err = rd_kafka_producev(e->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                            RD_KAFKA_V_VALUE((void *)val, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(ack), RD_KAFKA_V_END);
    if (!err) return FP_OK; /* the producer took over hdrs */
    pthread_mutex_lock(&ack->mu);
    ack->pending--;
    pthread_mutex_unlock(&ack->mu);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || atomic_load(&e->fatal)) {
      /* the caller pauses, logs the outage once and retries: say the cause once too */
      fp_log_once(FP_LOG_ERROR, "engine", "produce to %s failed: %s (retrying; logged once)", topic,
                  rd_kafka_err2str(err));
      if (hdrs) rd_kafka_headers_destroy(hdrs);
      return FP_ERR_KAFKA;
    }
    backoff_sleep(attempt < 3 ? attempt : 3);
  }
}

static rd_kafka_headers_t *dlq_headers(const fp_part_t *p, int64_t offset, fp_err_t code,
                                       const char *reason, size_t orig_len, size_t kept_len) {
  rd_kafka_headers_t *h = rd_kafka_headers_new(8);
  char buf[64];
  const char *stage = code == FP_ERR_DECODE || code == FP_ERR_TOO_LARGE ? "decode"
                      : code == FP_ERR_LATE                            ? "window"
                                                                        : "validate";
  rd_kafka_header_add(h, "x-err-topic", -1, p->topic, -1);
  snprintf(buf, sizeof(buf), "%d", (int)p->partition);
  rd_kafka_header_add(h, "x-err-partition", -1, buf, -1);
  snprintf(buf, sizeof(buf), "%lld", (long long)offset);
  rd_kafka_header_add(h, "x-err-offset", -1, buf, -1);
  rd_kafka_header_add(h, "x-err-stage", -1, stage, -1);
  rd_kafka_header_add(h, "x-err-code", -1, fp_err_name(code), -1);
  rd_kafka_header_add(h, "x-err-message", -1, reason, -1);
  if (kept_len < orig_len) {
    snprintf(buf, sizeof(buf), "%zu", orig_len);
    rd_kafka_header_add(h, "x-err-original-size", -1, buf, -1);
  }
  return h;
}

/* Produces every output of a pending run, counting them on @p ack (no wait). @returns
 * FP_OK when the producer took them all. */
static fp_err_t emit_pending(fp_worker_t *w, const fp_pending_t *pd, fp_ack_t *ack) {
  fp_engine_t *e = w->e;
  fp_part_t *p = pd->p;
  fp_err_t err = FP_OK;
  size_t cap = (size_t)e->conf->input_max_bytes;
  int64_t rebuilt = atomic_load(&p->rebuild_until); /* outputs below this were emitted before */

  for (size_t d = 0; d < pd->ndlq && !err; d++) {
    rd_kafka_message_t *m = pd->nodes[pd->dlq[d].i]->msg;
    if (m->offset < rebuilt) continue;
    size_t keep = m->len < cap ? m->len : cap / 16; /* oversized: keep a prefix as evidence */
    err = produce_one(w, ack, e->conf->dlq_topic, m->key, m->key_len, m->payload, keep,
                      dlq_headers(p, m->offset, pd->dlq[d].status, pd->dlq[d].reason, m->len, keep));
  }
  for (size_t i = 0; i < pd->events.n && !err; i++) {
    const fp_outrec_t *r = &pd->events.recs[i];
    if (r->offset < rebuilt) continue;
    err = produce_one(w, ack, r->topic, r->key, r->key ? strlen(r->key) : 0, r->payload, r->len, NULL);
  }
  return err;
}

static void pending_free(fp_pending_t *pd) {
  for (size_t i = 0; i < pd->k; i++) {
    rd_kafka_message_destroy(pd->nodes[i]->msg);
    free(pd->nodes[i]);
  }
  atomic_fetch_sub(&pd->p->inflight, (int64_t)pd->k);
  free(pd->nodes);
  free(pd->dlq);
  fp_outvec_free(&pd->events);
  memset(pd, 0, sizeof(*pd));
}

/* Takes over the run's nodes and copies its outputs into a new pending record. */
static fp_pending_t *pending_add(fp_worker_t *w, int slot, fp_part_t *p, size_t k,
                                 const fp_pipeline_out_t *po) {
  fp_batch_t *b = w->batch;
  fp_qnode_t **nodes = b->nodes[slot];
  fp_pending_t *pd;
  size_t nd = 0;
  if (b->npend == b->cappend) {
    size_t cap = b->cappend ? b->cappend * 2 : 8;
    fp_pending_t *np = realloc(b->pend, cap * sizeof(*np));
    if (!np) return NULL;
    b->pend = np;
    b->cappend = cap;
  }
  pd = &b->pend[b->npend];
  memset(pd, 0, sizeof(*pd));
  for (size_t i = 0; i < k; i++) nd += po->status[i] != FP_OK;
  if (!(pd->nodes = malloc(k * sizeof(*pd->nodes))) || (nd && !(pd->dlq = malloc(nd * sizeof(*pd->dlq))))) {
    free(pd->nodes);
    return NULL;
  }
  for (size_t i = 0; i < po->events->n; i++)
    if (fp_outvec_copy(&pd->events, &po->events->recs[i]) != FP_OK) goto nomem;
  for (size_t i = 0; i < k; i++) {
    pd->nodes[i] = nodes[i];
    nodes[i] = NULL;
    if (po->status[i] == FP_OK) continue;
    pd->dlq[pd->ndlq].i = i;
    pd->dlq[pd->ndlq].status = po->status[i];
    snprintf(pd->dlq[pd->ndlq].reason, sizeof(pd->dlq[pd->ndlq].reason), "%s", po->reason[i]);
    pd->ndlq++;
  }
  pd->p = p;
  pd->k = k;
  pd->po = *po;
  pd->po.status = NULL, pd->po.reason = NULL, pd->po.events = NULL;
  b->npend++;
  return pd;
nomem:
  fp_outvec_free(&pd->events);
  free(pd->nodes), free(pd->dlq);
  return NULL;
}

/* ---- processing ---- */

typedef struct {
  fp_worker_t *w;
  fp_part_t *p;
} retry_ctx_t;

static int run_abandoned(fp_worker_t *w, fp_part_t *p) {
  return atomic_load(&p->revoked) == 2 || atomic_load(&w->e->fatal) || atomic_load(&w->e->stop);
}

/* The pipeline's retry policy: say it once, pause our partitions, back off, go again
 * unless the partition was lost or the engine is stopping. */
static int retry_store(void *opaque, const char *what, const char *errstr, int attempt) {
  retry_ctx_t *c = opaque;
  atomic_fetch_add(&c->w->e->stats.redis_errors, 1);
  if (!atomic_exchange(&c->w->blocked, 1))
    fp_log(FP_LOG_WARN, "store", "state store unavailable (%s: %s): pausing partitions of worker %d, retrying",
           what, errstr, c->w->idx);
  if (run_abandoned(c->w, c->p)) return 0;
  backoff_sleep(attempt);
  return !run_abandoned(c->w, c->p);
}

/* Stores the end of a pending run once its outputs are acknowledged, emitting them again
 * (with backoff, partitions paused) while they are not. @p acked: its first emission is known
 * to be acknowledged. Frees @p pd's contents. @returns 0 if the run was abandoned (nothing
 * stored): a later run of its partition must not store its end either. */
static int finish_pending(fp_worker_t *w, fp_pending_t *pd, int acked) {
  fp_engine_t *e = w->e;
  fp_part_t *p = pd->p;

  for (int attempt = 0; !acked; attempt++) {
    fp_ack_t ack;
    fp_err_t err;
    fp_ack_init(&ack);
    err = emit_pending(w, pd, &ack);
    ack_wait(&ack);
    atomic_fetch_add(&e->stats.outputs_failed, (uint64_t)ack.failed);
    if (!err && ack.failed) {
      fp_log(FP_LOG_WARN, "engine", "%s: %lld output(s) not acknowledged: %s", p->source,
             (long long)ack.failed, rd_kafka_err2str(ack.first_err));
      err = FP_ERR_KAFKA;
    }
    fp_ack_destroy(&ack);
    if (err == FP_OK) break;
    if (e->eos) { /* the transaction is broken: the run thread aborts it and rewinds */
      atomic_store(&e->txn_abort, 1);
      pending_free(pd);
      return 0;
    }
    if (!atomic_exchange(&w->blocked, 1))
      fp_log(FP_LOG_WARN, "engine", "%s: outputs not acknowledged: pausing and retrying", p->source);
    if (run_abandoned(w, p)) {
      pending_free(pd);
      return 0;
    }
    backoff_sleep(attempt);
  }
  if (atomic_exchange(&w->blocked, 0))
    fp_log(FP_LOG_INFO, "engine", "worker %d: state store and outputs healthy again, resuming", w->idx);

  /* everything the run caused is acknowledged: store its end (unless the partition was lost);
   * in exactly-once mode the end travels with the transaction instead (txn.c) */
  int64_t rebuild = atomic_load(&p->rebuild_until), next_off = pd->nodes[pd->k - 1]->msg->offset + 1;
  if (rebuild && next_off >= rebuild) {
    atomic_store(&p->rebuild_until, 0);
    fp_log(FP_LOG_INFO, "store", "%s: windows rebuilt up to the committed offset %lld", p->source,
           (long long)rebuild);
  }
  if (e->eos) {
    atomic_store(&p->txn_next, next_off);
  } else if (rebuild && next_off <= rebuild) {
    /* still rebuilding below the committed offset: storing would move the commit back */
  } else if (atomic_load(&p->revoked) != 2) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = next_off;
    rd_kafka_resp_err_t serr = rd_kafka_offsets_store(e->consumer, l);
    if (serr)
      fp_log(FP_LOG_WARN, "engine", "%s: storing offset %lld failed: %s", p->source,
             (long long)next_off, rd_kafka_err2str(serr));
    else
      atomic_fetch_add(&e->stats.offsets_stored, pd->k);
    rd_kafka_topic_partition_list_destroy(l);
  }
  atomic_fetch_add(&e->stats.mentions_in, pd->k);
  atomic_fetch_add(&e->stats.mentions_decoded, pd->po.decoded);
  atomic_fetch_add(&e->stats.late, pd->po.late);
  atomic_fetch_add(&e->stats.dead_lettered, pd->ndlq);
  atomic_fetch_add(&e->stats.rule_evals, pd->po.evals);
  atomic_fetch_add(&e->stats.rule_errors, pd->po.rule_errors);
  atomic_fetch_add(&e->stats.redis_roundtrips, pd->po.roundtrips);
  atomic_fetch_add(&e->stats.incidents, pd->events.n);
  if (pd->po.replayed) atomic_fetch_add(&e->stats.duplicates_fenced, pd->po.replayed);
  for (size_t i = 0; i < pd->events.n; i++)
    fp_metrics_incident(e->metrics, pd->events.recs[i].status, pd->events.recs[i].severity);
  pending_free(pd);
  return 1;
}

/* At-least-once: waits once for every output of the round's runs, then finishes them in
 * order (a run whose outputs were not all acknowledged is emitted again first). */
static void finish_round(fp_worker_t *w) {
  fp_batch_t *b = w->batch;
  int failed;
  if (!b->npend) return;
  ack_wait(&b->ack);
  pthread_mutex_lock(&b->ack.mu);
  failed = b->ack.failed > 0;
  atomic_fetch_add(&w->e->stats.outputs_failed, (uint64_t)b->ack.failed);
  if (failed)
    fp_log(FP_LOG_WARN, "engine", "worker %d: %lld output(s) not acknowledged: %s; emitting the round's again",
           w->idx, (long long)b->ack.failed, rd_kafka_err2str(b->ack.first_err));
  b->ack.failed = 0;
  b->ack.first_err = RD_KAFKA_RESP_ERR_NO_ERROR;
  pthread_mutex_unlock(&b->ack.mu);
  /* after finishing, a record is zeroed; an abandoned one keeps its partition as a marker */
  for (size_t i = 0; i < b->npend; i++) {
    fp_pending_t *pd = &b->pend[i];
    fp_part_t *p = pd->p;
    int abandoned = 0;
    for (size_t j = 0; j < i && !abandoned; j++) abandoned = b->pend[j].p == p;
    if (abandoned) pending_free(pd); /* its partition replays from the abandoned run */
    else abandoned = !finish_pending(w, pd, !failed && !pd->refused);
    if (abandoned) pd->p = p;
  }
  b->npend = 0;
}

/* Releases the k messages of slot @p slot unstored (the partition replays them) and marks
 * the slot's run dropped. */
static void release_slot(fp_worker_t *w, int slot, fp_part_t *p, size_t k) {
  fp_batch_t *b = w->batch;
  for (size_t i = 0; i < k; i++) {
    rd_kafka_message_destroy(b->nodes[slot][i]->msg);
    free(b->nodes[slot][i]);
    b->nodes[slot][i] = NULL;
  }
  atomic_fetch_sub(&p->inflight, (int64_t)k);
  b->st[slot] = (fp_staged_t){.p = p, .dropped = 1};
}

/*
 * Finishes the run staged in @p slot: its window round trip (sent ahead), severities and
 * lifecycle, then its outputs (produced; stored at the round's end, or with the transaction).
 * A run that fails is released, and so is every later run of its partition in the take (the
 * dropped mark): otherwise a later run whose store writes got through would move the
 * partition's fences past the dropped one, and its replay would be taken for a duplicate:
 * under a Redis OOM that comes and goes, a run whose lifecycle commit was refused lost its
 * incident updates for good when the next run of its partition in the same take succeeded
 * (fault row R6 in CI at 984a08c: an incident resolved with 56 mentions instead of 60).
 */
static void finish_staged(fp_worker_t *w, int slot) {
  fp_engine_t *e = w->e;
  fp_batch_t *b = w->batch;
  fp_staged_t *st = &b->st[slot];
  fp_part_t *p = st->p;
  size_t k = st->k;
  char errbuf[512];
  fp_err_t err;
  fp_pipeline_out_t po;
  retry_ctx_t rc = {w, p};
  int sweep = 1; /* resolving incidents due costs no extra round trip */

  if (!st->live) return;
  st->live = 0;
  if (atomic_load(&e->fatal) || atomic_load(&p->revoked) || atomic_load(&p->seek_to) >= 0 ||
      (e->eos && atomic_load(&e->txn_abort))) {
    fp_pipeline_discard(w->pipeline, slot);
    goto release;
  }
  err = fp_pipeline_finish(w->pipeline, slot, st->committed, sweep, retry_store, &rc, &po, errbuf,
                           sizeof(errbuf));
  if (err == FP_ERR_REDIS) goto release; /* abandoned: lost partition or stopping */
  if (err == FP_ERR_STORE_LOST) {
    /* nothing of this run was applied; the rebuild seeks back and replays it */
    fp_log(FP_LOG_WARN, "store", "%s: %s", p->source, errbuf);
    check_store_loss(w, p, 1);
    goto release;
  }
  if (err != FP_OK) {
    fp_log(FP_LOG_ERROR, "engine", "%s: cannot process: %s", p->source, errbuf);
    atomic_store(&e->fatal, 1);
    goto release;
  }
  atomic_store(&p->max_event_ms, st->wm);

  fp_pending_t *pd = pending_add(w, slot, p, k, &po);
  if (!pd) {
    fp_log(FP_LOG_ERROR, "engine", "%s: out of memory holding a run's outputs", p->source);
    atomic_store(&e->fatal, 1);
    goto release;
  }
  if (e->eos) { /* the transaction: outputs flushed run by run */
    finish_pending(w, pd, 0);
    b->npend--;
    return;
  }
  if (emit_pending(w, pd, &b->ack) != FP_OK) pd->refused = 1; /* emitted again at the round's end */
  return;

release:
  release_slot(w, slot, p, k);
}

/*
 * Takes the k messages of partition p in w->batch->nodes[slot] (offset order) as the next
 * run: prepares it (decode, rules stage 1), then finishes the run before it (in the other
 * slot), then sends its window round trip, so the store works on it while the worker
 * prepares the next one. The caller finishes the last one (finish_staged).
 */
static void stage_run(fp_worker_t *w, int slot, fp_part_t *p, size_t k) {
  fp_engine_t *e = w->e;
  fp_batch_t *b = w->batch;
  fp_qnode_t **nodes = b->nodes[slot];
  fp_staged_t *prev = &b->st[!slot];
  char errbuf[512];
  int64_t wm;

  if (prev->p == p && prev->dropped) goto release; /* replayed from the dropped run */
  if (atomic_load(&e->fatal)) goto release;
  if (atomic_load(&p->revoked)) goto release; /* not ours any more: the next owner replays */
  if (atomic_load(&p->seek_to) >= 0) goto release; /* a rebuild seek is due: fetched again */
  {
    /* messages queued before the run thread's last seek are stale: drop them */
    unsigned gen = atomic_load(&p->gen);
    size_t kept = 0;
    for (size_t i = 0; i < k; i++) {
      if (nodes[i]->gen == gen) {
        nodes[kept++] = nodes[i];
        continue;
      }
      rd_kafka_message_destroy(nodes[i]->msg);
      free(nodes[i]);
      atomic_fetch_sub(&p->inflight, 1);
    }
    k = kept;
    if (!k) { /* nothing to stage: the slot is free, and the run before is finished now */
      finish_staged(w, !slot);
      b->st[slot] = (fp_staged_t){.p = p};
      return;
    }
  }
  if (e->eos && atomic_load(&e->txn_abort)) goto release; /* the rewind replays it */
  for (size_t i = 0; i < k; i++) {
    b->in[slot][i].payload = nodes[i]->msg->payload;
    b->in[slot][i].len = nodes[i]->msg->len;
    b->in[slot][i].offset = nodes[i]->msg->offset;
  }
  /* the partition's run before this one may not be finished: its watermark is the start */
  wm = prev->live && prev->p == p ? prev->wm : atomic_load(&p->max_event_ms);
  if (fp_pipeline_prepare(w->pipeline, slot, p->source, &wm, b->in[slot], k, errbuf,
                          sizeof(errbuf)) != FP_OK) {
    fp_log(FP_LOG_ERROR, "engine", "%s: cannot process: %s", p->source, errbuf);
    atomic_store(&e->fatal, 1);
    finish_staged(w, !slot);
    goto release;
  }
  finish_staged(w, !slot);
  if (prev->p == p && prev->dropped) { /* the run before failed: this one replays after it */
    fp_pipeline_discard(w->pipeline, slot);
    goto release;
  }
  /* while rebuilding, committed <= 0: the store's loss check would refuse the replay */
  b->st[slot] = (fp_staged_t){.p = p, .k = k, .wm = wm, .live = 1,
                              .committed = atomic_load(&p->rebuild_until) ? -1 : atomic_load(&p->committed)};
  fp_pipeline_send(w->pipeline, slot, b->st[slot].committed);
  return;

release:
  finish_staged(w, !slot);
  release_slot(w, slot, p, k);
}

static void maybe_reload(fp_worker_t *w) {
  char errbuf[512];
  if (!atomic_exchange(&w->reload, 0)) return;
  if (fp_pipeline_reload(w->pipeline, errbuf, sizeof(errbuf)) != FP_OK) {
    unsigned gen = atomic_load(&w->e->reload_gen), seen = atomic_load(&w->e->reload_logged_gen);
    if (seen != gen && atomic_compare_exchange_strong(&w->e->reload_logged_gen, &seen, gen))
      fp_log(FP_LOG_ERROR, "rules", "reload failed, keeping the running rules: %s", errbuf);
    else
      fp_log(FP_LOG_DEBUG, "rules", "worker %d: reload failed (already reported): %s", w->idx, errbuf);
    return;
  }
  if (w->idx == 0)
    fp_log(FP_LOG_INFO, "rules", "reloaded %zu rule(s)", fp_rules_count(fp_pipeline_rules(w->pipeline)));
}

/* A worker takes up to this many runs' worth of mentions from its queue at once: the queue
 * interleaves its partitions, and taking only batch.size in all would cut each partition's
 * run to a fraction of it (with 4 partitions, ~250 mentions a round trip instead of 1000; the
 * windows script's fixed cost per window and call then dominates). Bounded, so a stop or a
 * rebalance waits for at most this much work in hand. */
#define FP_TAKE_RUNS 4

/* With w->mu held and something queued: waits (releasing the lock) until @p take mentions are
 * queued or run.linger.ms has passed since the oldest arrived, or a stop or a registration
 * needs the worker. */
static void linger(fp_worker_t *w, size_t take) {
  int64_t until = w->head->queued_ns + w->e->conf->linger_ms * 1000000;
  while (w->head && (size_t)w->qlen < take && !w->stopping && !atomic_load(&w->register_pending)) {
    int64_t left = until - fp_mono_ns();
    if (left <= 0) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000000000;
    ts.tv_nsec += left % 1000000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  }
}

static void *worker_main(void *arg) {
  fp_worker_t *w = arg;
  size_t max = (size_t)w->e->conf->batch_size;
  size_t take = max * FP_TAKE_RUNS;
  fp_qnode_t **taken = calloc(take, sizeof(*taken));

  if (!taken || batch_reserve(w->batch, max) != FP_OK) {
    atomic_store(&w->e->fatal, 1);
    free(taken);
    return NULL;
  }
  for (;;) {
    size_t n = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->head && !w->stopping && !atomic_load(&w->register_pending)) pthread_cond_wait(&w->cv, &w->mu);
    if (w->head && w->e->conf->linger_ms > 0) linger(w, take);
    if (atomic_load(&w->register_pending)) {
      pthread_mutex_unlock(&w->mu);
      register_parts(w);
      continue;
    }
    if (w->stopping) {
      /* stopping: the run in hand was finished; what is still queued was never stored, so
       * it is dropped and replays from the committed offset (a stop stays quick) */
      pthread_mutex_unlock(&w->mu);
      fp_worker_purge(w);
      break;
    }
    if (w->e->eos) { /* hold a run only outside the transaction commit barrier */
      pthread_mutex_unlock(&w->mu);
      fp_txn_run_begin(w->e);
      pthread_mutex_lock(&w->mu);
      if (!w->head) { /* purged by a rewind meanwhile */
        pthread_mutex_unlock(&w->mu);
        fp_txn_run_end(w->e);
        continue;
      }
    }
    while (w->head && n < take) {
      taken[n++] = w->head;
      w->head = w->head->next;
      w->qlen--;
    }
    if (!w->head) w->tail = NULL;
    pthread_mutex_unlock(&w->mu);

    maybe_reload(w);
    /* partition runs, each in offset order; the first node of each run marks the partition.
     * Runs alternate between the two pipeline slots: each is prepared while the store
     * applies the one before it. */
    int slot = 0;
    for (size_t i = 0; i < n; i++) {
      fp_part_t *p;
      size_t k = 0;
      if (!taken[i]) continue;
      p = taken[i]->part;
      for (size_t j = i; j < n; j++) {
        if (taken[j] && taken[j]->part == p) {
          w->batch->nodes[slot][k++] = taken[j];
          taken[j] = NULL;
          if (k == max) { /* a run is at most batch.size: one round trip */
            stage_run(w, slot, p, k);
            slot = !slot;
            k = 0;
          }
        }
      }
      if (k) {
        stage_run(w, slot, p, k);
        slot = !slot;
      }
    }
    finish_staged(w, !slot); /* the last run */
    for (int s = 0; s < FP_PIPELINE_SLOTS; s++) w->batch->st[s] = (fp_staged_t){0};
    finish_round(w);
    if (w->e->eos) fp_txn_run_end(w->e);
  }
  free(taken);
  return NULL;
}

fp_err_t fp_worker_init(fp_worker_t *w, fp_engine_t *e, int idx, char *errstr, size_t es) {
  fp_store_t *store;
  memset(w, 0, sizeof(*w));
  w->e = e;
  w->idx = idx;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (!(w->batch = calloc(1, sizeof(*w->batch)))) return FP_ERR_NOMEM;
  fp_ack_init(&w->batch->ack);
  if (e->conf->backend == FP_BACKEND_MEMORY) {
    if (e->nworkers > 1 && idx == 0)
      fp_log(FP_LOG_WARN, "store", "store.backend=memory with %zu workers: each worker keeps its own "
             "windows; use workers=1 for exact results", e->nworkers);
    if ((store = fp_store_mem_new(errstr, es))) fp_store_set_lateness(store, e->conf->lateness_ms);
  } else {
    fp_store_redis_conf_t rc = {0};
    rc.host = e->conf->redis_host;
    rc.port = (int)e->conf->redis_port;
    rc.password = e->conf->redis_password;
    rc.db = (int)e->conf->redis_db;
    rc.prefix = e->conf->redis_prefix;
    rc.connect_timeout_ms = (int)e->conf->redis_connect_timeout_ms;
    rc.command_timeout_ms = (int)e->conf->redis_timeout_ms;
    rc.memo_ttl_ms = 3600 * 1000;
    rc.lateness_ms = e->conf->lateness_ms;
    store = fp_store_redis_new(&rc, errstr, es);
    /* a store that loses data while we run (FLUSHALL, restart without persistence) is
     * noticed at the next window update, before anything is counted into it */
    if (store && !e->eos) fp_store_set_loss_check(store, 1);
  }
  if (!store) return FP_ERR_REDIS;
  fp_store_set_distinct_exact(store, e->conf->distinct_exact);
  if (!(w->pipeline = fp_pipeline_new(e->conf, &e->limits, store, e->metrics, errstr, es)))
    return FP_ERR_RULE_LOAD;
  return FP_OK;
}

fp_err_t fp_worker_start(fp_worker_t *w) {
  if (pthread_create(&w->thread, NULL, worker_main, w) != 0) return FP_ERR_FATAL;
  w->started = 1;
  return FP_OK;
}

void fp_worker_stop(fp_worker_t *w) {
  if (!w->started) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  w->started = 0;
}

void fp_worker_destroy(fp_worker_t *w) {
  if (!w->e) return;
  fp_worker_stop(w);
  while (w->head) {
    fp_qnode_t *n = w->head->next;
    atomic_fetch_sub(&w->head->part->inflight, 1);
    rd_kafka_message_destroy(w->head->msg);
    free(w->head);
    w->head = n;
  }
  batch_free(w->batch);
  fp_pipeline_destroy(w->pipeline);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  w->e = NULL;
}
