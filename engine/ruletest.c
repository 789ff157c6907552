/*
 * ruletest.c - owns `flashpoint test` (see ruletest.h): reading rule test files, turning
 * their inputs into mentions, running each test on a fresh pipeline with the in-process
 * store, and comparing the incident events with the expectations.
 *
 * Inputs: explicit mentions ({"at": "+5m", "mention": {...}}) and series ({"series": "20
 * negative mentions per minute for 15 minutes", "brand": "acme", ...}), which expand to evenly
 * spaced mentions with deterministic ids and authors. All inputs of a test are sorted by event
 * time (ties: declaration order) and numbered 1..n as offsets, then fed in batches with a sweep
 * per batch, exactly as the replay does. "until" appends one neutral mention of the entity
 * "_clock" so that event time reaches that point (incidents due by then resolve).
 *
 * Matching: each expectation takes the first not yet matched event that fits all of its
 * fields (rule, entity, status, severity, at +- within); "expect_none" forbids events, "strict"
 * forbids opened/escalated/reopened events no expectation accounts for. A failure prints the
 * expectation missing, the nearest event of the same rule, and every event of the test.
 */
#include "ruletest.h"

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "pipeline.h"
#include "replay.h"
#include "util.h"

#define DEFAULT_START "2026-01-05T00:00:00Z"
#define BATCH 500

typedef struct tin_s {
  int64_t at;
  size_t order;
  char *json;
} tin_t;

typedef struct tev_s {
  char status[16], sev[8], rule[80], entity[136];
  int64_t at;
  int matched;
} tev_t;

typedef struct tctx_s {
  FILE *out;
  const char *file, *name;
  int64_t start;
  fp_buf_t log; /* failure details of the current test */
  int failed;
} tctx_t;

static void fail(tctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(tctx_t *c, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  fp_buf_printf(&c->log, "    %s\n", buf);
  c->failed = 1;
}

/* ---- small parsers ------------------------------------------------------------------- */

fp_err_t fp_ruletest_parse_offset(const char *s, int64_t *ms_out) {
  int64_t total = 0;
  int any = 0;
  if (!s) return FP_ERR_CONFIG;
  if (*s == '+') s++;
  while (*s) {
    char *end;
    double v = strtod(s, &end);
    int64_t unit;
    if (end == s || v < 0) return FP_ERR_CONFIG;
    s = end;
    if (!strncmp(s, "ms", 2)) unit = 1, s += 2;
    else if (*s == 's') unit = 1000, s++;
    else if (*s == 'm') unit = 60000, s++;
    else if (*s == 'h') unit = 3600000, s++;
    else if (*s == 'd') unit = 86400000, s++;
    else return FP_ERR_CONFIG;
    total += (int64_t)llround(v * (double)unit);
    any = 1;
  }
  if (!any) return FP_ERR_CONFIG;
  *ms_out = total;
  return FP_OK;
}

static int64_t unit_ms(const char *w) {
  static const struct {
    const char *name;
    int64_t ms;
  } u[] = {{"second", 1000}, {"seconds", 1000}, {"sec", 1000}, {"s", 1000},       {"minute", 60000},
           {"minutes", 60000}, {"min", 60000}, {"m", 60000},   {"hour", 3600000}, {"hours", 3600000},
           {"h", 3600000},     {"day", 86400000}, {"days", 86400000}};
  for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++)
    if (!strcmp(w, u[i].name)) return u[i].ms;
  return 0;
}

