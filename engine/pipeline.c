/*
 * pipeline.c - owns the evaluation of a partition run (see pipeline.h): the rule set, the
 * state-store connection, and the per-run scratch arrays (grown, never shrunk, so a steady
 * stream allocates nothing per mention beyond the mention documents themselves).
 *
 * Steps of a run: decode each input (bad -> status and reason, for the dead-letter topic);
 * drop mentions later than the watermark minus windows.lateness (status FP_ERR_LATE); rules
 * stage 1 (window ops); ONE store round trip for every window op of the run; rules stage 2
 * (severities); the lifecycle with sweeps of incidents due by the watermark (incidents.c). A
 * retriable store failure asks the caller's retry callback whether to try the step again;
 * nothing of an abandoned run is reported and the watermark does not move.
 */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jarena.h"
#include "lifecycle.h"
#include "log.h"
#include "mapping.h"
#include "mention.h"
#include "util.h"

/* One run between its stage 1 (decode, rules stage 1: fp_pipeline_prepare) and the rest
 * (fp_pipeline_finish): what the run's mentions, hits and window ops hold. A pipeline has two,
 * so the worker can prepare its next run while the store applies this one. */
typedef struct fp_run_s {
  fp_mention_t *mentions;
  int *mrefs;
  fp_err_t *status;
  char (*reason)[256];
  int64_t *offsets;
  size_t cap, n;
  fp_rule_hit_t *hits;
  size_t *hit_in;
  fp_inc_signal_t *sigs;
  size_t nhits, caphits;
  fp_opvec_t ops;
  fp_jarena_t *arena; /* the run's mention documents (jarena.h); rewound by release_run */
  char source[320];   /* the run's source, and its topic (without ":partition") */
  char topic[256];
  int64_t wm;         /* the watermark after the run's inputs */
  size_t decoded, late;
  unsigned nerrors;   /* rule failures of stage 1 */
  int prepared;       /* stage 1 done, the run not finished */
} fp_run_t;

struct fp_pipeline_s {
  char *rules_dir;
  fp_rules_limits_t limits;
  size_t max_bytes;
  int64_t lateness_ms;
  fp_lc_params_t lcp;
  char *output_topic;
  fp_rules_t *rules;
  fp_store_t *store;
  fp_metrics_t *metrics;
  fp_rule_metrics_t **rule_metrics; /* per rule index; series owned by metrics */
  uint64_t *seen_failures;          /* per rule index: failures already in the metrics */
  int *seen_quarantined;            /* per rule index: quarantine already in the metrics */
  fp_run_t runs[FP_PIPELINE_SLOTS];
  fp_outvec_t events;
  fp_mapping_set_t *maps; /* schema mappings per input topic, NULL for none */
  fp_buf_t mapped;        /* the current input after mapping */
};

static fp_err_t bind_rule_metrics(fp_pipeline_t *p) {
  size_t n = fp_rules_count(p->rules);
  fp_rule_metrics_t **rm = calloc(n ? n : 1, sizeof(*rm));
  uint64_t *sf = calloc(n ? n : 1, sizeof(*sf));
  int *sq = calloc(n ? n : 1, sizeof(*sq));
  if (!rm || !sf || !sq) {
    free(rm), free(sf), free(sq);
    return FP_ERR_NOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const fp_rule_info_t *ri = fp_rules_info(p->rules, i);
    if (p->metrics) rm[i] = fp_metrics_rule(p->metrics, ri->id);
    sf[i] = ri->failures;
    sq[i] = ri->quarantined;
  }
  free(p->rule_metrics), free(p->seen_failures), free(p->seen_quarantined);
  p->rule_metrics = rm;
  p->seen_failures = sf;
  p->seen_quarantined = sq;
  return FP_OK;
}

/* Brings the rule metrics up to the rule set's own counters: failures and quarantines of the
 * select stage (key, when, window values), which are not timed one by one; stage 2 reports
 * its own as it goes, so this also runs after it, only to move the marks. */
