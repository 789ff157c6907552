/*
 * report.c - owns `flashpoint report` (see report.h): it replays the input with two
 * observers, one counting mentions per entity and time bucket, one keeping every incident
 * event, and renders one self-contained HTML page (inline CSS, SVG drawn here, a few lines of
 * JS for filtering; no external resource, so the file can be mailed or attached to a ticket).
 *
 * Charts are per brand: mentions per minute, negative mentions per minute (a mention is
 * negative when its own sentiment is <= -0.25; mentions without a score are not counted as
 * negative, the rules' lexicon is not consulted here), and a baseline, the mean rate over the
 * previous 60 minutes. Buckets are one minute, wider when the replay spans more than 12 hours
 * (at most 720 buckets). Incidents keyed on something else than a brand (a root post) are
 * drawn on the brand of the mention that opened them. Entities are shown by the highest
 * severity of their incidents, then the earliest incident, then volume. Like the replay, the page depends only
 * on the input: no wall clock, fixed ordering.
 */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_BUCKETS 720
#define BASELINE_MIN 60

typedef struct series_s {
  char name[136];
  uint32_t *total, *neg; /* per minute since t0 */
  size_t n;
  uint64_t mentions;
  int64_t first_event_ms; /* earliest incident event drawn here, INT64_MAX if none */
  int peak;               /* highest severity drawn here (4 = sev1), 0 if none */
} series_t;

typedef struct ev_s {
  char entity[136], brand[136], rule[80], status[16], sev[8], id[24];
  int64_t at;
  json_t *doc; /* owned */
} ev_t;

typedef struct entmap_s {
  char entity[136], brand[136];
} entmap_t;

typedef struct rep_s {
  int64_t t0, tmax;
  int have_t0;
  series_t *s;
  size_t ns, caps;
  ev_t *ev;
  size_t nev, capev;
  entmap_t *em;
  size_t nem, capem;
  /* (offset, brand) of the current batch, to place events */
  int64_t *boff;
  char (*bbrand)[136];
  size_t nb, capb;
  int64_t last_batch_offset;
  int oom;
} rep_t;

static series_t *series_get(rep_t *r, const char *name) {
  for (size_t i = 0; i < r->ns; i++)
    if (!strcmp(r->s[i].name, name)) return &r->s[i];
  if (r->ns == r->caps) {
    size_t cap = r->caps ? r->caps * 2 : 16;
    series_t *q = realloc(r->s, cap * sizeof(*q));
    if (!q) return NULL;
    r->s = q;
    r->caps = cap;
  }
  series_t *s = &r->s[r->ns++];
  memset(s, 0, sizeof(*s));
  snprintf(s->name, sizeof(s->name), "%s", name);
  s->first_event_ms = INT64_MAX;
  return s;
}

static int series_add(series_t *s, size_t minute, int negative) {
  if (minute >= s->n) {
    size_t n = s->n ? s->n : 64;
    while (n <= minute) n *= 2;
    uint32_t *t = realloc(s->total, n * sizeof(*t));
    if (!t) return -1;
    s->total = t;
    uint32_t *g = realloc(s->neg, n * sizeof(*g));
    if (!g) return -1;
    s->neg = g;
    memset(s->total + s->n, 0, (n - s->n) * sizeof(*t));
    memset(s->neg + s->n, 0, (n - s->n) * sizeof(*g));
    s->n = n;
  }
  s->total[minute]++;
  s->neg[minute] += negative;
  s->mentions++;
  return 0;
}

