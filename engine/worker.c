/*
 * worker.c - owns one worker thread: its queue, its rule set (Lua state), its state-store
 * connection, and the processing of a batch.
 *
 * A batch is up to batch.size queued messages; it is processed one partition run at a time,
 * in offset order: decode (bad input -> dead-letter record), lateness check against the
 * partition watermark (late -> dead-letter record with code "late"), rule stage 1 (window
 * updates), one state-store round trip for all window updates, rule stage 2 (severities),
 * the lifecycle (incidents.c, two round trips), then every output is produced and awaited,
 * and only then is the run's last offset + 1 stored for commit.
 *
 * Failures of Redis or Kafka are retried with jittered exponential backoff while the run
 * thread pauses this worker's partitions (blocked flag), so the group membership stays and
 * nothing beyond the acknowledged prefix is ever stored. A retry repeats the same batch: the
 * store's fence and memo make that exact.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "incidents.h"
#include "lifecycle.h"
#include "log.h"
#include "mention.h"
#include "store_lc.h"
#include "util.h"

typedef struct fp_batch_s {
  fp_qnode_t **nodes;       /* the run being processed */
  fp_mention_t *mentions;
  int *mrefs;
  fp_err_t *derr;           /* decode / lateness result per message */
  char (*reason)[256];
  size_t cap;
  fp_rule_hit_t *hits;
  size_t *hit_msg;
  size_t nhits, caphits;
  fp_opvec_t ops;
  fp_inc_signal_t *sigs;
  size_t capsigs;
  fp_outvec_t out;
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
  n->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->tail) w->tail->next = n;
  else w->head = n;
  w->tail = n;
  w->qlen++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
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
  if (n <= b->cap) return FP_OK;
  void *p;
#define GROW(f)                                         \
  if (!(p = realloc(b->f, n * sizeof(*b->f)))) return FP_ERR_NOMEM; \
  b->f = p;
  GROW(nodes) GROW(mentions) GROW(mrefs) GROW(derr) GROW(reason)
#undef GROW
  b->cap = n;
  return FP_OK;
}

static fp_err_t hits_reserve(fp_batch_t *b, size_t n) {
  if (n <= b->caphits) return FP_OK;
  size_t cap = b->caphits ? b->caphits : 64;
  while (cap < n) cap *= 2;
  void *p;
  if (!(p = realloc(b->hits, cap * sizeof(*b->hits)))) return FP_ERR_NOMEM;
  b->hits = p;
  if (!(p = realloc(b->hit_msg, cap * sizeof(*b->hit_msg)))) return FP_ERR_NOMEM;
  b->hit_msg = p;
  if (!(p = realloc(b->sigs, cap * sizeof(*b->sigs)))) return FP_ERR_NOMEM;
  b->sigs = p;
  b->caphits = cap;
  return FP_OK;
}

