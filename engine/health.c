/*
 * health.c - owns the engine's health verdicts (/healthz, /readyz) and the signals behind
 * them that no other module keeps: Kafka broker state and consumer lag (from librdkafka's
 * statistics and error callbacks) and a Redis probe.
 *
 * Liveness is "the run loop turns": the run thread stamps e->heartbeat_ns every turn (at
 * most 50 ms apart, at most ~30 s apart while a revoke drains), so a stamp older than
 * FP_HEALTH_STALL_MS means the loop is stuck and restarting the process is the cure.
 *
 * Readiness is "this instance does useful work now", and every check says why it failed:
 *   engine   the run loop has started and is not stopping;
 *   rules    at least one rule is loaded and not every rule is quarantined in every worker;
 *   store    the probe's PING is answered (store.backend=redis);
 *   workers  no worker is blocked (its store round trip or its outputs keep failing, so its
 *            partitions are paused);
 *   kafka    neither client has all its brokers down.
 * An instance with no partition assigned is ready: in a group larger than the partition
 * count the spare instances are idle by design, and restarting them would not help.
 *
 * The probe has its own thread and its own hiredis connection: contexts are per thread, and
 * the HTTP thread must never wait on Redis. Broker state: ALL_BROKERS_DOWN (error callback)
 * sets the client's flag; only a statistics report with a broker UP clears it, so with
 * statistics.interval.ms=0 the flag is never set (it could never be cleared).
 * Nothing here logs per request; state changes are logged once, when they happen.
 */
#include "health.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "engine_int.h"
#include "log.h"

/* ------------------------------------------------------------------------------------------ */
/* Kafka callbacks                                                                              */

static int client_index(rd_kafka_t *rk) { return rd_kafka_type(rk) == RD_KAFKA_CONSUMER ? 0 : 1; }
static const char *const client_names[] = {"consumer", "producer"};

/* Adds the lag of every assigned partition of the consumer statistics @p topics to @p out. */
static size_t collect_lags(fp_engine_t *e, json_t *topics, fp_lag_t **out) {
  const char *tname, *pname;
  json_t *t, *p;
  size_t n = 0, cap = 0;
  fp_lag_t *v = NULL;

  json_object_foreach(topics, tname, t) {
    json_object_foreach(json_object_get(t, "partitions"), pname, p) {
      int64_t part, lag;
      fp_part_t *fp;
      if (fp_parse_i64(pname, 0, INT32_MAX, &part) != FP_OK) continue; /* -1: the UA partition */
      if (!json_is_integer(json_object_get(p, "consumer_lag"))) continue;
      lag = json_integer_value(json_object_get(p, "consumer_lag"));
      if (lag < 0) continue; /* unknown: nothing committed or no end offset yet */
      fp = fp_engine_part(e, tname, (int32_t)part, 0);
      if (!fp || atomic_load(&fp->revoked)) continue; /* not ours: its lag is someone else's */
      if (n == cap) {
        fp_lag_t *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));
        if (!nv) break;
        v = nv;
      }
      snprintf(v[n].topic, sizeof(v[n].topic), "%s", tname);
      v[n].partition = (int32_t)part;
      v[n].lag = lag;
      n++;
    }
  }
  *out = v;
  return n;
}

int fp_health_stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) {
  fp_engine_t *e = opaque;
  int c = client_index(rk), up = 0;
  json_error_t jerr;
  json_t *root = json_loadb(json, json_len, 0, &jerr), *b;
  const char *bname;

  if (!root) {
    fp_log_once(FP_LOG_WARN, "kafka", "cannot parse librdkafka statistics: %s", jerr.text);
    return 0;
  }
  json_object_foreach(json_object_get(root, "brokers"), bname, b) {
    const char *source = json_string_value(json_object_get(b, "source"));
    const char *state = json_string_value(json_object_get(b, "state"));
    if (source && (!strcmp(source, "internal") || !strcmp(source, "logical"))) continue;
    if (state && (!strcmp(state, "UP") || !strcmp(state, "UPDATE"))) up++;
  }
  atomic_store(&e->kafka_brokers_up[c], up);
  if (up > 0 && atomic_exchange(&e->kafka_down[c], 0))
    fp_log(FP_LOG_INFO, "kafka", "%s: %d broker(s) up again", client_names[c], up);
  if (c == 0) {
    fp_lag_t *lags = NULL;
    size_t n = collect_lags(e, json_object_get(root, "topics"), &lags);
    if (fp_metrics_set_lags(e->metrics, lags, n) != FP_OK)
      fp_log_once(FP_LOG_WARN, "kafka", "out of memory recording consumer lag");
    free(lags);
  }
  json_decref(root);
  return 0;
}