static void on_mention(void *opaque, int64_t offset, const fp_mention_t *m, fp_err_t status, const char *reason) {
  rep_t *r = opaque;
  series_t *s;
  (void)status, (void)reason;
  if (!m || r->oom) return;
  if (!r->have_t0) {
    r->t0 = m->created_at_ms - m->created_at_ms % 60000;
    r->have_t0 = 1;
  }
  if (m->created_at_ms > r->tmax) r->tmax = m->created_at_ms;
  size_t minute = m->created_at_ms > r->t0 ? (size_t)((m->created_at_ms - r->t0) / 60000) : 0;
  if (!(s = series_get(r, m->brand)) ||
      series_add(s, minute, m->has_sentiment && m->sentiment <= -0.25) != 0) {
    r->oom = 1;
    return;
  }
  /* remember the batch's brands by offset (offsets ascend) */
  if (offset <= r->last_batch_offset) r->nb = 0;
  r->last_batch_offset = offset;
  if (r->nb == r->capb) {
    size_t cap = r->capb ? r->capb * 2 : 1024;
    int64_t *o = realloc(r->boff, cap * sizeof(*o));
    if (!o) {
      r->oom = 1;
      return;
    }
    r->boff = o;
    void *b = realloc(r->bbrand, cap * sizeof(*r->bbrand));
    if (!b) {
      r->oom = 1;
      return;
    }
    r->bbrand = b;
    r->capb = cap;
  }
  r->boff[r->nb] = offset;
  snprintf(r->bbrand[r->nb++], sizeof(r->bbrand[0]), "%s", m->brand);
}

static const char *brand_of_offset(rep_t *r, int64_t offset) {
  size_t lo = 0, hi = r->nb;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (r->boff[mid] < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo < r->nb && r->boff[lo] == offset ? r->bbrand[lo] : NULL;
}

static void on_event(void *opaque, const fp_outrec_t *rec, json_t *doc) {
  rep_t *r = opaque;
  const char *entity = json_string_value(json_object_get(doc, "entity")), *brand = NULL;
  if (r->oom || !entity) return;
  for (size_t i = 0; i < r->ns && !brand; i++)
    if (!strcmp(r->s[i].name, entity)) brand = r->s[i].name;
  for (size_t i = 0; i < r->nem && !brand; i++)
    if (!strcmp(r->em[i].entity, entity)) brand = r->em[i].brand;
  if (!brand && (brand = brand_of_offset(r, rec->offset))) {
    if (r->nem == r->capem) {
      size_t cap = r->capem ? r->capem * 2 : 16;
      entmap_t *q = realloc(r->em, cap * sizeof(*q));
      if (!q) {
        r->oom = 1;
        return;
      }
      r->em = q;
      r->capem = cap;
    }
    snprintf(r->em[r->nem].entity, sizeof(r->em[0].entity), "%s", entity);
    snprintf(r->em[r->nem++].brand, sizeof(r->em[0].brand), "%s", brand);
  }
  if (r->nev == r->capev) {
    size_t cap = r->capev ? r->capev * 2 : 64;
    ev_t *q = realloc(r->ev, cap * sizeof(*q));
    if (!q) {
      r->oom = 1;
      return;
    }
    r->ev = q;
    r->capev = cap;
  }
  ev_t *e = &r->ev[r->nev++];
  memset(e, 0, sizeof(*e));
  snprintf(e->entity, sizeof(e->entity), "%s", entity);
  snprintf(e->brand, sizeof(e->brand), "%s", brand ? brand : entity);
  snprintf(e->rule, sizeof(e->rule), "%s", json_string_value(json_object_get(json_object_get(doc, "rule"), "id")));
  snprintf(e->status, sizeof(e->status), "%s", json_string_value(json_object_get(doc, "status")));
  snprintf(e->sev, sizeof(e->sev), "%s", json_string_value(json_object_get(doc, "severity")));
  snprintf(e->id, sizeof(e->id), "%s", json_string_value(json_object_get(doc, "incident_id")));
  if (fp_time_parse_rfc3339(json_string_value(json_object_get(doc, "event_time")), &e->at) != FP_OK) e->at = 0;
  e->doc = json_incref(doc);
}

/* ---- HTML ---------------------------------------------------------------------------- */

static void put(fp_buf_t *b, const char *s) { fp_buf_append(b, s, strlen(s)); }

static void esc(fp_buf_t *b, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '<': put(b, "&lt;"); break;
    case '>': put(b, "&gt;"); break;
    case '&': put(b, "&amp;"); break;
    case '"': put(b, "&quot;"); break;
    case '\'': put(b, "&#39;"); break;
    default: fp_buf_append(b, s, 1);
    }
  }
}

