/*
 * metrics.c - owns the metric registry (see metrics.h).
 *
 * Counters are _Atomic uint64_t updated with relaxed ordering: a scrape may see one counter
 * a moment ahead of another, never a torn value. Histograms have fixed buckets (cumulative
 * counts are computed at render time). Per-rule series sit in a mutex-protected list that
 * only grows: lookups happen when a worker (re)loads its rules, never per mention. The
 * consumer lag table is replaced whole by each librdkafka statistics report (health.c), under
 * the same mutex, so a scrape sees one report, never a mix of two.
 */
#include "metrics.h"

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define FP_HIST_MAX 16

typedef struct fp_hist_s {
  const double *bounds; /* seconds, ascending; +Inf implied */
  size_t nb;
  _Atomic uint64_t buckets[FP_HIST_MAX + 1];
  _Atomic uint64_t sum_ns, count;
} fp_hist_t;

static const double eval_bounds[] = {1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 1e-1, 1.0};
static const double store_bounds[] = {1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5};

struct fp_rule_metrics_s {
  char *id;
  _Atomic uint64_t evals, fires, errors, quarantines;
  _Atomic int64_t quarantined_now; /* worker rule sets in which the rule is quarantined */
  fp_hist_t eval_time;
  struct fp_rule_metrics_s *next;
};

static const char *const fp_statuses[] = {"opened", "escalated", "deescalated", "reopened", "resolved", "postmortem"};
static const char *const fp_sevs[] = {"sev1", "sev2", "sev3", "sev4", "none"};
#define NSTATUS (sizeof(fp_statuses) / sizeof(fp_statuses[0]))
#define NSEV (sizeof(fp_sevs) / sizeof(fp_sevs[0]))

struct fp_metrics_s {
  pthread_mutex_t mu;
  fp_rule_metrics_t *rules;
  _Atomic uint64_t incidents[NSTATUS][NSEV];
  _Atomic uint64_t store_errors;
  fp_hist_t store_time;
  fp_lag_t *lags; /* consumer lag per partition, replaced whole by each statistics report */
  size_t nlags;
};

static void hist_init(fp_hist_t *h, const double *bounds, size_t nb) {
  h->bounds = bounds;
  h->nb = nb;
}