fp_err_t fp_ruletest_parse_series(const char *s, double *per, char *sentiment, size_t ss, int64_t *period_ms,
                                  int64_t *duration_ms) {
  char buf[256], *tok[12];
  size_t n = 0, i = 0;
  double dur;
  snprintf(buf, sizeof(buf), "%s", s);
  for (char *p = buf; *p && n < 12;) {
    while (*p && isspace((unsigned char)*p)) *p++ = '\0';
    if (!*p) break;
    tok[n++] = p;
    while (*p && !isspace((unsigned char)*p)) p++;
  }
  /* <N> [sentiment] mention(s) per <unit> for <D> <unit> */
  if (n < 6) return FP_ERR_CONFIG;
  if (!strcmp(tok[i], "a") || !strcmp(tok[i], "one")) *per = 1;
  else if (fp_parse_double(tok[i], per) != FP_OK || !(*per > 0)) return FP_ERR_CONFIG;
  i++;
  snprintf(sentiment, ss, "neutral");
  if (!strcmp(tok[i], "negative") || !strcmp(tok[i], "positive") || !strcmp(tok[i], "neutral"))
    snprintf(sentiment, ss, "%s", tok[i++]);
  if (i + 5 > n || (strcmp(tok[i], "mentions") && strcmp(tok[i], "mention"))) return FP_ERR_CONFIG;
  i++;
  if (strcmp(tok[i++], "per")) return FP_ERR_CONFIG;
  if (!(*period_ms = unit_ms(tok[i++]))) return FP_ERR_CONFIG;
  if (strcmp(tok[i++], "for")) return FP_ERR_CONFIG;
  if (i + 2 != n) return FP_ERR_CONFIG;
  if (!strcmp(tok[i], "a") || !strcmp(tok[i], "an") || !strcmp(tok[i], "one")) dur = 1;
  else if (fp_parse_double(tok[i], &dur) != FP_OK || !(dur > 0)) return FP_ERR_CONFIG;
  int64_t u = unit_ms(tok[i + 1]);
  if (!u) return FP_ERR_CONFIG;
  *duration_ms = (int64_t)llround(dur * (double)u);
  return FP_OK;
}

static void fmt_rel(int64_t ms, char *buf, size_t size) {
  int64_t s = (ms < 0 ? -ms : ms) / 1000, frac = (ms < 0 ? -ms : ms) % 1000;
  char sign = ms < 0 ? '-' : '+';
  if (s >= 3600) snprintf(buf, size, "%c%lldh%02lldm%02llds", sign, (long long)(s / 3600), (long long)(s % 3600 / 60),
                          (long long)(s % 60));
  else if (s >= 60) snprintf(buf, size, "%c%lldm%02llds", sign, (long long)(s / 60), (long long)(s % 60));
  else snprintf(buf, size, "%c%lld.%03llds", sign, (long long)s, (long long)frac);
}

/* ---- inputs -------------------------------------------------------------------------- */

typedef struct tinvec_s {
  tin_t *v;
  size_t n, cap;
} tinvec_t;

static fp_err_t push(tinvec_t *iv, int64_t at, json_t *doc) {
  if (iv->n == iv->cap) {
    size_t cap = iv->cap ? iv->cap * 2 : 256;
    tin_t *q = realloc(iv->v, cap * sizeof(*q));
    if (!q) return FP_ERR_NOMEM;
    iv->v = q;
    iv->cap = cap;
  }
  json_object_set_new(doc, "created_at", json_integer(at));
  iv->v[iv->n].at = at;
  iv->v[iv->n].order = iv->n;
  if (!(iv->v[iv->n].json = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS))) return FP_ERR_NOMEM;
  iv->n++;
  return FP_OK;
}

static int cmp_tin(const void *a, const void *b) {
  const tin_t *x = a, *y = b;
  if (x->at != y->at) return x->at < y->at ? -1 : 1;
  return x->order < y->order ? -1 : x->order > y->order;
}

static fp_err_t rel_field(json_t *o, const char *field, int64_t dflt, int64_t *out, char *why, size_t ws) {
  json_t *v = json_object_get(o, field);
  *out = dflt;
  if (!v) return FP_OK;
  if (!json_is_string(v) || fp_ruletest_parse_offset(json_string_value(v), out) != FP_OK)
    return fp_seterr(why, ws, FP_ERR_CONFIG, "\"%s\" must be a relative time such as \"+1h30m\"", field);
  return FP_OK;
}

static const char *const series_keys[] = {"series", "at", "brand", "authors", "author_prefix", "followers",
                                          "verified", "text", "sentiment", "reshare_of", "hashtags", "lang",
                                          "platform", "entities", NULL};