void fp_health_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  fp_engine_t *e = opaque;
  int c = client_index(rk);

  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    if (e->kafka_stats_ms[c] > 0 && !atomic_exchange(&e->kafka_down[c], 1))
      fp_log(FP_LOG_WARN, "kafka", "%s: all brokers are down (%s); not ready until one is back",
             client_names[c], reason);
    else if (e->kafka_stats_ms[c] <= 0)
      fp_log(FP_LOG_WARN, "kafka", "%s: all brokers are down (%s)", client_names[c], reason);
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char buf[512];
    rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
    fp_log(FP_LOG_ERROR, "kafka", "%s: fatal error %s: %s; stopping", client_names[c],
           rd_kafka_err2name(orig), buf);
    atomic_store(&e->fatal, 1);
    return;
  }
  fp_log(FP_LOG_WARN, "kafka", "%s: %s: %s", client_names[c],
         rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* ------------------------------------------------------------------------------------------ */
/* Redis probe                                                                                  */

struct fp_probe_s {
  fp_engine_t *e;        /* borrowed */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;              /* under mu */
  int state;             /* under mu: 1 answered, 0 failed, -1 not probed yet */
  char detail[256];      /* under mu */
  redisContext *ctx;     /* probe thread only */
};

static void probe_set(fp_probe_t *p, int ok, const char *detail) {
  int was;
  pthread_mutex_lock(&p->mu);
  was = p->state;
  p->state = ok;
  snprintf(p->detail, sizeof(p->detail), "%s", detail);
  pthread_mutex_unlock(&p->mu);
  if (was != 0 && !ok)
    fp_log(FP_LOG_WARN, "store", "health probe: %s", detail);
  else if (was == 0 && ok)
    fp_log(FP_LOG_INFO, "store", "health probe: redis answers again");
}

/* One probe round: (re)connect if needed, AUTH and PING. The password is never logged.
 * @returns 1 if a connection that had worked before was found broken (retry at once: Redis
 * may be back and the stale connection would report it down for another round). */
static int probe_once(fp_probe_t *p) {
  const fp_conf_t *c = p->e->conf;
  char detail[256];
  redisReply *r;
  int stale = p->ctx != NULL;

  if (!p->ctx) {
    struct timeval ct = {(time_t)(c->redis_connect_timeout_ms / 1000),
                         (suseconds_t)(c->redis_connect_timeout_ms % 1000) * 1000};
    struct timeval rt = {(time_t)(c->redis_timeout_ms / 1000),
                         (suseconds_t)(c->redis_timeout_ms % 1000) * 1000};
    p->ctx = redisConnectWithTimeout(c->redis_host, (int)c->redis_port, ct);
    if (!p->ctx || p->ctx->err) {
      snprintf(detail, sizeof(detail), "redis %s:%d unreachable: %s", c->redis_host,
               (int)c->redis_port, p->ctx ? p->ctx->errstr : "out of memory");
      goto fail;
    }
    redisSetTimeout(p->ctx, rt);
    if (c->redis_password && *c->redis_password) {
      r = redisCommand(p->ctx, "AUTH %s", c->redis_password);
      if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(detail, sizeof(detail), "redis %s:%d refused AUTH%s", c->redis_host,
                 (int)c->redis_port, r ? "" : " (connection lost)");
        freeReplyObject(r);
        goto fail;
      }
      freeReplyObject(r);
    }
  }
  r = redisCommand(p->ctx, "PING");
  if (!r) {
    snprintf(detail, sizeof(detail), "redis %s:%d: %s", c->redis_host, (int)c->redis_port,
             p->ctx->errstr);
    redisFree(p->ctx);
    p->ctx = NULL;
    if (!stale) {
      probe_set(p, 0, detail);
      return 0;
    }
    return 1;
  }
  if (r->type == REDIS_REPLY_ERROR) { /* LOADING, MASTERDOWN, NOAUTH...: up but not usable */
    snprintf(detail, sizeof(detail), "redis %s:%d answers PING with an error: %.120s",
             c->redis_host, (int)c->redis_port, r->str ? r->str : "");
    freeReplyObject(r);
    probe_set(p, 0, detail);
    return 0;
  }
  freeReplyObject(r);
  snprintf(detail, sizeof(detail), "redis %s:%d answers PING", c->redis_host, (int)c->redis_port);
  probe_set(p, 1, detail);
  return 0;
fail:
  if (p->ctx) redisFree(p->ctx);
  p->ctx = NULL;
  probe_set(p, 0, detail);
  return 0;
}

