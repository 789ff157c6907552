/*
 * replay.c - owns the offline replay (see replay.h): reading the input files, mapping
 * them, feeding the production pipeline in batches, and the summary of what came out.
 *
 * How it runs: every file is read in order; a record's offset is its line number, counted
 * on across files, so offsets ascend as the store's fence requires. Records go to
 * fp_pipeline_run() in batches (source "replay:0", a sweep with every batch so incidents
 * resolve as event time passes), with the in-process store or a Redis store under a fresh key
 * prefix. Records that cannot be mapped (CSV rows, mapping failures) are dead-lettered here
 * with the same codes as the pipeline's (schema, decode), and never reach the pipeline.
 *
 * Determinism: nothing in the incident lines or the summary document depends on the wall
 * clock or on timing; the throughput and the progress bar go only to the log stream.
 */
#include "replay.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "input.h"
#include "log.h"
#include "mapping.h"
#include "pipeline.h"
#include "util.h"

#define DL_EXAMPLES 10
#define CRISIS_TAIL_MS (3600 * 1000LL) /* events this long after a crisis still belong to it */

typedef struct incident_s {
  char id[24], rule[80], entity[136], opened_sev[8], peak[8], status[16];
  int64_t first_ms, detected_ms;
  int events;
} incident_t;

typedef struct crisis_s {
  char kind[24], brand[136], root[136];
  int64_t start_ms, end_ms;
  int detected;
  char incident_id[24], rule[80], entity[136], sev_at[8], peak[8];
  int64_t detected_ms;
} crisis_t;

typedef struct replay_s {
  const fp_replay_opts_t *o;
  fp_pipeline_t *pipe;
  fp_conf_t *conf;
  const fp_mapping_set_t *maps;
  fp_mapping_set_t *owned_maps, *csv_maps;
  const fp_mapping_t *map; /* of the current file */
  /* batch */
  fp_input_t *in;
  size_t *in_off; /* start of each payload in arena */
  int64_t *in_line;
  size_t *in_file;
  size_t n, cap;
  fp_buf_t arena, scratch;
  int64_t wm;
  /* counts */
  uint64_t records, decoded, late, evals, rule_errors, events;
  uint64_t dl_by_code[FP_ERR__COUNT];
  json_t *dl_examples;
  /* incidents and crises */
  incident_t *inc;
  size_t ninc, capinc;
  crisis_t *cr;
  size_t ncr;
  uint64_t bg_by_sev[5];
  int bg_max;
  /* progress */
  int progress;
  int64_t t0_ns, last_draw_ns;
  size_t file_idx;
  double file_frac;
} replay_t;

int fp_replay_sev_rank(const char *sev) {
  if (!sev) return 0;
  if (!strcmp(sev, "sev1")) return 4;
  if (!strcmp(sev, "sev2")) return 3;
  if (!strcmp(sev, "sev3")) return 2;
  if (!strcmp(sev, "sev4")) return 1;
  return 0;
}

static const char *sev_of_rank(int r) {
  static const char *const n[] = {"none", "sev4", "sev3", "sev2", "sev1"};
  return r >= 0 && r <= 4 ? n[r] : "none";
}

static void copy_str(char *dst, size_t size, const char *src) { snprintf(dst, size, "%s", src ? src : ""); }

static int64_t time_of(json_t *doc, const char *field) {
  int64_t ms = INT64_MIN;
  const char *s = json_string_value(json_object_get(doc, field));
  if (!s || fp_time_parse_rfc3339(s, &ms) != FP_OK) return INT64_MIN;
  return ms;
}

/* ---- ground truth -------------------------------------------------------------------- */