static void sync_rule_failures(fp_pipeline_t *p, int report) {
  for (size_t r = 0; r < fp_rules_count(p->rules); r++) {
    const fp_rule_info_t *ri = fp_rules_info(p->rules, r);
    if (report && ri->failures > p->seen_failures[r])
      fp_metrics_rule_errors(p->rule_metrics[r], ri->failures - p->seen_failures[r]);
    if (report && ri->quarantined && !p->seen_quarantined[r])
      fp_metrics_rule_quarantined(p->rule_metrics[r]);
    p->seen_failures[r] = ri->failures;
    p->seen_quarantined[r] = ri->quarantined;
  }
}

fp_pipeline_t *fp_pipeline_new(const fp_conf_t *conf, const fp_rules_limits_t *limits,
                               fp_store_t *store, fp_metrics_t *metrics, char *errstr,
                               size_t es) {
  fp_pipeline_t *p = calloc(1, sizeof(*p));
  if (!p) {
    fp_store_destroy(store);
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return NULL;
  }
  p->store = store;
  p->metrics = metrics;
  if (limits) p->limits = *limits;
  p->max_bytes = (size_t)conf->input_max_bytes;
  p->lateness_ms = conf->lateness_ms;
  p->lcp.hold_ms = conf->incident_hold_ms;
  p->lcp.grace_ms = conf->incident_grace_ms;
  p->lcp.samples = (size_t)conf->incident_samples;
  if (!(p->rules_dir = strdup(conf->rules_dir)) || !(p->output_topic = strdup(conf->output_topic)) ||
      !(p->runs[0].arena = fp_jarena_new()) || !(p->runs[1].arena = fp_jarena_new())) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto err;
  }
  if (conf->input_mapping && conf->input_mapping[0] &&
      !(p->maps = fp_mapping_set_load(conf->input_mapping, errstr, es)))
    goto err;
  if (!(p->rules = fp_rules_new(p->rules_dir, limits, errstr, es))) goto err;
  if (bind_rule_metrics(p) != FP_OK) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto err;
  }
  return p;
err:
  fp_pipeline_destroy(p);
  return NULL;
}

/* Releases the documents and Lua tables of run @p r, then rewinds the arena they were
 * decoded in: mentions[] holds every document of it (nothing else is decoded there). */
static void release_run(fp_pipeline_t *p, fp_run_t *r) {
  for (size_t i = 0; i < r->cap; i++) {
    if (r->mrefs[i]) fp_rules_release(p->rules, r->mrefs[i]);
    r->mrefs[i] = 0;
    fp_mention_clear(&r->mentions[i]);
  }
  if (r->arena) fp_jarena_reset(r->arena);
  r->prepared = 0;
}

static void release_inputs(fp_pipeline_t *p) {
  for (int s = 0; s < FP_PIPELINE_SLOTS; s++) release_run(p, &p->runs[s]);
}

void fp_pipeline_destroy(fp_pipeline_t *p) {
  if (!p) return;
  release_inputs(p);
  for (int s = 0; s < FP_PIPELINE_SLOTS; s++) {
    fp_run_t *r = &p->runs[s];
    free(r->mentions), free(r->mrefs), free(r->status), free(r->reason), free(r->offsets);
    free(r->hits), free(r->hit_in), free(r->sigs);
    fp_opvec_free(&r->ops);
    fp_jarena_destroy(r->arena);
  }
  fp_outvec_free(&p->events);
  fp_mapping_set_destroy(p->maps);
  fp_buf_free(&p->mapped);
  free(p->rule_metrics), free(p->seen_failures), free(p->seen_quarantined);
  fp_rules_destroy(p->rules);
  fp_store_destroy(p->store);
  free(p->rules_dir);
  free(p->output_topic);
  free(p);
}

fp_err_t fp_pipeline_reload(fp_pipeline_t *p, char *errstr, size_t es) {
  fp_rules_t *n = fp_rules_new(p->rules_dir, &p->limits, errstr, es);
  fp_rules_t *old = p->rules;
  if (!n) return FP_ERR_RULE_LOAD;
  /* a reload gives quarantined rules a fresh start: readiness and the gauge follow */
  for (size_t i = 0; p->metrics && i < fp_rules_count(old); i++)
    if (fp_rules_info(old, i)->quarantined)
      fp_metrics_rule_unquarantined(fp_metrics_rule(p->metrics, fp_rules_info(old, i)->id));
  release_inputs(p); /* the runs' mention handles belong to the old Lua state */
  p->rules = n;
  if (bind_rule_metrics(p) != FP_OK) {
    p->rules = old;
    fp_rules_destroy(n);
    return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  }
  fp_rules_destroy(old);
  return FP_OK;
}