static const char *sev_color(const char *sev) {
  if (!strcmp(sev, "sev1")) return "#c2255c";
  if (!strcmp(sev, "sev2")) return "#e8590c";
  if (!strcmp(sev, "sev3")) return "#f59f00";
  if (!strcmp(sev, "sev4")) return "#7048e8";
  return "#868e96";
}

static int rising(const char *st) {
  return !strcmp(st, "opened") || !strcmp(st, "escalated") || !strcmp(st, "reopened");
}

static void hhmm(int64_t ms, char *buf, size_t size) {
  char full[32];
  fp_time_format(ms, full, sizeof(full));
  snprintf(buf, size, "%.5s", full + 11);
}

static void chart(fp_buf_t *b, rep_t *r, series_t *s, json_t *crises, size_t nmin) {
  const double W = 1300, H = 280, L = 50, R = 20, T = 36, B = 28;
  size_t bw = nmin > MAX_BUCKETS ? (nmin + MAX_BUCKETS - 1) / MAX_BUCKETS : 1, nb = (nmin + bw - 1) / bw;
  double *tot = calloc(nb + 1, sizeof(double)), *neg = calloc(nb + 1, sizeof(double)),
         *base = calloc(nb + 1, sizeof(double)), ymax = 1;
  size_t i;
  json_t *c;
  if (!tot || !neg || !base) goto out;
  for (size_t m = 0; m < nmin && m < s->n; m++) {
    tot[m / bw] += s->total[m];
    neg[m / bw] += s->neg[m];
  }
  for (i = 0; i < nb; i++) {
    tot[i] /= (double)bw; /* per minute */
    neg[i] /= (double)bw;
    double sum = 0;
    size_t k = 0, span = BASELINE_MIN / bw ? BASELINE_MIN / bw : 1;
    for (size_t j = i >= span ? i - span : 0; j < i; j++, k++) sum += tot[j];
    base[i] = k ? sum / (double)k : tot[i];
    if (tot[i] > ymax) ymax = tot[i];
  }
  ymax = ceil(ymax * 1.15);
#define X(idx) (L + (W - L - R) * ((double)(idx) + 0.5) / (double)nb)
#define Y(v) (T + (H - T - B) * (1 - (v) / ymax))
#define XT(ms) (L + (W - L - R) * ((double)((ms) - r->t0) / 60000.0 / (double)(nb * bw)))
  fp_buf_printf(b, "<svg class=\"chart\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" "
                   "xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"11\">\n",
                W, H, W, H);
  fp_buf_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\" stroke=\"#dee2e6\"/>\n", L,
                T, W - L - R, H - T - B);
  /* ground truth */
  json_array_foreach(crises, i, c) {
    const char *brand = json_string_value(json_object_get(c, "brand"));
    int64_t a, z;
    if (!brand || strcmp(brand, s->name)) continue;
    if (fp_time_parse_rfc3339(json_string_value(json_object_get(c, "start")), &a) != FP_OK ||
        fp_time_parse_rfc3339(json_string_value(json_object_get(c, "end")), &z) != FP_OK)
      continue;
    fp_buf_printf(b, "<rect x=\"%.1f\" y=\"%.0f\" width=\"%.1f\" height=\"%.0f\" fill=\"#fff3bf\"><title>injected ",
                  XT(a), T, XT(z) - XT(a), H - T - B);
    esc(b, json_string_value(json_object_get(c, "kind")));
    fp_buf_printf(b, " crisis (ground truth)</title></rect>\n<text x=\"%.1f\" y=\"%.0f\" fill=\"#a61e4d\">truth: ", XT(a) + 3,
                  H - B - 4);
    esc(b, json_string_value(json_object_get(c, "kind")));
    put(b, "</text>\n");
  }
  /* grid and axes */
  for (int g = 0; g <= 4; g++) {
    double v = ymax * g / 4;
    fp_buf_printf(b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#f1f3f5\"/>"
                     "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#495057\">%.0f</text>\n",
                  L, W - R, Y(v), Y(v), L - 4, Y(v) + 4, v);
  }
  int64_t span_ms = (int64_t)(nb * bw) * 60000, step = 3600000;
  while (span_ms / step > 14) step *= 2;
  while (span_ms / step < 3 && step > 600000) step /= 2;
  for (int64_t t = r->t0 - r->t0 % step + step; t < r->t0 + span_ms; t += step) {
    char lab[8];
    hhmm(t, lab, sizeof(lab));
    fp_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#f1f3f5\"/>"
                     "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#495057\">%s</text>\n",
                  XT(t), XT(t), T, H - B, XT(t), H - B + 14, lab);
  }
  /* lines */
  const struct {
    double *v;
    const char *color, *extra;
  } lines[] = {{base, "#868e96", " stroke-dasharray=\"6 4\""}, {tot, "#1c7ed6", ""}, {neg, "#e03131", ""}};
  for (size_t l = 0; l < 3; l++) {
    fp_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", lines[l].color, lines[l].extra);
    for (i = 0; i < nb; i++) fp_buf_printf(b, "%.1f,%.1f ", X(i), Y(lines[l].v[i]));
    put(b, "\"/>\n");
  }
  /* incident markers; a label goes in the first of three lanes with room, else only the
     tooltip carries it */
  double lane_x[3] = {-1e9, -1e9, -1e9};
  for (i = 0; i < r->nev; i++) {
    ev_t *e = &r->ev[i];
    if (strcmp(e->brand, s->name)) continue;
    int up = rising(e->status);
    if (!up && strcmp(e->status, "resolved")) continue;
    double x = XT(e->at);
    fp_buf_printf(b, "<g><title>%s %s %s (%s)</title><rect x=\"%.1f\" y=\"%.0f\" width=\"%d\" height=\"%.0f\" fill=\"%s\" "
                     "shape-rendering=\"crispEdges\"%s/>",
                  e->status, e->sev, e->rule, e->entity, x - 1, T, up ? 3 : 2, H - T - B,
                  up ? sev_color(e->sev) : "#2f9e44", up ? "" : " opacity=\"0.6\"");
    int lane = -1;
    for (int l = 0; up && l < 3 && lane < 0; l++)
      if (x - lane_x[l] > 230) lane = l;
    if (lane >= 0) {
      lane_x[lane] = x;
      fp_buf_printf(b, "<text x=\"%.1f\" y=\"%d\" fill=\"%s\" font-weight=\"bold\">%s %s ", x + 3, 10 + 10 * lane,
                    sev_color(e->sev), e->sev, e->status);
      esc(b, e->rule);
      put(b, "</text>");
    }
    put(b, "</g>\n");
  }
  put(b, "</svg>\n");