static fp_err_t load_truth(replay_t *r, const char *path, char *errstr, size_t es) {
  json_error_t jerr;
  json_t *doc = json_load_file(path, 0, &jerr), *arr, *c;
  size_t i;
  if (!doc) return fp_seterr(errstr, es, FP_ERR_IO, "%s:%d: %s", path, jerr.line, jerr.text);
  arr = json_object_get(doc, "crises");
  if (!json_is_array(arr)) {
    json_decref(doc);
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "%s: expected {\"crises\": [...]}", path);
  }
  r->cr = calloc(json_array_size(arr) + 1, sizeof(*r->cr));
  if (!r->cr) {
    json_decref(doc);
    return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  }
  json_array_foreach(arr, i, c) {
    crisis_t *x = &r->cr[r->ncr];
    copy_str(x->kind, sizeof(x->kind), json_string_value(json_object_get(c, "kind")));
    copy_str(x->brand, sizeof(x->brand), json_string_value(json_object_get(c, "brand")));
    copy_str(x->root, sizeof(x->root), json_string_value(json_object_get(c, "root")));
    x->start_ms = time_of(c, "start");
    x->end_ms = time_of(c, "end");
    if (!x->brand[0] || x->start_ms == INT64_MIN || x->end_ms == INT64_MIN) {
      json_decref(doc);
      return fp_seterr(errstr, es, FP_ERR_CONFIG, "%s: crisis %zu needs brand, start and end (RFC 3339)", path, i);
    }
    r->ncr++;
  }
  json_decref(doc);
  return FP_OK;
}

/* ---- events -------------------------------------------------------------------------- */

static incident_t *find_incident(replay_t *r, const char *id) {
  for (size_t i = r->ninc; i-- > 0;)
    if (!strcmp(r->inc[i].id, id)) return &r->inc[i];
  if (r->ninc == r->capinc) {
    size_t cap = r->capinc ? r->capinc * 2 : 64;
    incident_t *q = realloc(r->inc, cap * sizeof(*q));
    if (!q) return NULL;
    r->inc = q;
    r->capinc = cap;
  }
  incident_t *x = &r->inc[r->ninc++];
  memset(x, 0, sizeof(*x));
  copy_str(x->id, sizeof(x->id), id);
  return x;
}

static void on_event(replay_t *r, const fp_outrec_t *rec) {
  json_t *doc = json_loadb(rec->payload, rec->len, 0, NULL);
  const char *status, *sev, *entity, *rule;
  int64_t at;
  int rank, rising, attributed = 0;
  incident_t *x;
  if (!doc) return;
  status = json_string_value(json_object_get(doc, "status"));
  sev = json_string_value(json_object_get(doc, "severity"));
  entity = json_string_value(json_object_get(doc, "entity"));
  rule = json_string_value(json_object_get(json_object_get(doc, "rule"), "id"));
  at = time_of(doc, "event_time");
  rank = fp_replay_sev_rank(sev);
  rising = status && (!strcmp(status, "opened") || !strcmp(status, "reopened") || !strcmp(status, "escalated"));
  const char *iid = json_string_value(json_object_get(doc, "incident_id"));
  if ((x = find_incident(r, iid ? iid : "?"))) {
    if (!x->events) {
      copy_str(x->rule, sizeof(x->rule), rule);
      copy_str(x->entity, sizeof(x->entity), entity);
      copy_str(x->opened_sev, sizeof(x->opened_sev), sev);
      x->first_ms = time_of(doc, "first_mention_at");
      x->detected_ms = time_of(doc, "detected_at");
    }
    x->events++;
    copy_str(x->status, sizeof(x->status), status);
    copy_str(x->peak, sizeof(x->peak), json_string_value(json_object_get(doc, "peak_severity")));
  }
  for (size_t c = 0; rising && entity && c < r->ncr; c++) {
    crisis_t *k = &r->cr[c];
    if (strcmp(entity, k->brand) && (!k->root[0] || strcmp(entity, k->root))) continue;
    if (at < k->start_ms || at > k->end_ms + CRISIS_TAIL_MS) continue;
    attributed = 1;
    if (fp_replay_sev_rank(k->peak) < rank) copy_str(k->peak, sizeof(k->peak), sev);
    if (!k->detected && at <= k->end_ms) {
      k->detected = 1;
      k->detected_ms = at;
      copy_str(k->incident_id, sizeof(k->incident_id), x ? x->id : "");
      copy_str(k->rule, sizeof(k->rule), rule);
      copy_str(k->entity, sizeof(k->entity), entity);
      copy_str(k->sev_at, sizeof(k->sev_at), sev);
    }
  }
  if (rising && !attributed) {
    r->bg_by_sev[rank]++;
    if (rank > r->bg_max) r->bg_max = rank;
  }
  r->events++;
  if (r->o->incidents) {
    fwrite(rec->payload, 1, rec->len, r->o->incidents);
    fputc('\n', r->o->incidents);
  }
  if (r->o->on_event) r->o->on_event(r->o->opaque, rec, doc);
  json_decref(doc);
}