static void batch_free(fp_batch_t *b) {
  if (!b) return;
  free(b->nodes), free(b->mentions), free(b->mrefs), free(b->derr), free(b->reason);
  free(b->hits), free(b->hit_msg), free(b->sigs);
  fp_opvec_free(&b->ops);
  fp_outvec_free(&b->out);
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
      fp_log(FP_LOG_ERROR, "engine", "produce to %s failed: %s", topic, rd_kafka_err2str(err));
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

/* Produces every output of the run and waits for Kafka's acknowledgement of all of them.
 * @returns FP_OK when all were acknowledged. */
static fp_err_t emit_run(fp_worker_t *w, fp_part_t *p, fp_batch_t *b, size_t k, uint64_t *ndlq) {
  fp_engine_t *e = w->e;
  fp_ack_t ack;
  fp_err_t err = FP_OK;
  size_t cap = (size_t)e->conf->input_max_bytes;

  fp_ack_init(&ack);
  *ndlq = 0;
  for (size_t i = 0; i < k && !err; i++) {
    rd_kafka_message_t *m = b->nodes[i]->msg;
    if (b->derr[i] == FP_OK) continue;
    size_t keep = m->len < cap ? m->len : cap / 16; /* oversized: keep a prefix as evidence */
    err = produce_one(w, &ack, e->conf->dlq_topic, m->key, m->key_len, m->payload, keep,
                      dlq_headers(p, m->offset, b->derr[i], b->reason[i], m->len, keep));
    (*ndlq)++;
  }
  for (size_t i = 0; i < b->out.n && !err; i++) {
    fp_outrec_t *r = &b->out.recs[i];
    err = produce_one(w, &ack, r->topic, r->key, r->key ? strlen(r->key) : 0, r->payload, r->len, NULL);
  }
  ack_wait(&ack);
  if (!err && ack.failed) {
    fp_log(FP_LOG_WARN, "engine", "%s: %lld output(s) not acknowledged: %s", p->source,
           (long long)ack.failed, rd_kafka_err2str(ack.first_err));
    err = FP_ERR_KAFKA;
  }
  fp_ack_destroy(&ack);
  return err;
}

/* ---- processing ---- */

static int run_abandoned(fp_worker_t *w, fp_part_t *p) {
  return atomic_load(&p->revoked) == 2 || atomic_load(&w->e->fatal) || atomic_load(&w->e->stop);
}

/*
 * Sweeps: an open incident whose entity falls silent must still resolve. At most once a
 * second, the worker asks the store for incidents due by this partition's watermark and
 * appends a "time passes" signal for each at the run's last offset, so the resolution is
 * fenced and memoised with that offset like any other lifecycle step. The resolution itself
 * is dated at the due time (lifecycle.c), so it does not matter which worker finds it.
 * @returns the new signal count.
 */
static size_t add_sweeps(fp_worker_t *w, fp_part_t *p, size_t nsig, int64_t last_offset,
                         char ***keys_out, size_t *nkeys_out) {
  fp_batch_t *b = w->batch;
  int64_t now = fp_mono_ns(), wm = atomic_load(&p->max_event_ms);
  char errbuf[256], **keys = NULL;
  size_t n = 0;

  if (wm == INT64_MIN || now - w->last_sweep_ns < 1000000000LL) return nsig;
  w->last_sweep_ns = now;
  if (fp_store_lc_due(w->store, wm, 64, &keys, &n, errbuf, sizeof(errbuf)) != FP_OK) {
    fp_log_once(FP_LOG_WARN, "incidents", "listing due incidents failed: %s", errbuf);
    return nsig;
  }
  if (n && hits_reserve(b, nsig + n) != FP_OK) n = 0;
  for (size_t i = 0; i < n; i++) {
    const fp_rule_info_t *ri = NULL;
    char *bar = keys[i] ? strchr(keys[i], '|') : NULL;
    if (!bar) continue;
    *bar = '\0';
    for (size_t r = 0; r < fp_rules_count(w->rules) && !ri; r++)
      if (!strcmp(fp_rules_info(w->rules, r)->id, keys[i])) ri = fp_rules_info(w->rules, r);
    *bar = '|';
    if (!ri) {
      fp_log_once(FP_LOG_WARN, "incidents", "open incident %s belongs to a rule that is no longer "
                  "loaded; it stays open until the rule returns", keys[i]);
      continue;
    }
    fp_inc_signal_t *s = &b->sigs[nsig++];
    memset(s, 0, sizeof(*s));
    s->offset = last_offset;
    s->sig.sev = FP_SEV_NONE;
    s->sig.at_ms = wm;
    s->sig.rule = ri;
    s->sig.entity = bar + 1;
  }
  *keys_out = keys;
  *nkeys_out = n ? n : 0;
  if (!n) {
    free(keys);
    *keys_out = NULL;
  }
  return nsig;
}

/* Processes k messages of partition p (in offset order). */
static void process_run(fp_worker_t *w, fp_part_t *p, size_t k) {
  fp_engine_t *e = w->e;
  fp_batch_t *b = w->batch;
  char errbuf[512];
  fp_err_t err;
  size_t nrules = fp_rules_count(w->rules), nsig = 0, replayed = 0;
  int attempt;
  int64_t last_offset = b->nodes[k - 1]->msg->offset;
  int64_t committed = atomic_load(&p->committed);
  uint64_t ndlq = 0, nlate = 0, ndecoded = 0;
  unsigned nerrors = 0;
  char **sweep_keys = NULL;
  size_t nsweep = 0;
  fp_store_result_t res;
  fp_lc_params_t lcp = {0, e->conf->incident_hold_ms, e->conf->incident_grace_ms,
                        (size_t)e->conf->incident_samples};

  memset(&res, 0, sizeof(res));
  if (atomic_load(&p->revoked)) goto release; /* not ours any more: the next owner replays */

  fp_opvec_reset(&b->ops);
  fp_outvec_reset(&b->out);
  b->nhits = 0;
  for (size_t i = 0; i < k; i++) {
    rd_kafka_message_t *m = b->nodes[i]->msg;
    fp_mention_t *mt = &b->mentions[i];
    int64_t wm;
    size_t nh = 0;

    b->mrefs[i] = 0;
    memset(mt, 0, sizeof(*mt));
    b->derr[i] = fp_mention_decode(m->payload, m->len, (size_t)e->conf->input_max_bytes, mt,
                                   b->reason[i], sizeof(b->reason[i]));
    if (b->derr[i] != FP_OK) continue;
    ndecoded++;
    wm = atomic_load(&p->max_event_ms);
    if (wm != INT64_MIN && mt->created_at_ms < wm - e->conf->lateness_ms) {
      snprintf(b->reason[i], sizeof(b->reason[i]),
               "event time %lld ms is %lld ms behind the partition watermark (allowed lateness %lld ms)",
               (long long)mt->created_at_ms, (long long)(wm - mt->created_at_ms),
               (long long)e->conf->lateness_ms);
      b->derr[i] = FP_ERR_LATE;
      nlate++;
      fp_mention_clear(mt);
      continue;
    }
    if (wm == INT64_MIN || mt->created_at_ms > wm) atomic_store(&p->max_event_ms, mt->created_at_ms);
    if (hits_reserve(b, b->nhits + nrules) != FP_OK) goto nomem;
    fp_rules_select(w->rules, mt, m->offset, b->hits + b->nhits, b->caphits - b->nhits, &nh,
                    &b->ops, &b->mrefs[i], &nerrors);
    for (size_t h = 0; h < nh; h++) b->hit_msg[b->nhits + h] = i;
    b->nhits += nh;
  }

  /* one round trip for every window update of the run */
  for (attempt = 0;; attempt++) {
    int64_t t0 = fp_mono_ns();
    err = b->ops.n ? fp_store_apply(w->store, p->source, b->ops.ops, b->ops.n, committed, &res,
                                    errbuf, sizeof(errbuf))
                   : FP_OK;
    if (b->ops.n) fp_metrics_store_call(e->metrics, fp_mono_ns() - t0, err != FP_OK);
    atomic_fetch_add(&e->stats.redis_roundtrips, b->ops.n ? 1 : 0);
    if (err == FP_OK) break;
    atomic_fetch_add(&e->stats.redis_errors, 1);
    if (err != FP_ERR_REDIS) goto fatal;
    if (!atomic_exchange(&w->blocked, 1))
      fp_log(FP_LOG_WARN, "store", "state store unavailable (%s): pausing partitions of worker %d, retrying",
             errbuf, w->idx);
    if (run_abandoned(w, p)) goto release;
    backoff_sleep(attempt);
  }

  /* stage 2: severities, then the lifecycle */
  for (size_t h = 0; h < b->nhits; h++) {
    fp_rule_hit_t *hit = &b->hits[h];
    size_t mi = b->hit_msg[h];
    fp_sev_t sev = FP_SEV_NONE;
    const fp_rule_info_t *rinfo = fp_rules_info(w->rules, hit->rule);
    int was_quarantined = rinfo->quarantined;
    int64_t t0 = fp_mono_ns();
    fp_err_t serr = fp_rules_severity(w->rules, b->mrefs[mi], hit, b->ops.ops, &sev, errbuf, sizeof(errbuf));
    fp_metrics_rule_eval(w->rule_metrics[hit->rule], fp_mono_ns() - t0, serr != FP_OK,
                         serr == FP_OK && sev != FP_SEV_NONE);
    atomic_fetch_add(&e->stats.rule_evals, 1);
    if (!was_quarantined && rinfo->quarantined) fp_metrics_rule_quarantined(w->rule_metrics[hit->rule]);
    if (serr != FP_OK) {
      atomic_fetch_add(&e->stats.rule_errors, 1);
      continue;
    }
    fp_inc_signal_t *s = &b->sigs[nsig++];
    const fp_rule_info_t *ri = fp_rules_info(w->rules, hit->rule);
    memset(s, 0, sizeof(*s));
    s->offset = b->nodes[mi]->msg->offset;
    s->sig.sev = sev;
    s->sig.at_ms = b->mentions[mi].created_at_ms;
    s->sig.mention = &b->mentions[mi];
    s->sig.rule = ri;
    s->sig.entity = hit->entity;
    s->sig.values = b->ops.ops + hit->op_first;
    s->sig.nvalues = hit->op_count;
  }
  atomic_fetch_add(&e->stats.rule_errors, nerrors);
  nsig = add_sweeps(w, p, nsig, last_offset, &sweep_keys, &nsweep);
  for (attempt = 0;; attempt++) {
    int64_t t0 = fp_mono_ns();
    fp_outvec_reset(&b->out);
    err = fp_incidents_apply(w->store, p->source, &lcp, b->sigs, nsig, last_offset, committed,
                             e->conf->output_topic, &b->out, &replayed, errbuf, sizeof(errbuf));
    fp_metrics_store_call(e->metrics, fp_mono_ns() - t0, err != FP_OK);
    atomic_fetch_add(&e->stats.redis_roundtrips, 2);
    if (err == FP_OK) break;
    atomic_fetch_add(&e->stats.redis_errors, 1);
    if (err != FP_ERR_REDIS) goto fatal;
    if (!atomic_exchange(&w->blocked, 1))
      fp_log(FP_LOG_WARN, "store", "state store unavailable (%s): pausing partitions of worker %d, retrying",
             errbuf, w->idx);
    if (run_abandoned(w, p)) goto release;
    backoff_sleep(attempt);
  }

  for (attempt = 0;; attempt++) {
    if ((err = emit_run(w, p, b, k, &ndlq)) == FP_OK) break;
    if (!atomic_exchange(&w->blocked, 1))
      fp_log(FP_LOG_WARN, "engine", "%s: outputs not acknowledged: pausing and retrying", p->source);
    if (run_abandoned(w, p)) goto release;
    backoff_sleep(attempt);
  }
  if (atomic_exchange(&w->blocked, 0))
    fp_log(FP_LOG_INFO, "engine", "worker %d: state store and outputs healthy again, resuming", w->idx);

  /* everything the run caused is acknowledged: store its end (unless the partition was lost) */
  if (atomic_load(&p->revoked) != 2) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = last_offset + 1;
    rd_kafka_resp_err_t serr = rd_kafka_offsets_store(e->consumer, l);
    if (serr)
      fp_log(FP_LOG_WARN, "engine", "%s: storing offset %lld failed: %s", p->source,
             (long long)last_offset + 1, rd_kafka_err2str(serr));
    else
      atomic_fetch_add(&e->stats.offsets_stored, k);
    rd_kafka_topic_partition_list_destroy(l);
  }
  atomic_fetch_add(&e->stats.mentions_in, k);
  atomic_fetch_add(&e->stats.mentions_decoded, ndecoded);
  atomic_fetch_add(&e->stats.late, nlate);
  atomic_fetch_add(&e->stats.dead_lettered, ndlq);
  atomic_fetch_add(&e->stats.incidents, b->out.n);
  for (size_t i = 0; i < b->out.n; i++)
    fp_metrics_incident(e->metrics, b->out.recs[i].status, b->out.recs[i].severity);
  if (res.replayed) atomic_fetch_add(&e->stats.duplicates_fenced, res.replayed);
  goto release;

nomem:
  fp_log(FP_LOG_ERROR, "engine", "out of memory in worker %d", w->idx);
  atomic_store(&e->fatal, 1);
  goto release;
fatal:
  fp_log(FP_LOG_ERROR, "store", "fatal state store error: %s", errbuf);
  atomic_store(&e->fatal, 1);
release:
  for (size_t i = 0; i < nsweep; i++) free(sweep_keys[i]);
  free(sweep_keys);
  for (size_t i = 0; i < k; i++) {
    if (b->mrefs[i]) fp_rules_release(w->rules, b->mrefs[i]);
    b->mrefs[i] = 0;
    fp_mention_clear(&b->mentions[i]);
    rd_kafka_message_destroy(b->nodes[i]->msg);
    free(b->nodes[i]);
    b->nodes[i] = NULL;
  }
  atomic_fetch_sub(&p->inflight, (int64_t)k);
}