static fp_err_t expand_series(tinvec_t *iv, json_t *s, size_t idx, int64_t t0, char *why, size_t ws) {
  double per, sent;
  char kind[16], idbuf[64], author[96];
  int64_t period, dur, at, authors, followers = 100;
  const char *key, *brand = "acme", *prefix = NULL, *text = NULL;
  json_t *v;
  json_object_foreach(s, key, v) {
    int ok = 0;
    for (size_t k = 0; series_keys[k]; k++) ok |= !strcmp(key, series_keys[k]);
    if (!ok) return fp_seterr(why, ws, FP_ERR_CONFIG, "input %zu: unknown series field \"%s\"", idx, key);
  }
  if (fp_ruletest_parse_series(json_string_value(json_object_get(s, "series")), &per, kind, sizeof(kind), &period,
                               &dur) != FP_OK)
    return fp_seterr(why, ws, FP_ERR_CONFIG,
                     "input %zu: series must read \"<N> [negative|positive|neutral] mentions per "
                     "<second|minute|hour> for <D> <seconds|minutes|hours>\"", idx);
  if (rel_field(s, "at", 0, &at, why, ws) != FP_OK) return FP_ERR_CONFIG;
  if ((v = json_object_get(s, "brand"))) brand = json_string_value(v);
  if ((v = json_object_get(s, "author_prefix"))) prefix = json_string_value(v);
  if ((v = json_object_get(s, "text"))) text = json_string_value(v);
  if ((v = json_object_get(s, "followers"))) followers = json_integer_value(v);
  if (!brand || (json_object_get(s, "text") && !text))
    return fp_seterr(why, ws, FP_ERR_CONFIG, "input %zu: brand and text must be strings", idx);
  sent = !strcmp(kind, "negative") ? -0.8 : !strcmp(kind, "positive") ? 0.7 : 0.0;
  if ((v = json_object_get(s, "sentiment"))) {
    if (!json_is_number(v)) return fp_seterr(why, ws, FP_ERR_CONFIG, "input %zu: sentiment must be a number", idx);
    sent = json_number_value(v);
  }
  int64_t count = (int64_t)llround(per * (double)dur / (double)period);
  if (count < 1 || count > 2000000)
    return fp_seterr(why, ws, FP_ERR_CONFIG, "input %zu: the series makes %lld mentions (1..2000000)", idx, (long long)count);
  authors = count;
  if ((v = json_object_get(s, "authors"))) {
    if (!json_is_integer(v) || json_integer_value(v) < 1)
      return fp_seterr(why, ws, FP_ERR_CONFIG, "input %zu: authors must be a positive integer", idx);
    authors = json_integer_value(v);
  }
  double spacing = (double)period / per;
  for (int64_t i = 0; i < count; i++) {
    char tbuf[256];
    json_t *m;
    if (text) snprintf(tbuf, sizeof(tbuf), "%s", text);
    else if (!strcmp(kind, "negative")) snprintf(tbuf, sizeof(tbuf), "%s is terrible, awful service", brand);
    else if (!strcmp(kind, "positive")) snprintf(tbuf, sizeof(tbuf), "love %s, great service", brand);
    else snprintf(tbuf, sizeof(tbuf), "%s store opening hours?", brand);
    snprintf(idbuf, sizeof(idbuf), "s%zu-%lld", idx, (long long)i);
    if (prefix) snprintf(author, sizeof(author), "%s%lld", prefix, (long long)(i % authors));
    else snprintf(author, sizeof(author), "s%zu-a%lld", idx, (long long)(i % authors));
    m = json_pack("{s:s,s:s,s:s,s:{s:s,s:I,s:b},s:s,s:s,s:f}", "id", idbuf, "platform", "test", "brand", brand,
                  "author", "id", author, "followers", (json_int_t)followers, "verified",
                  json_is_true(json_object_get(s, "verified")), "text", tbuf, "lang", "en", "sentiment", sent);
    if (!m) return fp_seterr(why, ws, FP_ERR_NOMEM, "out of memory");
    static const char *const copy[] = {"reshare_of", "hashtags", "lang", "platform", "entities"};
    for (size_t k = 0; k < 5; k++)
      if ((v = json_object_get(s, copy[k]))) json_object_set(m, copy[k], v);
    fp_err_t err = push(iv, t0 + at + (int64_t)floor((double)i * spacing), m);
    json_decref(m);
    if (err != FP_OK) return fp_seterr(why, ws, err, "out of memory");
  }
  return FP_OK;
}