/* ---- dead letters -------------------------------------------------------------------- */

static void dead_letter(replay_t *r, fp_err_t code, int64_t offset, size_t file, int64_t line, const char *reason) {
  r->dl_by_code[code < FP_ERR__COUNT ? code : FP_ERR_DECODE]++;
  if (json_array_size(r->dl_examples) < DL_EXAMPLES)
    json_array_append_new(r->dl_examples,
                          json_pack("{s:I,s:s,s:I,s:s,s:s}", "offset", (json_int_t)offset, "file",
                                    r->o->files[file], "line", (json_int_t)line, "code", fp_err_name(code),
                                    "reason", reason ? reason : ""));
  if (r->o->on_mention) r->o->on_mention(r->o->opaque, offset, NULL, code, reason);
}

/* ---- progress ------------------------------------------------------------------------ */

static void draw_progress(replay_t *r, int final) {
  int64_t now = fp_mono_ns();
  double secs, frac, rate, eta;
  char bar[31];
  if (!r->progress || (!final && now - r->last_draw_ns < 200000000LL)) return;
  r->last_draw_ns = now;
  secs = (double)(now - r->t0_ns) / 1e9;
  frac = r->o->nfiles ? ((double)r->file_idx + (r->file_frac < 0 ? 0 : r->file_frac)) / (double)r->o->nfiles : 0;
  if (final) frac = 1;
  rate = secs > 0 ? (double)r->records / secs : 0;
  eta = frac > 0.001 ? secs * (1 - frac) / frac : 0;
  for (int i = 0; i < 30; i++) bar[i] = i < (int)(frac * 30) ? '=' : (i == (int)(frac * 30) ? '>' : ' ');
  bar[30] = '\0';
  fprintf(r->o->log, "\r[%s] %3d%% %llu records  %.0f/s  ETA %.0fs   %s", bar, (int)(frac * 100),
          (unsigned long long)r->records, rate, eta, final ? "\n" : "");
  fflush(r->o->log);
}

/* ---- batches ------------------------------------------------------------------------- */

static fp_err_t flush_batch(replay_t *r, char *errstr, size_t es) {
  fp_pipeline_out_t po;
  fp_err_t err;
  if (r->n == 0) return FP_OK;
  for (size_t i = 0; i < r->n; i++) r->in[i].payload = r->arena.data + r->in_off[i];
  err = fp_pipeline_run(r->pipe, "replay:0", &r->wm, r->in[0].offset, r->in, r->n, 1, NULL, NULL, &po, errstr, es);
  if (err != FP_OK) return err;
  r->decoded += po.decoded - po.late;
  r->late += po.late;
  r->evals += po.evals;
  r->rule_errors += po.rule_errors;
  for (size_t i = 0; i < r->n; i++) {
    if (po.status[i] != FP_OK) {
      dead_letter(r, po.status[i], r->in[i].offset, r->in_file[i], r->in_line[i], po.reason[i]);
    } else if (r->o->on_mention) {
      fp_mention_t m;
      char why[256];
      if (fp_mention_decode(r->in[i].payload, r->in[i].len, (size_t)r->conf->input_max_bytes, &m, why,
                            sizeof(why)) == FP_OK) {
        r->o->on_mention(r->o->opaque, r->in[i].offset, &m, FP_OK, NULL);
        fp_mention_clear(&m);
      }
    }
  }
  for (size_t i = 0; i < po.events->n; i++) on_event(r, &po.events->recs[i]);
  r->n = 0;
  fp_buf_reset(&r->arena);
  draw_progress(r, 0);
  return FP_OK;
}