/* Points rule_metrics[i] at the registry series of rule i of the current rule set. */
static fp_err_t bind_rule_metrics(fp_worker_t *w) {
  size_t n = fp_rules_count(w->rules);
  fp_rule_metrics_t **rm = calloc(n ? n : 1, sizeof(*rm));
  if (!rm) return FP_ERR_NOMEM;
  for (size_t i = 0; i < n; i++) rm[i] = fp_metrics_rule(w->e->metrics, fp_rules_info(w->rules, i)->id);
  free(w->rule_metrics);
  w->rule_metrics = rm;
  return FP_OK;
}

static void maybe_reload(fp_worker_t *w) {
  char errbuf[512];
  fp_rules_t *n;
  if (!atomic_exchange(&w->reload, 0)) return;
  if (!(n = fp_rules_new(w->e->conf->rules_dir, &w->e->limits, errbuf, sizeof(errbuf)))) {
    fp_log(FP_LOG_ERROR, "rules", "reload failed, keeping the running rules: %s", errbuf);
    return;
  }
  fp_rules_destroy(w->rules);
  w->rules = n;
  if (bind_rule_metrics(w) != FP_OK) atomic_store(&w->e->fatal, 1);
  if (w->idx == 0) fp_log(FP_LOG_INFO, "rules", "reloaded %zu rule(s)", fp_rules_count(n));
}