static fp_err_t build_inputs(tinvec_t *iv, json_t *test, int64_t t0, char *why, size_t ws) {
  json_t *in = json_object_get(test, "input"), *e;
  size_t i;
  int64_t until;
  if (!json_is_array(in)) return fp_seterr(why, ws, FP_ERR_CONFIG, "\"input\" must be an array");
  json_array_foreach(in, i, e) {
    if (json_object_get(e, "series")) {
      if (expand_series(iv, e, i, t0, why, ws) != FP_OK) return FP_ERR_CONFIG;
    } else if (json_is_object(json_object_get(e, "mention"))) {
      int64_t at;
      json_t *m = json_deep_copy(json_object_get(e, "mention"));
      if (rel_field(e, "at", 0, &at, why, ws) != FP_OK || !m) {
        json_decref(m);
        return FP_ERR_CONFIG;
      }
      fp_err_t err = push(iv, t0 + at, m);
      json_decref(m);
      if (err != FP_OK) return fp_seterr(why, ws, err, "out of memory");
    } else {
      return fp_seterr(why, ws, FP_ERR_CONFIG, "input %zu: expected {\"series\": ...} or {\"at\": ..., \"mention\": {...}}", i);
    }
  }
  if (json_object_get(test, "until")) {
    if (rel_field(test, "until", 0, &until, why, ws) != FP_OK) return FP_ERR_CONFIG;
    json_t *m = json_pack("{s:s,s:s,s:{s:s},s:s,s:f}", "id", "clock", "brand", "_clock", "author", "id", "_clock",
                          "text", "time passes", "sentiment", 0.0);
    fp_err_t err = m ? push(iv, t0 + until, m) : FP_ERR_NOMEM;
    json_decref(m);
    if (err != FP_OK) return fp_seterr(why, ws, err, "out of memory");
  }
  qsort(iv->v, iv->n, sizeof(*iv->v), cmp_tin);
  return FP_OK;
}

/* ---- running ------------------------------------------------------------------------- */

static fp_err_t run_pipeline(const char *rules_dir, json_t *settings, tinvec_t *iv, tev_t **evs, size_t *nev,
                             size_t *dead, char *why, size_t ws) {
  fp_conf_t *conf = fp_conf_new();
  fp_pipeline_t *p = NULL;
  fp_store_t *st;
  fp_rules_limits_t lim;
  fp_input_t *in = NULL;
  fp_err_t err = FP_ERR_NOMEM;
  int64_t wm = INT64_MIN;
  const char *key;
  json_t *v;
  size_t cap = 0;
  *evs = NULL;
  *nev = 0;
  *dead = 0;
  if (!conf) goto out;
  if ((err = fp_conf_set(conf, "rules.dir", rules_dir, why, ws)) != FP_OK) goto out;
  json_object_foreach(settings, key, v) {
    if (!json_is_string(v)) {
      err = fp_seterr(why, ws, FP_ERR_CONFIG, "settings: %s must be a string", key);
      goto out;
    }
    if ((err = fp_conf_set(conf, key, json_string_value(v), why, ws)) != FP_OK) goto out;
  }
  memset(&lim, 0, sizeof(lim));
  lim.mem_bytes = (size_t)conf->rules_memory;
  lim.instructions = (uint64_t)conf->rules_instructions;
  lim.deadline_ms = conf->rules_deadline_ms;
  lim.quarantine_after = (unsigned)conf->rules_quarantine_after;
  if (!(st = fp_store_mem_new(why, ws))) goto out;
  fp_store_set_lateness(st, conf->lateness_ms);
  if (!(p = fp_pipeline_new(conf, &lim, st, NULL, why, ws))) {
    err = FP_ERR_RULE_LOAD;
    goto out;
  }
  if (!(in = calloc(BATCH, sizeof(*in)))) goto out;
  for (size_t b = 0; b < iv->n; b += BATCH) {
    size_t n = iv->n - b < BATCH ? iv->n - b : BATCH;
    fp_pipeline_out_t po;
    for (size_t i = 0; i < n; i++) {
      in[i].payload = iv->v[b + i].json;
      in[i].len = strlen(iv->v[b + i].json);
      in[i].offset = (int64_t)(b + i + 1);
    }
    if ((err = fp_pipeline_run(p, "test:0", &wm, (int64_t)b + 1, in, n, 1, NULL, NULL, &po, why, ws)) != FP_OK) goto out;
    for (size_t i = 0; i < n; i++) *dead += po.status[i] != FP_OK;
    for (size_t i = 0; i < po.events->n; i++) {
      json_t *d = json_loadb(po.events->recs[i].payload, po.events->recs[i].len, 0, NULL);
      if (!d) continue;
      if (*nev == cap) {
        cap = cap ? cap * 2 : 32;
        tev_t *q = realloc(*evs, cap * sizeof(*q));
        if (!q) {
          json_decref(d);
          err = FP_ERR_NOMEM;
          goto out;
        }
        *evs = q;
      }
      tev_t *e = &(*evs)[(*nev)++];
      memset(e, 0, sizeof(*e));
      snprintf(e->status, sizeof(e->status), "%s", json_string_value(json_object_get(d, "status")));
      snprintf(e->sev, sizeof(e->sev), "%s", json_string_value(json_object_get(d, "severity")));
      snprintf(e->rule, sizeof(e->rule), "%s", json_string_value(json_object_get(json_object_get(d, "rule"), "id")));
      snprintf(e->entity, sizeof(e->entity), "%s", json_string_value(json_object_get(d, "entity")));
      if (fp_time_parse_rfc3339(json_string_value(json_object_get(d, "event_time")), &e->at) != FP_OK) e->at = 0;
      json_decref(d);
    }
  }
  err = FP_OK;
out:
  if (err == FP_ERR_NOMEM) fp_seterr(why, ws, err, "out of memory");
  free(in);
  fp_pipeline_destroy(p);
  fp_conf_destroy(conf);
  return err;
}