static fp_err_t add_input(replay_t *r, const char *data, size_t len, int64_t offset, size_t file, int64_t line,
                          char *errstr, size_t es) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 1024;
    void *q;
    if (!(q = realloc(r->in, cap * sizeof(*r->in)))) goto nomem;
    r->in = q;
    if (!(q = realloc(r->in_off, cap * sizeof(*r->in_off)))) goto nomem;
    r->in_off = q;
    if (!(q = realloc(r->in_line, cap * sizeof(*r->in_line)))) goto nomem;
    r->in_line = q;
    if (!(q = realloc(r->in_file, cap * sizeof(*r->in_file)))) goto nomem;
    r->in_file = q;
    r->cap = cap;
  }
  r->in_off[r->n] = r->arena.len;
  r->in[r->n].len = len;
  r->in[r->n].offset = offset;
  r->in_line[r->n] = line;
  r->in_file[r->n] = file;
  if (fp_buf_append(&r->arena, data, len) != FP_OK) goto nomem;
  r->n++;
  if (r->n >= r->o->batch) return flush_batch(r, errstr, es);
  return FP_OK;
nomem:
  return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
}

/* Maps one record (CSV row or JSON line under a mapping) to mention bytes in r->scratch. */
static fp_err_t map_record(replay_t *r, const fp_record_t *rec, const fp_mapping_t *map, char *why, size_t ws) {
  json_t *doc = NULL;
  fp_err_t err;
  char *s;
  if (rec->row) {
    err = fp_mapping_apply(map, rec->row, &doc, why, ws);
  } else {
    return fp_mapping_transform(map, rec->data, rec->len, &r->scratch, why, ws);
  }
  if (err != FP_OK) return err;
  s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  fp_buf_reset(&r->scratch);
  if (!s || fp_buf_append(&r->scratch, s, strlen(s)) != FP_OK) {
    free(s);
    return fp_seterr(why, ws, FP_ERR_NOMEM, "out of memory");
  }
  free(s);
  return FP_OK;
}

static fp_err_t replay_file(replay_t *r, size_t fi, int64_t *base, char *errstr, size_t es) {
  const char *path = r->o->files[fi];
  fp_reader_t *rd = fp_reader_open(path, FP_FORMAT_AUTO, errstr, es);
  fp_record_t rec;
  fp_err_t err = FP_OK;
  int rc;
  int64_t last_line = 0;
  const fp_mapping_t *map = r->maps ? fp_mapping_set_find(r->maps, path) : NULL;
  if (!rd) return FP_ERR_IO;
  if (r->maps && !map) {
    fp_reader_close(rd);
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "%s: the mapping file has no mapping for this file (nor \"*\")", path);
  }
  r->file_idx = fi;
  while ((rc = fp_reader_next(rd, &rec, errstr, es)) == 1) {
    int64_t offset = *base + rec.line;
    const fp_mapping_t *m = map;
    last_line = rec.line;
    r->records++;
    if (rec.status != FP_OK) {
      dead_letter(r, rec.status, offset, fi, rec.line, rec.reason);
      continue;
    }
    if (rec.row && !m) { /* CSV without a mapping: columns named like mention fields */
      if (!r->csv_maps) {
        size_t nc;
        const char *const *cols = fp_reader_columns(rd, &nc);
        if (!(r->csv_maps = fp_mapping_set_csv_identity(cols, nc, errstr, es))) {
          err = FP_ERR_CONFIG;
          break;
        }
      }
      m = fp_mapping_set_find(r->csv_maps, NULL);
    }
    if (m) {
      char why[256];
      fp_err_t merr = map_record(r, &rec, m, why, sizeof(why));
      if (merr != FP_OK) {
        dead_letter(r, merr, offset, fi, rec.line, why);
        continue;
      }
      err = add_input(r, r->scratch.data, r->scratch.len, offset, fi, rec.line, errstr, es);
    } else {
      err = add_input(r, rec.data, rec.len, offset, fi, rec.line, errstr, es);
    }
    if (err != FP_OK) break;
    if ((r->records & 1023) == 0) r->file_frac = fp_reader_progress(rd);
  }
  if (rc < 0 && err == FP_OK) {
    char inner[512];
    snprintf(inner, sizeof(inner), "%s", errstr);
    err = fp_seterr(errstr, es, FP_ERR_IO, "%s: %s", path, inner);
  }
  if (r->csv_maps) { /* the identity mapping belongs to this file's header */
    fp_mapping_set_destroy(r->csv_maps);
    r->csv_maps = NULL;
    if (err == FP_OK) err = flush_batch(r, errstr, es);
  }
  *base += last_line;
  fp_reader_close(rd);
  return err;
}