static void *worker_main(void *arg) {
  fp_worker_t *w = arg;
  size_t max = (size_t)w->e->conf->batch_size;
  fp_qnode_t **taken = calloc(max, sizeof(*taken));

  if (!taken || batch_reserve(w->batch, max) != FP_OK) {
    atomic_store(&w->e->fatal, 1);
    free(taken);
    return NULL;
  }
  for (;;) {
    size_t n = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->head && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
    if (!w->head && w->stopping) {
      pthread_mutex_unlock(&w->mu);
      break;
    }
    while (w->head && n < max) {
      taken[n++] = w->head;
      w->head = w->head->next;
      w->qlen--;
    }
    if (!w->head) w->tail = NULL;
    pthread_mutex_unlock(&w->mu);

    maybe_reload(w);
    /* partition runs, each in offset order; the first node of each run marks the partition */
    for (size_t i = 0; i < n; i++) {
      fp_part_t *p;
      size_t k = 0;
      if (!taken[i]) continue;
      p = taken[i]->part;
      for (size_t j = i; j < n; j++) {
        if (taken[j] && taken[j]->part == p) {
          w->batch->nodes[k++] = taken[j];
          taken[j] = NULL;
        }
      }
      process_run(w, p, k);
    }
  }
  free(taken);
  return NULL;
}