/* ---- matching ------------------------------------------------------------------------ */

typedef struct texp_s {
  const char *rule, *entity, *status, *sev, *above;
  int64_t at, within;
  int has_at;
} texp_t;

static fp_err_t parse_exp(json_t *o, texp_t *x, int negative, char *why, size_t ws) {
  const char *key;
  json_t *v;
  memset(x, 0, sizeof(*x));
  json_object_foreach(o, key, v) {
    if (!json_is_string(v)) return fp_seterr(why, ws, FP_ERR_CONFIG, "expectation field \"%s\" must be a string", key);
    const char *s = json_string_value(v);
    if (!strcmp(key, "rule")) x->rule = s;
    else if (!strcmp(key, "entity")) x->entity = s;
    else if (!strcmp(key, "status")) x->status = s;
    else if (!strcmp(key, "severity") && fp_replay_sev_rank(s)) x->sev = s;
    else if (!strcmp(key, "above") && negative && fp_replay_sev_rank(s)) x->above = s;
    else if (!strcmp(key, "at") && fp_ruletest_parse_offset(s, &x->at) == FP_OK) x->has_at = 1;
    else if (!strcmp(key, "within") && fp_ruletest_parse_offset(s, &x->within) == FP_OK) {
    } else return fp_seterr(why, ws, FP_ERR_CONFIG, "bad expectation field \"%s\": \"%s\"", key, s);
  }
  if (x->has_at && !json_object_get(o, "within")) x->within = 60000;
  return FP_OK;
}

static int fits(const texp_t *x, const tev_t *e, int64_t t0, int ignore_time) {
  if (x->rule && strcmp(x->rule, e->rule)) return 0;
  if (x->entity && strcmp(x->entity, e->entity)) return 0;
  if (x->status && strcmp(x->status, e->status)) return 0;
  if (x->sev && strcmp(x->sev, e->sev)) return 0;
  if (x->above && fp_replay_sev_rank(e->sev) <= fp_replay_sev_rank(x->above)) return 0;
  if (!ignore_time && x->has_at && llabs(e->at - t0 - x->at) > x->within) return 0;
  return 1;
}

static void describe_exp(const texp_t *x, char *buf, size_t size) {
  char at[32] = "", w[32] = "";
  if (x->has_at) {
    fmt_rel(x->at, at, sizeof(at));
    fmt_rel(x->within, w, sizeof(w));
  }
  snprintf(buf, size, "%-11s %-24s %-14s %-5s%s%s%s%s", x->status ? x->status : "(any)", x->rule ? x->rule : "(any rule)",
           x->entity ? x->entity : "(any)", x->sev ? x->sev : "", x->has_at ? " at " : "", at, x->has_at ? " ±" : "",
           x->has_at ? w + 1 : "");
}

static void describe_ev(const tev_t *e, int64_t t0, char *buf, size_t size) {
  char at[32];
  fmt_rel(e->at - t0, at, sizeof(at));
  snprintf(buf, size, "%-11s %-24s %-14s %-5s at %s", e->status, e->rule, e->entity, e->sev, at);
}

static int rising(const tev_t *e) {
  return !strcmp(e->status, "opened") || !strcmp(e->status, "escalated") || !strcmp(e->status, "reopened");
}