/* ---- summary ------------------------------------------------------------------------- */

static json_t *build_summary(replay_t *r) {
  json_t *s = json_object(), *by_code = json_object(), *by_rule = json_object(), *list = json_array();
  json_t *crises = json_array(), *files = json_array(), *bg = json_object(), *rules = json_array();
  uint64_t dl_total = 0;
  fp_rules_t *rs = fp_pipeline_rules(r->pipe);
  for (size_t i = 0; i < r->o->nfiles; i++) json_array_append_new(files, json_string(r->o->files[i]));
  for (int c = 0; c < FP_ERR__COUNT; c++) {
    if (!r->dl_by_code[c]) continue;
    json_object_set_new(by_code, fp_err_name((fp_err_t)c), json_integer((json_int_t)r->dl_by_code[c]));
    dl_total += r->dl_by_code[c];
  }
  for (size_t i = 0; i < fp_rules_count(rs); i++) {
    const char *id = fp_rules_info(rs, i)->id;
    json_array_append_new(rules, json_string(id));
    json_object_set_new(by_rule, id, json_pack("{s:i,s:i,s:i,s:i}", "sev1", 0, "sev2", 0, "sev3", 0, "sev4", 0));
  }
  for (size_t i = 0; i < r->ninc; i++) {
    incident_t *x = &r->inc[i];
    char first[32], det[32];
    json_t *row = json_object_get(by_rule, x->rule);
    if (!row) json_object_set_new(by_rule, x->rule, row = json_object());
    json_t *cnt = json_object_get(row, x->peak);
    json_object_set_new(row, x->peak, json_integer(json_integer_value(cnt) + 1));
    fp_time_format(x->first_ms, first, sizeof(first));
    fp_time_format(x->detected_ms, det, sizeof(det));
    json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:i}", "incident_id", x->id,
                                          "rule", x->rule, "entity", x->entity, "first_mention_at", first,
                                          "detected_at", det, "time_to_detect_ms",
                                          (json_int_t)(x->detected_ms - x->first_ms), "opened_severity",
                                          x->opened_sev, "peak_severity", x->peak, "last_status", x->status,
                                          "events", x->events));
  }
  for (size_t i = 0; i < r->ncr; i++) {
    crisis_t *k = &r->cr[i];
    char start[32], end[32], det[32];
    fp_time_format(k->start_ms, start, sizeof(start));
    fp_time_format(k->end_ms, end, sizeof(end));
    json_t *c = json_pack("{s:s,s:s,s:s,s:s,s:b,s:s}", "kind", k->kind, "brand", k->brand, "start", start, "end",
                          end, "detected", k->detected, "peak_severity", k->peak[0] ? k->peak : "none");
    if (k->root[0]) json_object_set_new(c, "root", json_string(k->root));
    if (k->detected) {
      fp_time_format(k->detected_ms, det, sizeof(det));
      json_object_set_new(c, "detected_at", json_string(det));
      json_object_set_new(c, "time_from_start_ms", json_integer(k->detected_ms - k->start_ms));
      json_object_set_new(c, "incident_id", json_string(k->incident_id));
      json_object_set_new(c, "rule", json_string(k->rule));
      json_object_set_new(c, "entity", json_string(k->entity));
      json_object_set_new(c, "severity_at_detection", json_string(k->sev_at));
    }
    json_array_append_new(crises, c);
  }
  json_object_set_new(bg, "max_severity", json_string(sev_of_rank(r->bg_max)));
  json_object_set_new(bg, "rising_events",
                      json_pack("{s:I,s:I,s:I,s:I}", "sev1", (json_int_t)r->bg_by_sev[4], "sev2",
                                (json_int_t)r->bg_by_sev[3], "sev3", (json_int_t)r->bg_by_sev[2], "sev4",
                                (json_int_t)r->bg_by_sev[1]));
  json_object_set_new(s, "files", files);
  json_object_set_new(s, "rules", rules);
  json_object_set_new(s, "records", json_integer((json_int_t)r->records));
  json_object_set_new(s, "mentions", json_integer((json_int_t)r->decoded));
  json_object_set_new(s, "dead_letters", json_pack("{s:I,s:o,s:O}", "total", (json_int_t)dl_total, "by_code", by_code,
                                                   "examples", r->dl_examples));
  json_object_set_new(s, "rule_evaluations", json_integer((json_int_t)r->evals));
  json_object_set_new(s, "rule_errors", json_integer((json_int_t)r->rule_errors));
  json_object_set_new(s, "events", json_integer((json_int_t)r->events));
  json_object_set_new(s, "incidents", json_pack("{s:I,s:o,s:o}", "total", (json_int_t)r->ninc, "by_rule", by_rule,
                                                "list", list));
  if (r->ncr || r->o->truth) json_object_set_new(s, "crises", crises);
  else json_decref(crises);
  json_object_set_new(s, "background", bg);
  return s;
}