#undef X
#undef Y
#undef XT
out:
  free(tot), free(neg), free(base);
}

static void incident_tables(fp_buf_t *b, rep_t *r, series_t *s) {
  /* the last event of each incident of this brand holds its final samples */
  int any = 0;
  for (size_t i = 0; i < r->nev; i++) {
    ev_t *e = &r->ev[i];
    size_t last = i;
    int first = 1;
    if (strcmp(e->brand, s->name)) continue;
    for (size_t k = 0; k < i; k++)
      if (!strcmp(r->ev[k].id, e->id)) first = 0;
    if (!first) continue;
    for (size_t k = i + 1; k < r->nev; k++)
      if (!strcmp(r->ev[k].id, e->id)) last = k;
    json_t *d = r->ev[last].doc, *sm;
    size_t j;
    if (!any) put(b, "<div class=\"incidents\">");
    any = 1;
    put(b, "<h3><span class=\"sev\" style=\"background:");
    const char *peak = json_string_value(json_object_get(d, "peak_severity"));
    const char *det = json_string_value(json_object_get(d, "detected_at"));
    const char *fm = json_string_value(json_object_get(d, "first_mention_at"));
    fp_buf_printf(b, "%s\">%s</span> ", sev_color(peak ? peak : "none"), peak ? peak : "");
    esc(b, e->rule);
    put(b, " on ");
    esc(b, e->entity);
    fp_buf_printf(b, " <small>incident %s, detected %s, first mention %s, %s at the end</small></h3>\n", e->id,
                  det ? det : "", fm ? fm : "", r->ev[last].status);
    put(b, "<table><tr><th>at</th><th>author</th><th>followers</th><th>sentiment</th><th>why</th><th>text</th></tr>\n");
    json_array_foreach(json_object_get(d, "samples"), j, sm) {
      json_t *sv = json_object_get(sm, "sentiment");
      put(b, "<tr><td>");
      esc(b, json_string_value(json_object_get(sm, "at")));
      put(b, "</td><td>");
      esc(b, json_string_value(json_object_get(sm, "author")));
      fp_buf_printf(b, "</td><td>%lld</td><td>", (long long)json_integer_value(json_object_get(sm, "followers")));
      if (json_is_number(sv)) fp_buf_printf(b, "%.2f", json_number_value(sv));
      put(b, "</td><td>");
      esc(b, json_string_value(json_object_get(sm, "reason")));
      put(b, "</td><td>");
      esc(b, json_string_value(json_object_get(sm, "text")));
      put(b, "</td></tr>\n");
    }
    put(b, "</table>\n");
  }
  if (any) put(b, "</div>\n");
}