static void hist_observe(fp_hist_t *h, int64_t ns) {
  double s = (double)ns / 1e9;
  size_t i = 0;
  while (i < h->nb && s > h->bounds[i]) i++;
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(ns > 0 ? ns : 0), memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

fp_metrics_t *fp_metrics_new(void) {
  fp_metrics_t *m = calloc(1, sizeof(*m));
  if (!m) return NULL;
  pthread_mutex_init(&m->mu, NULL);
  hist_init(&m->store_time, store_bounds, sizeof(store_bounds) / sizeof(store_bounds[0]));
  return m;
}

void fp_metrics_destroy(fp_metrics_t *m) {
  if (!m) return;
  while (m->rules) {
    fp_rule_metrics_t *n = m->rules->next;
    free(m->rules->id);
    free(m->rules);
    m->rules = n;
  }
  free(m->lags);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

fp_rule_metrics_t *fp_metrics_rule(fp_metrics_t *m, const char *id) {
  fp_rule_metrics_t *r;
  if (!m || !id) return NULL;
  pthread_mutex_lock(&m->mu);
  for (r = m->rules; r; r = r->next)
    if (!strcmp(r->id, id)) break;
  if (!r && (r = calloc(1, sizeof(*r)))) {
    if (!(r->id = strdup(id))) {
      free(r);
      r = NULL;
    } else {
      hist_init(&r->eval_time, eval_bounds, sizeof(eval_bounds) / sizeof(eval_bounds[0]));
      r->next = m->rules;
      m->rules = r;
    }
  }
  pthread_mutex_unlock(&m->mu);
  return r;
}

void fp_metrics_rule_eval(fp_rule_metrics_t *r, int64_t ns, int failed, int fired) {
  if (!r) return;
  atomic_fetch_add_explicit(&r->evals, 1, memory_order_relaxed);
  if (failed) atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
  if (fired) atomic_fetch_add_explicit(&r->fires, 1, memory_order_relaxed);
  hist_observe(&r->eval_time, ns);
}

void fp_metrics_rule_errors(fp_rule_metrics_t *r, uint64_t n) {
  if (r && n) atomic_fetch_add_explicit(&r->errors, n, memory_order_relaxed);
}

void fp_metrics_rule_quarantined(fp_rule_metrics_t *r) {
  if (!r) return;
  atomic_fetch_add_explicit(&r->quarantines, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&r->quarantined_now, 1, memory_order_relaxed);
}

void fp_metrics_rule_unquarantined(fp_rule_metrics_t *r) {
  if (r && atomic_fetch_sub_explicit(&r->quarantined_now, 1, memory_order_relaxed) <= 0)
    atomic_fetch_add_explicit(&r->quarantined_now, 1, memory_order_relaxed); /* never below 0 */
}

void fp_metrics_rules_state(fp_metrics_t *m, int64_t nworkers, size_t *nrules, size_t *nquarantined) {
  *nrules = *nquarantined = 0;
  if (!m) return;
  pthread_mutex_lock(&m->mu);
  for (fp_rule_metrics_t *r = m->rules; r; r = r->next) {
    (*nrules)++;
    if (atomic_load(&r->quarantined_now) >= (nworkers > 0 ? nworkers : 1)) (*nquarantined)++;
  }
  pthread_mutex_unlock(&m->mu);
}

fp_err_t fp_metrics_set_lags(fp_metrics_t *m, const fp_lag_t *lags, size_t n) {
  fp_lag_t *copy = NULL;
  if (!m) return FP_ERR_INVALID_ARG;
  if (n && !(copy = malloc(n * sizeof(*copy)))) return FP_ERR_NOMEM;
  if (n) memcpy(copy, lags, n * sizeof(*copy));
  pthread_mutex_lock(&m->mu);
  free(m->lags);
  m->lags = copy;
  m->nlags = n;
  pthread_mutex_unlock(&m->mu);
  return FP_OK;
}

static size_t index_of(const char *const *names, size_t n, const char *s) {
  for (size_t i = 0; s && i < n; i++)
    if (!strcmp(names[i], s)) return i;
  return n;
}

void fp_metrics_incident(fp_metrics_t *m, const char *status, const char *severity) {
  size_t si = index_of(fp_statuses, NSTATUS, status), vi = index_of(fp_sevs, NSEV, severity);
  if (!m || si == NSTATUS) return;
  if (vi == NSEV) vi = NSEV - 1;
  atomic_fetch_add_explicit(&m->incidents[si][vi], 1, memory_order_relaxed);
}

void fp_metrics_store_call(fp_metrics_t *m, int64_t ns, int failed) {
  if (!m) return;
  if (failed) atomic_fetch_add_explicit(&m->store_errors, 1, memory_order_relaxed);
  hist_observe(&m->store_time, ns);
}

/* Prometheus label values escape \, " and newline. */
static void label_value(fp_buf_t *out, const char *s) {
  for (; *s; s++) {
    if (*s == '\\' || *s == '"') fp_buf_append(out, "\\", 1);
    if (*s == '\n') fp_buf_append(out, "\\n", 2);
    else fp_buf_append(out, s, 1);
  }
}

static void hist_render(fp_buf_t *out, const char *name, const char *lname, const char *lval,
                        fp_hist_t *h) {
  uint64_t cum = 0;
  for (size_t i = 0; i <= h->nb; i++) {
    cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    fp_buf_printf(out, "%s_bucket{", name);
    if (lname) {
      fp_buf_printf(out, "%s=\"", lname);
      label_value(out, lval);
      fp_buf_append(out, "\",", 2);
    }
    if (i < h->nb) fp_buf_printf(out, "le=\"%g\"} %llu\n", h->bounds[i], (unsigned long long)cum);
    else fp_buf_printf(out, "le=\"+Inf\"} %llu\n", (unsigned long long)cum);
  }
  fp_buf_printf(out, "%s_sum", name);
  if (lname) {
    fp_buf_printf(out, "{%s=\"", lname);
    label_value(out, lval);
    fp_buf_append(out, "\"}", 2);
  }
  fp_buf_printf(out, " %.9f\n", (double)atomic_load(&h->sum_ns) / 1e9);
  fp_buf_printf(out, "%s_count", name);
  if (lname) {
    fp_buf_printf(out, "{%s=\"", lname);
    label_value(out, lval);
    fp_buf_append(out, "\"}", 2);
  }
  fp_buf_printf(out, " %llu\n", (unsigned long long)atomic_load(&h->count));
}

static void rule_counter(fp_buf_t *out, fp_metrics_t *m, const char *name, const char *help,
                         size_t off) {
  fp_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
  for (fp_rule_metrics_t *r = m->rules; r; r = r->next) {
    fp_buf_printf(out, "%s{rule=\"", name);
    label_value(out, r->id);
    fp_buf_printf(out, "\"} %llu\n",
                  (unsigned long long)atomic_load((_Atomic uint64_t *)(void *)((char *)r + off)));
  }
}

fp_err_t fp_metrics_render(fp_metrics_t *m, fp_buf_t *out) {
  pthread_mutex_lock(&m->mu);
  rule_counter(out, m, "flashpoint_rule_evaluations_total", "Rule severity evaluations.",
               offsetof(fp_rule_metrics_t, evals));
  rule_counter(out, m, "flashpoint_rule_fires_total", "Evaluations that returned a severity.",
               offsetof(fp_rule_metrics_t, fires));
  rule_counter(out, m, "flashpoint_rule_errors_total",
               "Evaluations that failed (error, budget, memory).", offsetof(fp_rule_metrics_t, errors));
  rule_counter(out, m, "flashpoint_rule_quarantines_total", "Times a rule was quarantined.",
               offsetof(fp_rule_metrics_t, quarantines));
  fp_buf_printf(out, "# HELP flashpoint_rule_eval_seconds Time of one severity evaluation.\n"
                     "# TYPE flashpoint_rule_eval_seconds histogram\n");
  for (fp_rule_metrics_t *r = m->rules; r; r = r->next)
    hist_render(out, "flashpoint_rule_eval_seconds", "rule", r->id, &r->eval_time);
  fp_buf_printf(out, "# HELP flashpoint_rule_quarantined Worker rule sets in which the rule is "
                     "quarantined now.\n# TYPE flashpoint_rule_quarantined gauge\n");
  for (fp_rule_metrics_t *r = m->rules; r; r = r->next) {
    fp_buf_printf(out, "flashpoint_rule_quarantined{rule=\"");
    label_value(out, r->id);
    fp_buf_printf(out, "\"} %lld\n", (long long)atomic_load(&r->quarantined_now));
  }
  fp_buf_printf(out, "# HELP flashpoint_consumer_lag_messages Messages behind the partition end "
                     "(committed offset), from librdkafka statistics.\n"
                     "# TYPE flashpoint_consumer_lag_messages gauge\n");
  for (size_t i = 0; i < m->nlags; i++) {
    fp_buf_printf(out, "flashpoint_consumer_lag_messages{topic=\"");
    label_value(out, m->lags[i].topic);
    fp_buf_printf(out, "\",partition=\"%d\"} %lld\n", (int)m->lags[i].partition,
                  (long long)m->lags[i].lag);
  }
  pthread_mutex_unlock(&m->mu);

  fp_buf_printf(out, "# HELP flashpoint_incident_events_total Incident events acknowledged by Kafka.\n"
                     "# TYPE flashpoint_incident_events_total counter\n");
  for (size_t s = 0; s < NSTATUS; s++)
    for (size_t v = 0; v < NSEV; v++) {
      uint64_t n = atomic_load(&m->incidents[s][v]);
      if (n) fp_buf_printf(out, "flashpoint_incident_events_total{status=\"%s\",severity=\"%s\"} %llu\n",
                           fp_statuses[s], fp_sevs[v], (unsigned long long)n);
    }
  fp_buf_printf(out, "# HELP flashpoint_store_errors_total Failed state-store round trips.\n"
                     "# TYPE flashpoint_store_errors_total counter\nflashpoint_store_errors_total %llu\n",
                (unsigned long long)atomic_load(&m->store_errors));
  fp_buf_printf(out, "# HELP flashpoint_store_seconds State-store round-trip latency.\n"
                     "# TYPE flashpoint_store_seconds histogram\n");
  hist_render(out, "flashpoint_store_seconds", NULL, NULL, &m->store_time);
  return out->data ? FP_OK : FP_ERR_NOMEM;
}