static void fmt_dur(int64_t ms, char *buf, size_t size) {
  int64_t s = ms / 1000;
  if (ms < 0) snprintf(buf, size, "-%llds", (long long)(-ms / 1000));
  else if (s < 60) snprintf(buf, size, "%llds", (long long)s);
  else if (s < 3600) snprintf(buf, size, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else snprintf(buf, size, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
}

void fp_replay_print_summary(FILE *out, json_t *s) {
  json_t *dl = json_object_get(s, "dead_letters"), *inc = json_object_get(s, "incidents"), *v, *c;
  const char *k;
  size_t i;
  char d[32];
  fprintf(out, "replay: %lld records, %lld mentions evaluated, %lld dead letters", 
          (long long)json_integer_value(json_object_get(s, "records")),
          (long long)json_integer_value(json_object_get(s, "mentions")),
          (long long)json_integer_value(json_object_get(dl, "total")));
  if (json_object_size(json_object_get(dl, "by_code"))) {
    int first = 1;
    fputs(" (", out);
    json_object_foreach(json_object_get(dl, "by_code"), k, v) {
      fprintf(out, "%s%s %lld", first ? "" : ", ", k, (long long)json_integer_value(v));
      first = 0;
    }
    fputs(")", out);
  }
  fprintf(out, ", %lld incident events\n", (long long)json_integer_value(json_object_get(s, "events")));
  json_array_foreach(json_object_get(dl, "examples"), i, v)
    fprintf(out, "  dead letter %s:%lld [%s] %s\n", json_string_value(json_object_get(v, "file")),
            (long long)json_integer_value(json_object_get(v, "line")), json_string_value(json_object_get(v, "code")),
            json_string_value(json_object_get(v, "reason")));
  fprintf(out, "incidents by rule and peak severity (%lld in all):\n",
          (long long)json_integer_value(json_object_get(inc, "total")));
  json_object_foreach(json_object_get(inc, "by_rule"), k, v)
    fprintf(out, "  %-28s sev1 %-4lld sev2 %-4lld sev3 %-4lld sev4 %lld\n", k,
            (long long)json_integer_value(json_object_get(v, "sev1")),
            (long long)json_integer_value(json_object_get(v, "sev2")),
            (long long)json_integer_value(json_object_get(v, "sev3")),
            (long long)json_integer_value(json_object_get(v, "sev4")));
  if (json_array_size(json_object_get(inc, "list"))) fprintf(out, "incidents (detected_at - first_mention_at):\n");
  json_array_foreach(json_object_get(inc, "list"), i, v) {
    fmt_dur(json_integer_value(json_object_get(v, "time_to_detect_ms")), d, sizeof(d));
    fprintf(out, "  %s  %-24s %-16s opened %s, peak %s, %-10s detect %s\n",
            json_string_value(json_object_get(v, "detected_at")), json_string_value(json_object_get(v, "rule")),
            json_string_value(json_object_get(v, "entity")), json_string_value(json_object_get(v, "opened_severity")),
            json_string_value(json_object_get(v, "peak_severity")), json_string_value(json_object_get(v, "last_status")),
            d);
  }
  if ((c = json_object_get(s, "crises"))) {
    fprintf(out, "crises (ground truth):\n");
    json_array_foreach(c, i, v) {
      const char *root = json_string_value(json_object_get(v, "root"));
      fprintf(out, "  %-11s %s%s%s start %s: ", json_string_value(json_object_get(v, "kind")),
              json_string_value(json_object_get(v, "brand")), root ? " root " : "", root ? root : "",
              json_string_value(json_object_get(v, "start")));
      if (json_is_true(json_object_get(v, "detected"))) {
        fmt_dur(json_integer_value(json_object_get(v, "time_from_start_ms")), d, sizeof(d));
        fprintf(out, "detected %s after the start by %s on %s (%s), peak %s\n", d,
                json_string_value(json_object_get(v, "rule")), json_string_value(json_object_get(v, "entity")),
                json_string_value(json_object_get(v, "severity_at_detection")),
                json_string_value(json_object_get(v, "peak_severity")));
      } else {
        fprintf(out, "NOT detected, peak %s\n", json_string_value(json_object_get(v, "peak_severity")));
      }
    }
  }
  v = json_object_get(s, "background");
  fprintf(out, "background (events not attributed to a crisis): max severity %s\n",
          json_string_value(json_object_get(v, "max_severity")));
}

/* ---- the run ------------------------------------------------------------------------- */

static fp_store_t *open_store(const fp_replay_opts_t *o, const fp_conf_t *conf, char *errstr, size_t es) {
  fp_store_t *st;
  if (!o->redis) {
    if ((st = fp_store_mem_new(errstr, es))) fp_store_set_lateness(st, conf->lateness_ms);
    return st;
  }
  char host[256], prefix[96];
  const char *colon = strrchr(o->redis, ':');
  int64_t port = 6379;
  snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - o->redis) : (int)strlen(o->redis), o->redis);
  if (colon && fp_parse_i64(colon + 1, 1, 65535, &port) != FP_OK) {
    fp_seterr(errstr, es, FP_ERR_CONFIG, "--redis: expected HOST:PORT, got \"%s\"", o->redis);
    return NULL;
  }
  /* a fresh namespace, so an earlier replay's windows and incidents cannot leak in */
  snprintf(prefix, sizeof(prefix), "fp-replay-%ld-%lld", (long)getpid(), (long long)fp_now_ms());
  fp_store_redis_conf_t rc = {0};
  rc.host = host;
  rc.port = (int)port;
  rc.password = conf->redis_password;
  rc.db = (int)conf->redis_db;
  rc.prefix = prefix;
  rc.connect_timeout_ms = (int)conf->redis_connect_timeout_ms;
  rc.command_timeout_ms = (int)conf->redis_timeout_ms;
  rc.memo_ttl_ms = 3600 * 1000;
  rc.lateness_ms = conf->lateness_ms;
  return fp_store_redis_new(&rc, errstr, es);
}