static void check_test(tctx_t *c, json_t *test, tev_t *ev, size_t nev) {
  json_t *exp = json_object_get(test, "expect"), *none = json_object_get(test, "expect_none"), *o;
  const char *above = json_string_value(json_object_get(test, "no_incident_above"));
  char a[512], b[512];
  size_t i;
  texp_t x;
  json_array_foreach(exp, i, o) {
    char why[256];
    size_t k, best = nev;
    if (parse_exp(o, &x, 0, why, sizeof(why)) != FP_OK) {
      fail(c, "expect[%zu]: %s", i, why);
      continue;
    }
    for (k = 0; k < nev; k++)
      if (!ev[k].matched && fits(&x, &ev[k], c->start, 0)) break;
    if (k < nev) {
      ev[k].matched = 1;
      continue;
    }
    describe_exp(&x, a, sizeof(a));
    fail(c, "- expected: %s", a);
    /* the nearest candidate: same rule (and entity), closest in time */
    for (k = 0; k < nev; k++) {
      if ((x.rule && strcmp(x.rule, ev[k].rule)) || (x.entity && strcmp(x.entity, ev[k].entity))) continue;
      if (best == nev || (x.has_at && llabs(ev[k].at - c->start - x.at) < llabs(ev[best].at - c->start - x.at))) best = k;
    }
    if (best < nev) {
      describe_ev(&ev[best], c->start, b, sizeof(b));
      fail(c, "+ nearest:  %s", b);
    } else {
      fail(c, "+ nearest:  (no event of this rule%s)", x.entity ? " and entity" : "");
    }
  }
  json_array_foreach(none, i, o) {
    char why[256];
    if (parse_exp(o, &x, 1, why, sizeof(why)) != FP_OK) {
      fail(c, "expect_none[%zu]: %s", i, why);
      continue;
    }
    for (size_t k = 0; k < nev; k++)
      if (fits(&x, &ev[k], c->start, 0)) {
        describe_exp(&x, a, sizeof(a));
        describe_ev(&ev[k], c->start, b, sizeof(b));
        fail(c, "- forbidden: %s%s%s", a, x.above ? " above " : "", x.above ? x.above : "");
        fail(c, "+ got:       %s", b);
      }
  }
  if (above) {
    if (!fp_replay_sev_rank(above)) fail(c, "no_incident_above: expected sev1..sev4, got \"%s\"", above);
    for (size_t k = 0; k < nev; k++)
      if (rising(&ev[k]) && fp_replay_sev_rank(ev[k].sev) > fp_replay_sev_rank(above)) {
        describe_ev(&ev[k], c->start, b, sizeof(b));
        fail(c, "- forbidden: any incident above %s", above);
        fail(c, "+ got:       %s", b);
      }
  }
  if (json_is_true(json_object_get(test, "strict")))
    for (size_t k = 0; k < nev; k++)
      if (rising(&ev[k]) && !ev[k].matched) {
        describe_ev(&ev[k], c->start, b, sizeof(b));
        fail(c, "+ unexpected: %s", b);
      }
}

static const char *const test_keys[] = {"name", "settings", "input", "until", "expect", "expect_none",
                                        "no_incident_above", "strict", "description", NULL};

static void run_test(tctx_t *c, const fp_ruletest_opts_t *o, json_t *test, int *passed, int *failed) {
  tinvec_t iv = {0};
  tev_t *ev = NULL;
  size_t nev = 0, dead = 0;
  char why[512];
  const char *key;
  json_t *v;
  fp_buf_reset(&c->log);
  c->failed = 0;
  json_object_foreach(test, key, v) {
    int ok = 0;
    for (size_t k = 0; test_keys[k]; k++) ok |= !strcmp(key, test_keys[k]);
    if (!ok) fail(c, "unknown test field \"%s\"", key);
  }
  if (!c->failed && build_inputs(&iv, test, c->start, why, sizeof(why)) != FP_OK) fail(c, "%s", why);
  if (!c->failed) {
    fp_err_t err = run_pipeline(o->rules_dir, json_object_get(test, "settings"), &iv, &ev, &nev, &dead, why, sizeof(why));
    if (err != FP_OK) fail(c, "cannot run: %s", why);
    else {
      if (dead) fail(c, "%zu input mention(s) were dead-lettered (invalid or late)", dead);
      check_test(c, test, ev, nev);
    }
  }
  fprintf(c->out, "%s %s: %s (%zu mentions, %zu events)\n", c->failed ? "FAIL" : "PASS", c->file, c->name, iv.n, nev);
  if (c->failed || o->verbose) {
    if (c->log.len) fputs(c->log.data, c->out);
    fprintf(c->out, "    events (%zu):\n", nev);
    for (size_t k = 0; k < nev; k++) {
      char b[512];
      describe_ev(&ev[k], c->start, b, sizeof(b));
      fprintf(c->out, "      %s %s\n", ev[k].matched ? "=" : " ", b);
    }
  }
  if (c->failed) (*failed)++;
  else (*passed)++;
  for (size_t k = 0; k < iv.n; k++) free(iv.v[k].json);
  free(iv.v);
  free(ev);
}