fp_err_t fp_worker_init(fp_worker_t *w, fp_engine_t *e, int idx, char *errstr, size_t es) {
  memset(w, 0, sizeof(*w));
  w->e = e;
  w->idx = idx;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (!(w->batch = calloc(1, sizeof(*w->batch)))) return FP_ERR_NOMEM;
  if (!(w->rules = fp_rules_new(e->conf->rules_dir, &e->limits, errstr, es))) return FP_ERR_RULE_LOAD;
  if (bind_rule_metrics(w) != FP_OK) return FP_ERR_NOMEM;
  if (e->conf->backend == FP_BACKEND_MEMORY) {
    if (e->nworkers > 1 && idx == 0)
      fp_log(FP_LOG_WARN, "store", "store.backend=memory with %zu workers: each worker keeps its own "
             "windows; use workers=1 for exact results", e->nworkers);
    if ((w->store = fp_store_mem_new(errstr, es))) fp_store_set_lateness(w->store, e->conf->lateness_ms);
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
    w->store = fp_store_redis_new(&rc, errstr, es);
  }
  return w->store ? FP_OK : FP_ERR_REDIS;
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
  free(w->rule_metrics);
  fp_rules_destroy(w->rules);
  fp_store_destroy(w->store);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  w->e = NULL;
}