fp_err_t fp_replay_run(const fp_replay_opts_t *o, json_t **summary_out, double *rate_out, char *errstr, size_t es) {
  replay_t r;
  fp_replay_opts_t opts = *o;
  fp_err_t err = FP_OK;
  fp_store_t *store;
  fp_rules_limits_t lim;
  int64_t base = 0;
  char truth_guess[4096];

  memset(&r, 0, sizeof(r));
  if (summary_out) *summary_out = NULL;
  if (!opts.batch) opts.batch = 1000;
  r.o = &opts;
  r.wm = INT64_MIN;
  if (!opts.rules_dir || !opts.nfiles) return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "rules directory and input files are required");
  if (!(r.dl_examples = json_array()) || !(r.conf = fp_conf_new())) {
    err = fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto out;
  }
  if ((err = fp_conf_set(r.conf, "rules.dir", opts.rules_dir, errstr, es)) != FP_OK) goto out;
  for (const char *const *kv = opts.settings; kv && *kv; kv++) {
    char key[256];
    const char *eq = strchr(*kv, '=');
    if (!eq || (size_t)(eq - *kv) >= sizeof(key)) {
      err = fp_seterr(errstr, es, FP_ERR_CONFIG, "-s expects key=value, got \"%s\"", *kv);
      goto out;
    }
    snprintf(key, sizeof(key), "%.*s", (int)(eq - *kv), *kv);
    if ((err = fp_conf_set(r.conf, key, eq + 1, errstr, es)) != FP_OK) goto out;
  }
  if (opts.mapping && !(r.maps = r.owned_maps = fp_mapping_set_load(opts.mapping, errstr, es))) {
    err = FP_ERR_CONFIG;
    goto out;
  }
  if (!opts.truth && opts.nfiles == 1 && strcmp(opts.files[0], "-")) {
    snprintf(truth_guess, sizeof(truth_guess), "%s.truth.json", opts.files[0]);
    if (access(truth_guess, R_OK) == 0) opts.truth = truth_guess;
  }
  if (opts.truth && (err = load_truth(&r, opts.truth, errstr, es)) != FP_OK) goto out;
  memset(&lim, 0, sizeof(lim));
  lim.mem_bytes = (size_t)r.conf->rules_memory;
  lim.instructions = (uint64_t)r.conf->rules_instructions;
  lim.deadline_ms = r.conf->rules_deadline_ms;
  lim.quarantine_after = (unsigned)r.conf->rules_quarantine_after;
  if (!(store = open_store(&opts, r.conf, errstr, es))) {
    err = opts.redis ? FP_ERR_REDIS : FP_ERR_NOMEM;
    goto out;
  }
  if (!(r.pipe = fp_pipeline_new(r.conf, &lim, store, NULL, errstr, es))) {
    err = FP_ERR_RULE_LOAD;
    goto out;
  }
  r.progress = opts.progress < 0 ? (opts.log && isatty(fileno(opts.log))) : (opts.progress && opts.log);
  r.t0_ns = fp_mono_ns();
  for (size_t fi = 0; fi < opts.nfiles && err == FP_OK; fi++) err = replay_file(&r, fi, &base, errstr, es);
  if (err == FP_OK) err = flush_batch(&r, errstr, es);
  if (err != FP_OK) goto out;
  draw_progress(&r, 1);
  {
    double secs = (double)(fp_mono_ns() - r.t0_ns) / 1e9;
    double rate = secs > 0 ? (double)r.records / secs : 0;
    json_t *s = build_summary(&r);
    if (opts.log) {
      fp_replay_print_summary(opts.log, s);
      fprintf(opts.log, "replay: %llu records in %.2f s: %.0f mentions/s (%s store)\n",
              (unsigned long long)r.records, secs, rate, opts.redis ? "redis" : "in-process");
    }
    if (rate_out) *rate_out = rate;
    if (summary_out) *summary_out = s;
    else json_decref(s);
  }
out:
  fp_pipeline_destroy(r.pipe);
  fp_conf_destroy(r.conf);
  fp_mapping_set_destroy(r.owned_maps);
  fp_mapping_set_destroy(r.csv_maps);
  json_decref(r.dl_examples);
  free(r.in), free(r.in_off), free(r.in_line), free(r.in_file);
  fp_buf_free(&r.arena);
  fp_buf_free(&r.scratch);
  free(r.inc);
  free(r.cr);
  return err;
}