fp_rules_t *fp_pipeline_rules(fp_pipeline_t *p) { return p->rules; }
fp_store_t *fp_pipeline_store(fp_pipeline_t *p) { return p->store; }

static fp_err_t inputs_reserve(fp_run_t *r, size_t n) {
  void *q;
  if (n <= r->cap) return FP_OK;
#define GROW(f)                                                  \
  if (!(q = realloc(r->f, n * sizeof(*r->f)))) return FP_ERR_NOMEM; \
  r->f = q;
  GROW(mentions) GROW(mrefs) GROW(status) GROW(reason) GROW(offsets)
#undef GROW
  memset(r->mentions + r->cap, 0, (n - r->cap) * sizeof(*r->mentions));
  memset(r->mrefs + r->cap, 0, (n - r->cap) * sizeof(*r->mrefs));
  r->cap = n;
  return FP_OK;
}

static fp_err_t hits_reserve(fp_run_t *r, size_t n) {
  size_t cap;
  void *q;
  if (n <= r->caphits) return FP_OK;
  cap = r->caphits ? r->caphits : 64;
  while (cap < n) cap *= 2;
  if (!(q = realloc(r->hits, cap * sizeof(*r->hits)))) return FP_ERR_NOMEM;
  r->hits = q;
  if (!(q = realloc(r->hit_in, cap * sizeof(*r->hit_in)))) return FP_ERR_NOMEM;
  r->hit_in = q;
  if (!(q = realloc(r->sigs, cap * sizeof(*r->sigs)))) return FP_ERR_NOMEM;
  r->sigs = q;
  r->caphits = cap;
  return FP_OK;
}

/* Sweeps find open incidents by rule id: the lookup the lifecycle needs. */
static const fp_rule_info_t *lookup_rule(void *arg, const char *id) {
  fp_rules_t *rules = arg;
  for (size_t r = 0; r < fp_rules_count(rules); r++)
    if (!strcmp(fp_rules_info(rules, r)->id, id)) return fp_rules_info(rules, r);
  return NULL;
}