static void run_file(const fp_ruletest_opts_t *o, const char *path, int *passed, int *failed) {
  json_error_t jerr;
  json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr), *tests, *t;
  tctx_t c;
  size_t i;
  memset(&c, 0, sizeof(c));
  c.out = o->out;
  c.file = path;
  if (!doc) {
    fprintf(o->out, "FAIL %s: not valid JSON: line %d: %s\n", path, jerr.line, jerr.text);
    (*failed)++;
    return;
  }
  const char *start = json_string_value(json_object_get(doc, "start"));
  tests = json_object_get(doc, "tests");
  if (fp_time_parse_rfc3339(start ? start : DEFAULT_START, &c.start) != FP_OK || !json_is_array(tests)) {
    fprintf(o->out, "FAIL %s: expected {\"start\": RFC 3339 (optional), \"tests\": [...]}\n", path);
    (*failed)++;
    json_decref(doc);
    return;
  }
  json_array_foreach(tests, i, t) {
    char name[128];
    const char *n = json_string_value(json_object_get(t, "name"));
    snprintf(name, sizeof(name), "%s", n ? n : "(unnamed)");
    if (!n) snprintf(name, sizeof(name), "test %zu", i);
    if (o->filter && !strstr(name, o->filter)) continue;
    c.name = name;
    run_test(&c, o, t, passed, failed);
  }
  fp_buf_free(&c.log);
  json_decref(doc);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

fp_err_t fp_ruletest_run(const fp_ruletest_opts_t *o, int *passed_out, int *failed_out, char *errstr, size_t es) {
  int passed = 0, failed = 0;
  char **found = NULL;
  size_t nfound = 0;
  FILE *out = o->out ? o->out : stdout;
  fp_ruletest_opts_t opts = *o;
  opts.out = out;
  {
    /* the rules must load at all: say so once, not once per test */
    if (fp_rules_check_dir(o->rules_dir, NULL, errstr, es) != FP_OK) return FP_ERR_RULE_LOAD;
  }
  if (!o->nfiles) {
    char dir[4096];
    DIR *d;
    struct dirent *de;
    snprintf(dir, sizeof(dir), "%s/tests", o->rules_dir);
    if (!(d = opendir(dir))) return fp_seterr(errstr, es, FP_ERR_IO, "%s: no such directory (rule tests live there)", dir);
    while ((de = readdir(d))) {
      size_t l = strlen(de->d_name);
      if (l < 6 || strcmp(de->d_name + l - 5, ".json") || de->d_name[0] == '.') continue;
      char **q = realloc(found, (nfound + 1) * sizeof(*q));
      if (!q) break;
      found = q;
      size_t need = strlen(dir) + l + 2;
      if (!(found[nfound] = malloc(need))) break;
      snprintf(found[nfound++], need, "%s/%s", dir, de->d_name);
    }
    closedir(d);
    if (!nfound) {
      free(found);
      return fp_seterr(errstr, es, FP_ERR_IO, "%s: no .json test files", dir);
    }
    qsort(found, nfound, sizeof(*found), cmp_str);
  }
  for (size_t i = 0; i < (o->nfiles ? o->nfiles : nfound); i++)
    run_file(&opts, o->nfiles ? o->files[i] : found[i], &passed, &failed);
  fprintf(out, "%d passed, %d failed\n", passed, failed);
  for (size_t i = 0; i < nfound; i++) free(found[i]);
  free(found);
  if (passed_out) *passed_out = passed;
  if (failed_out) *failed_out = failed;
  return FP_OK;
}