static int cmp_series(const void *a, const void *b) {
  const series_t *x = a, *y = b;
  if (x->peak != y->peak) return x->peak > y->peak ? -1 : 1;
  if (x->first_event_ms != y->first_event_ms) return x->first_event_ms < y->first_event_ms ? -1 : 1;
  if (x->mentions != y->mentions) return x->mentions > y->mentions ? -1 : 1;
  return strcmp(x->name, y->name);
}

static const char *CSS =
    "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px 24px;color:#212529;background:#f8f9fa}"
    "h1{font-size:20px;margin:0 0 6px}h2{font-size:16px;margin:18px 0 4px}h3{font-size:13px;margin:10px 0 4px}"
    "small{color:#868e96;font-weight:normal}.entity{background:#fff;border:1px solid #dee2e6;border-radius:6px;"
    "padding:8px 12px;margin:10px 0}table{border-collapse:collapse;font-size:12px;margin:4px 0}"
    "td,th{border:1px solid #dee2e6;padding:2px 6px;text-align:left;vertical-align:top}th{background:#f1f3f5}"
    ".sev{color:#fff;border-radius:3px;padding:0 4px}.legend span{margin-right:14px}.sw{display:inline-block;width:14px;"
    "height:3px;vertical-align:middle;margin-right:4px}#filter{margin:6px 0}.meta{font-size:12px;color:#495057}";

static const char *JS =
    "function fpFilter(){var q=document.getElementById('q').value.toLowerCase(),o=document.getElementById('only').checked;"
    "document.querySelectorAll('.entity').forEach(function(e){var n=e.getAttribute('data-name').toLowerCase(),"
    "h=e.getAttribute('data-incidents')!=='0';e.style.display=(n.indexOf(q)>=0&&(!o||h))?'':'none';});}";