static void *probe_main(void *arg) {
  fp_probe_t *p = arg;
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    struct timespec until;
    pthread_mutex_unlock(&p->mu);
    if (probe_once(p)) probe_once(p); /* a stale connection: try a fresh one at once */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_mutex_lock(&p->mu);
    while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0) {
    }
  }
  pthread_mutex_unlock(&p->mu);
  if (p->ctx) redisFree(p->ctx);
  p->ctx = NULL;
  return NULL;
}

fp_probe_t *fp_probe_start(fp_engine_t *e, char *errstr, size_t es) {
  fp_probe_t *p = calloc(1, sizeof(*p));
  if (!p) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return NULL;
  }
  p->e = e;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (e->conf->backend == FP_BACKEND_MEMORY) {
    p->state = 1;
    snprintf(p->detail, sizeof(p->detail), "in-process store (store.backend=memory)");
    return p;
  }
  p->state = -1;
  snprintf(p->detail, sizeof(p->detail), "redis not probed yet");
  if (pthread_create(&p->thread, NULL, probe_main, p) != 0) {
    fp_seterr(errstr, es, FP_ERR_FATAL, "cannot start the redis health probe thread");
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    return NULL;
  }
  return p;
}

void fp_probe_stop(fp_probe_t *p) {
  if (!p) return;
  if (p->e->conf->backend != FP_BACKEND_MEMORY) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

int fp_probe_state(fp_probe_t *p, char *detail, size_t ds) {
  int s;
  if (!p) return -1;
  pthread_mutex_lock(&p->mu);
  s = p->state;
  if (detail && ds) snprintf(detail, ds, "%s", p->detail);
  pthread_mutex_unlock(&p->mu);
  return s;
}

/* ------------------------------------------------------------------------------------------ */
/* verdicts                                                                                     */

/* Adds {"ok": ok, "detail": detail} under @p name; @returns ok. */
static int check(json_t *checks, const char *name, int ok, const char *detail) {
  json_t *c = json_object();
  json_object_set_new(c, "ok", json_boolean(ok));
  json_object_set_new(c, "detail", json_string(detail));
  json_object_set_new(checks, name, c);
  return ok;
}

/* Serialises @p root (taken over) into @p out. */
static void emit(json_t *root, fp_buf_t *out) {
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!out) {
    free(s);
    return;
  }
  if (s) {
    fp_buf_append(out, s, strlen(s));
    fp_buf_append(out, "\n", 1);
    free(s);
  } else {
    fp_buf_printf(out, "{\"error\":\"out of memory\"}\n");
  }
}

int fp_health_live(fp_engine_t *e, fp_buf_t *out) {
  int64_t hb = atomic_load(&e->heartbeat_ns), age_ms = hb ? (fp_mono_ns() - hb) / 1000000 : 0;
  int alive = !hb || age_ms < FP_HEALTH_STALL_MS;
  char detail[160];
  json_t *root = json_object();

  if (!hb) snprintf(detail, sizeof(detail), "starting: the run loop has not started yet");
  else if (alive) snprintf(detail, sizeof(detail), "run loop turned %lld ms ago", (long long)age_ms);
  else snprintf(detail, sizeof(detail), "run loop stalled: last turn %lld s ago (limit %d s)",
                (long long)(age_ms / 1000), FP_HEALTH_STALL_MS / 1000);
  json_object_set_new(root, "alive", json_boolean(alive));
  json_object_set_new(root, "detail", json_string(detail));
  emit(root, out);
  return alive ? 200 : 503;
}