fp_err_t fp_pipeline_prepare(fp_pipeline_t *p, int slot, const char *source, int64_t *watermark,
                             const fp_input_t *in, size_t n, char *errstr, size_t es) {
  size_t nrules = fp_rules_count(p->rules);
  int64_t wm = *watermark;
  unsigned merr;
  fp_run_t *r;

  if (slot < 0 || slot >= FP_PIPELINE_SLOTS || !source)
    return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "pipeline: bad slot or source");
  r = &p->runs[slot];
  release_run(p, r);
  fp_opvec_reset(&r->ops);
  r->nhits = r->n = r->decoded = r->late = 0;
  r->nerrors = 0;
  if (strlen(source) >= sizeof(r->source))
    return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "pipeline: source name too long");
  memcpy(r->source, source, strlen(source) + 1);
  {
    const char *colon = strrchr(source, ':');
    size_t tl = colon ? (size_t)(colon - source) : strlen(source);
    if (tl >= sizeof(r->topic)) tl = sizeof(r->topic) - 1;
    memcpy(r->topic, source, tl);
    r->topic[tl] = '\0';
  }
  if (n == 0) {
    r->wm = wm;
    r->prepared = 1;
    return FP_OK;
  }
  if (inputs_reserve(r, n) != FP_OK) return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  const fp_mapping_t *map = p->maps ? fp_mapping_set_find(p->maps, r->topic) : NULL;
  for (size_t i = 0; i < n; i++) {
    /* one message per offset, ascending: a repeated offset would be evaluated and counted
     * twice (the store takes equal adjacent offsets as one mention's several updates) */
    if (i && in[i].offset <= in[i - 1].offset)
      return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "run of %s: offset %lld after %lld (not ascending)",
                       source, (long long)in[i].offset, (long long)in[i - 1].offset);
    r->offsets[i] = in[i].offset;
  }
  for (size_t i = 0; i < n; i++) {
    fp_mention_t *m = &r->mentions[i];
    const void *payload = in[i].payload;
    size_t len = in[i].len, nh = 0;
    if (map && len <= p->max_bytes) { /* the team's own schema, mapped to the mention model */
      r->status[i] = fp_mapping_transform(map, payload, len, &p->mapped, r->reason[i], sizeof(r->reason[i]));
      if (r->status[i] != FP_OK) continue;
      payload = p->mapped.data;
      len = p->mapped.len;
    }
    fp_jarena_t *prev = fp_jarena_enter(r->arena);
    r->status[i] = fp_mention_decode(payload, len, p->max_bytes, m, r->reason[i], sizeof(r->reason[i]));
    fp_jarena_leave(prev);
    if (r->status[i] != FP_OK) continue;
    r->decoded++;
    if (wm != INT64_MIN && m->created_at_ms < wm - p->lateness_ms) {
      snprintf(r->reason[i], sizeof(r->reason[i]),
               "event time %lld ms is %lld ms behind the partition watermark (allowed lateness %lld ms)",
               (long long)m->created_at_ms, (long long)(wm - m->created_at_ms), (long long)p->lateness_ms);
      r->status[i] = FP_ERR_LATE;
      r->late++;
      fp_mention_clear(m);
      continue;
    }
    if (wm == INT64_MIN || m->created_at_ms > wm) wm = m->created_at_ms;
    if (hits_reserve(r, r->nhits + nrules) != FP_OK) return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    fp_rules_select(p->rules, m, in[i].offset, r->hits + r->nhits, r->caphits - r->nhits, &nh,
                    &r->ops, &r->mrefs[i], &merr);
    r->nerrors += merr; /* fp_rules_select counts one mention's failures */
    for (size_t h = 0; h < nh; h++) r->hit_in[r->nhits + h] = i;
    r->nhits += nh;
  }
  sync_rule_failures(p, 1);
  r->n = n;
  r->wm = *watermark = wm;
  r->prepared = 1;
  return FP_OK;
}

void fp_pipeline_send(fp_pipeline_t *p, int slot, int64_t committed) {
  if (slot < 0 || slot >= FP_PIPELINE_SLOTS || !p->runs[slot].prepared) return;
  fp_run_t *r = &p->runs[slot];
  if (r->ops.n) fp_store_apply_send(p->store, r->source, r->ops.ops, r->ops.n, committed);
}

void fp_pipeline_discard(fp_pipeline_t *p, int slot) {
  if (slot >= 0 && slot < FP_PIPELINE_SLOTS) release_run(p, &p->runs[slot]);
}