fp_err_t fp_report_run(const fp_report_opts_t *o, char *errstr, size_t es) {
  rep_t r;
  fp_replay_opts_t ro = o->replay;
  json_t *summary = NULL, *crises, *v;
  fp_buf_t b = {0};
  fp_err_t err;
  FILE *f;
  size_t i, nmin, shown = 0, maxe = o->max_entities > 0 ? (size_t)o->max_entities : 24;
  const char *k;
  memset(&r, 0, sizeof(r));
  r.last_batch_offset = INT64_MAX;
  ro.on_mention = on_mention;
  ro.on_event = on_event;
  ro.opaque = &r;
  if (!o->out_path) return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "no output file");
  if ((err = fp_replay_run(&ro, &summary, NULL, errstr, es)) != FP_OK) goto out;
  if (r.oom) {
    err = fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto out;
  }
  crises = json_object_get(summary, "crises");
  nmin = r.have_t0 ? (size_t)((r.tmax - r.t0) / 60000) + 1 : 1;
  for (i = 0; i < r.nev; i++)
    for (size_t s = 0; s < r.ns; s++)
      if (!strcmp(r.s[s].name, r.ev[i].brand)) {
        if (r.ev[i].at < r.s[s].first_event_ms) r.s[s].first_event_ms = r.ev[i].at;
        if (fp_replay_sev_rank(r.ev[i].sev) > r.s[s].peak) r.s[s].peak = fp_replay_sev_rank(r.ev[i].sev);
      }
  qsort(r.s, r.ns, sizeof(*r.s), cmp_series);

  put(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
  esc(&b, o->title ? o->title : "Flashpoint replay report");
  fp_buf_printf(&b, "</title><style>%s</style><script>%s</script></head><body>\n<h1>", CSS, JS);
  esc(&b, o->title ? o->title : "Flashpoint replay report");
  put(&b, "</h1>\n<div class=\"meta\">");
  json_array_foreach(json_object_get(summary, "files"), i, v) {
    esc(&b, json_string_value(v));
    put(&b, " ");
  }
  {
    char a[32] = "", z[32] = "";
    if (r.have_t0) {
      fp_time_format(r.t0, a, sizeof(a));
      fp_time_format(r.tmax, z, sizeof(z));
    }
    fp_buf_printf(&b, "&middot; rules ");
    esc(&b, ro.rules_dir);
    fp_buf_printf(&b, " &middot; %s to %s &middot; %lld records, %lld mentions evaluated, %lld dead letters, %lld incidents</div>\n",
                  a, z, (long long)json_integer_value(json_object_get(summary, "records")),
                  (long long)json_integer_value(json_object_get(summary, "mentions")),
                  (long long)json_integer_value(json_object_get(json_object_get(summary, "dead_letters"), "total")),
                  (long long)json_integer_value(json_object_get(json_object_get(summary, "incidents"), "total")));
  }
  put(&b, "<div class=\"legend meta\"><span><i class=\"sw\" style=\"background:#1c7ed6\"></i>mentions/min</span>"
                    "<span><i class=\"sw\" style=\"background:#e03131\"></i>negative/min</span>"
                    "<span><i class=\"sw\" style=\"background:#868e96\"></i>baseline (previous 60 min)</span>"
                    "<span><i class=\"sw\" style=\"background:#c2255c\"></i>sev1</span>"
                    "<span><i class=\"sw\" style=\"background:#e8590c\"></i>sev2</span>"
                    "<span><i class=\"sw\" style=\"background:#f59f00\"></i>sev3</span>"
                    "<span><i class=\"sw\" style=\"background:#7048e8\"></i>sev4</span>"
                    "<span><i class=\"sw\" style=\"background:#2f9e44\"></i>resolved</span>"
                    "<span><i class=\"sw\" style=\"background:#fff3bf;height:10px\"></i>injected crisis</span></div>\n");
  put(&b, "<div id=\"filter\" class=\"meta\">filter <input id=\"q\" oninput=\"fpFilter()\"> <label><input id=\"only\" "
                    "type=\"checkbox\" onchange=\"fpFilter()\"> only entities with incidents</label></div>\n");
  /* charts */
  for (i = 0; i < r.ns && shown < maxe; i++, shown++) {
    series_t *s = &r.s[i];
    size_t ninc = 0;
    for (size_t e = 0; e < r.nev; e++) ninc += !strcmp(r.ev[e].brand, s->name) && !strcmp(r.ev[e].status, "opened");
    put(&b, "<div class=\"entity\" data-name=\"");
    esc(&b, s->name);
    fp_buf_printf(&b, "\" data-incidents=\"%zu\"><h2>", ninc);
    esc(&b, s->name);
    fp_buf_printf(&b, " <small>%llu mentions, %zu incidents opened</small></h2>\n", (unsigned long long)s->mentions, ninc);
    chart(&b, &r, s, crises, nmin);
    incident_tables(&b, &r, s);
    put(&b, "</div>\n");
  }
  if (r.ns > shown) fp_buf_printf(&b, "<p class=\"meta\">%zu more entities not charted (--entities)</p>\n", r.ns - shown);
  /* summary tables */
  put(&b, "<h2>Incidents by rule and peak severity</h2><table><tr><th>rule</th><th>sev1</th><th>sev2</th><th>sev3</th><th>sev4</th></tr>\n");
  json_object_foreach(json_object_get(json_object_get(summary, "incidents"), "by_rule"), k, v) {
    put(&b, "<tr><td>");
    esc(&b, k);
    fp_buf_printf(&b, "</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td></tr>\n",
                  (long long)json_integer_value(json_object_get(v, "sev1")), (long long)json_integer_value(json_object_get(v, "sev2")),
                  (long long)json_integer_value(json_object_get(v, "sev3")), (long long)json_integer_value(json_object_get(v, "sev4")));
  }
  put(&b, "</table>\n");
  if (json_array_size(crises)) {
    put(&b, "<h2>Injected crises (ground truth)</h2><table><tr><th>kind</th><th>brand</th><th>start</th><th>detected</th>"
                      "<th>after</th><th>by</th><th>peak</th></tr>\n");
    json_array_foreach(crises, i, v) {
      put(&b, "<tr><td>");
      esc(&b, json_string_value(json_object_get(v, "kind")));
      put(&b, "</td><td>");
      esc(&b, json_string_value(json_object_get(v, "brand")));
      put(&b, "</td><td>");
      esc(&b, json_string_value(json_object_get(v, "start")));
      if (json_is_true(json_object_get(v, "detected"))) {
        fp_buf_printf(&b, "</td><td>yes</td><td>%.1f min</td><td>",
                      (double)json_integer_value(json_object_get(v, "time_from_start_ms")) / 60000.0);
        esc(&b, json_string_value(json_object_get(v, "rule")));
      } else {
        put(&b, "</td><td>NO</td><td></td><td>");
      }
      put(&b, "</td><td>");
      esc(&b, json_string_value(json_object_get(v, "peak_severity")));
      put(&b, "</td></tr>\n");
    }
    put(&b, "</table>\n");
  }
  put(&b, "<p class=\"meta\">Generated by flashpoint report " FP_VERSION_STR ". Negative: the mention's own sentiment "
                    "&le; -0.25. Baseline: mean rate of the previous 60 minutes.</p>\n</body></html>\n");
  if (!(f = fopen(o->out_path, "w"))) {
    err = fp_seterr(errstr, es, FP_ERR_IO, "cannot write %s", o->out_path);
    goto out;
  }
  if (fwrite(b.data, 1, b.len, f) != b.len) err = fp_seterr(errstr, es, FP_ERR_IO, "cannot write %s", o->out_path);
  if (fclose(f) != 0 && err == FP_OK) err = fp_seterr(errstr, es, FP_ERR_IO, "cannot write %s", o->out_path);
out:
  json_decref(summary);
  fp_buf_free(&b);
  for (i = 0; i < r.ns; i++) free(r.s[i].total), free(r.s[i].neg);
  for (i = 0; i < r.nev; i++) json_decref(r.ev[i].doc);
  free(r.s), free(r.ev), free(r.em), free(r.boff), free(r.bbrand);
  return err;
}