int fp_health_ready(fp_engine_t *e, fp_probe_t *probe, fp_buf_t *out) {
  json_t *root = json_object(), *checks = json_object(), *failed = json_array();
  char detail[320];
  int ready = 1, ok;
  size_t nrules, nquar, blocked = 0, assigned = 0;
  int first_blocked = -1;

  /* engine */
  if (atomic_load(&e->fatal)) ok = check(checks, "engine", 0, "fatal error: stopping");
  else if (atomic_load(&e->stop)) ok = check(checks, "engine", 0, "stopping: draining workers");
  else if (!atomic_load(&e->heartbeat_ns)) ok = check(checks, "engine", 0, "starting: not consuming yet");
  else {
    pthread_mutex_lock(&e->parts_mu);
    for (fp_part_t *p = e->parts; p; p = p->next) assigned += !atomic_load(&p->revoked);
    pthread_mutex_unlock(&e->parts_mu);
    snprintf(detail, sizeof(detail), "consuming; %zu partition(s) assigned", assigned);
    ok = check(checks, "engine", 1, detail);
  }
  if (!ok) json_array_append_new(failed, json_string("engine")), ready = 0;

  /* rules */
  fp_metrics_rules_state(e->metrics, (int64_t)e->nworkers, &nrules, &nquar);
  if (!nrules) ok = check(checks, "rules", 0, "no rule loaded");
  else if (nquar == nrules) {
    snprintf(detail, sizeof(detail), "all %zu rule(s) quarantined in every worker; fix them and "
             "reload (SIGHUP)", nrules);
    ok = check(checks, "rules", 0, detail);
  } else {
    snprintf(detail, sizeof(detail), "%zu rule(s) loaded, %zu quarantined everywhere", nrules, nquar);
    ok = check(checks, "rules", 1, detail);
  }
  if (!ok) json_array_append_new(failed, json_string("rules")), ready = 0;

  /* store */
  if (probe) {
    int s = fp_probe_state(probe, detail, sizeof(detail));
    ok = check(checks, "store", s == 1, detail);
    if (!ok) json_array_append_new(failed, json_string("store")), ready = 0;
  }

  /* workers */
  for (size_t i = 0; i < e->nworkers; i++)
    if (atomic_load(&e->workers[i].blocked)) {
      if (first_blocked < 0) first_blocked = (int)i;
      blocked++;
    }
  if (blocked) {
    snprintf(detail, sizeof(detail), "%zu of %zu worker(s) blocked (first: worker %d): the state "
             "store or the output topics keep failing; their partitions are paused",
             blocked, e->nworkers, first_blocked);
    ok = check(checks, "workers", 0, detail);
  } else {
    snprintf(detail, sizeof(detail), "%zu worker(s), none blocked", e->nworkers);
    ok = check(checks, "workers", 1, detail);
  }
  if (!ok) json_array_append_new(failed, json_string("workers")), ready = 0;

  /* kafka */
  {
    int cdown = atomic_load(&e->kafka_down[0]), pdown = atomic_load(&e->kafka_down[1]);
    int cup = atomic_load(&e->kafka_brokers_up[0]), pup = atomic_load(&e->kafka_brokers_up[1]);
    if (cdown || pdown)
      snprintf(detail, sizeof(detail), "all brokers down for the %s", cdown && pdown ? "consumer and the producer"
               : cdown ? "consumer" : "producer");
    else if (cup < 0 || pup < 0)
      snprintf(detail, sizeof(detail), "no broker reported down (statistics not received yet)");
    else
      snprintf(detail, sizeof(detail), "brokers up: consumer %d, producer %d", cup, pup);
    ok = check(checks, "kafka", !cdown && !pdown, detail);
    if (!ok) json_array_append_new(failed, json_string("kafka")), ready = 0;
  }

  json_object_set_new(root, "ready", json_boolean(ready));
  json_object_set_new(root, "failed", failed);
  json_object_set_new(root, "checks", checks);
  emit(root, out);
  return ready ? 200 : 503;
}