fp_err_t fp_pipeline_finish(fp_pipeline_t *p, int slot, int64_t committed, int sweep,
                            fp_pipeline_retry_fn retry, void *ropaque, fp_pipeline_out_t *out,
                            char *errstr, size_t es) {
  size_t nsig = 0, replayed = 0;
  fp_store_result_t res;
  fp_err_t err;
  int attempt;
  fp_run_t *r;

  memset(out, 0, sizeof(*out));
  memset(&res, 0, sizeof(res));
  if (slot < 0 || slot >= FP_PIPELINE_SLOTS || !p->runs[slot].prepared)
    return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "pipeline: no run prepared in slot %d", slot);
  r = &p->runs[slot];
  if (r->n == 0) return FP_OK;
  out->decoded = r->decoded;
  out->late = r->late;
  fp_outvec_reset(&p->events);

  /* one round trip for every window update of the run (sent ahead by fp_pipeline_send) */
  for (attempt = 0; r->ops.n; attempt++) {
    int64_t t0 = fp_mono_ns();
    err = fp_store_apply(p->store, r->source, r->ops.ops, r->ops.n, committed, &res, errstr, es);
    fp_metrics_store_call(p->metrics, fp_mono_ns() - t0, err != FP_OK);
    out->roundtrips++;
    if (err == FP_OK) break;
    if (err != FP_ERR_REDIS) return err;
    if (!retry || !retry(ropaque, "windows", errstr, attempt)) return FP_ERR_REDIS;
  }

  /* stage 2: severities (each timed from the end of the one before: one clock read each) */
  int64_t ts = fp_mono_ns();
  for (size_t h = 0; h < r->nhits; h++) {
    fp_rule_hit_t *hit = &r->hits[h];
    size_t mi = r->hit_in[h];
    fp_sev_t sev = FP_SEV_NONE;
    const fp_rule_info_t *ri = fp_rules_info(p->rules, hit->rule);
    int was_quarantined = ri->quarantined;
    char msg[256];
    fp_err_t serr = fp_rules_severity(p->rules, r->mrefs[mi], hit, r->ops.ops, &sev, msg, sizeof(msg));
    int64_t t1 = fp_mono_ns();
    fp_metrics_rule_eval(p->rule_metrics[hit->rule], t1 - ts, serr != FP_OK,
                         serr == FP_OK && sev != FP_SEV_NONE);
    ts = t1;
    if (!was_quarantined && ri->quarantined) fp_metrics_rule_quarantined(p->rule_metrics[hit->rule]);
    out->evals++;
    if (serr != FP_OK) {
      out->rule_errors++;
      continue;
    }
    /* A mention without a signal matters to the lifecycle only when it starts a streak (the
     * rule's first window was empty before it): an open incident resolves by sweeps, dated
     * at its due time, whoever finds it. Skipping the rest keeps the lifecycle's round trips
     * about incidents, not about every mention. */
    const fp_win_op_t *w0 = hit->op_count ? &r->ops.ops[hit->op_first] : NULL;
    int was_empty = !w0 || w0->out.value <= (w0->amount > 1 ? w0->amount : 1);
    if (sev == FP_SEV_NONE && !was_empty) continue;
    fp_inc_signal_t *s = &r->sigs[nsig++];
    memset(s, 0, sizeof(*s));
    s->offset = r->offsets[mi];
    s->sig.sev = sev;
    s->sig.at_ms = r->mentions[mi].created_at_ms;
    s->sig.mention = &r->mentions[mi];
    s->sig.rule = ri;
    s->sig.entity = hit->entity;
    s->sig.values = r->ops.ops + hit->op_first;
    s->sig.nvalues = hit->op_count;
    s->sig.window_was_empty = was_empty;
  }
  out->rule_errors += r->nerrors;
  sync_rule_failures(p, 0);

  /* the lifecycle: load, step, commit (two round trips) */
  for (attempt = 0;; attempt++) {
    int64_t t0 = fp_mono_ns();
    fp_outvec_reset(&p->events);
    err = fp_incidents_apply(p->store, r->source, &p->lcp, r->sigs, nsig, r->offsets, r->n, committed,
                             p->output_topic, sweep ? r->wm : INT64_MIN, lookup_rule, p->rules,
                             &p->events, &replayed, errstr, es);
    fp_metrics_store_call(p->metrics, fp_mono_ns() - t0, err != FP_OK);
    out->roundtrips += 2;
    if (err == FP_OK) break;
    if (err != FP_ERR_REDIS) return err;
    if (!retry || !retry(ropaque, "incidents", errstr, attempt)) return FP_ERR_REDIS;
  }

  out->status = r->status;
  out->reason = (const char(*)[256])r->reason;
  out->events = &p->events;
  out->replayed = res.replayed;
  return FP_OK;
}

fp_err_t fp_pipeline_run(fp_pipeline_t *p, const char *source, int64_t *watermark,
                         int64_t committed, const fp_input_t *in, size_t n, int sweep,
                         fp_pipeline_retry_fn retry, void *ropaque, fp_pipeline_out_t *out,
                         char *errstr, size_t es) {
  int64_t wm = *watermark;
  fp_err_t err;
  memset(out, 0, sizeof(*out));
  if (n == 0) return FP_OK;
  if ((err = fp_pipeline_prepare(p, 0, source, &wm, in, n, errstr, es))) return err;
  if ((err = fp_pipeline_finish(p, 0, committed, sweep, retry, ropaque, out, errstr, es))) return err;
  *watermark = wm;
  return FP_OK;
}
