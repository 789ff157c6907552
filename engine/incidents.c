/*
 * incidents.c - owns the exactly-once application of lifecycle steps (see incidents.h).
 *
 * Per batch of one source: (1) load the states of every key the batch touches and the
 * lifecycle fence; (2) signals at or below the fence were applied by an earlier run: their
 * events come from the memo; (3) the others step the state machine in offset order;
 * (4) commit states, memo and fence in one atomic store call. A version conflict (another
 * worker or instance changed a key meanwhile) discards the computation and starts again
 * from (1), so two instances never open two incidents for one crisis.
 */
#include "incidents.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_lc.h"
#include "util.h"

#define FP_LC_MAX_ATTEMPTS 16
#define FP_LC_MAX_SWEEPS 64 /* incidents resolved by time passing, per run at most */
/* An open incident of a rule that is not loaded is looked at again this much event time
 * later: the index takes the earliest due first, so leaving it in place would keep it at the
 * head of every sweep (64 of them would stop every incident behind them from resolving). */
#define FP_LC_UNKNOWN_RULE_RETRY_MS (60 * 60 * 1000LL)

void fp_outvec_reset(fp_outvec_t *v) {
  for (size_t i = 0; i < v->n; i++) {
    free(v->recs[i].topic);
    free(v->recs[i].key);
    free(v->recs[i].payload);
  }
  v->n = 0;
}

void fp_outvec_free(fp_outvec_t *v) {
  fp_outvec_reset(v);
  free(v->recs);
  v->recs = NULL;
  v->cap = 0;
}

/* Appends a copy of the record's strings; status and severity are left empty. */
static fp_outrec_t *outvec_push(fp_outvec_t *v, int64_t offset, const char *topic, const char *key,
                                const char *payload, size_t len) {
  fp_outrec_t *r;
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    fp_outrec_t *p = realloc(v->recs, cap * sizeof(*p));
    if (!p) return NULL;
    v->recs = p;
    v->cap = cap;
  }
  r = &v->recs[v->n];
  r->offset = offset;
  r->topic = strdup(topic);
  r->key = key ? strdup(key) : NULL;
  r->payload = malloc(len + 1);
  if (!r->topic || (key && !r->key) || !r->payload) {
    free(r->topic), free(r->key), free(r->payload);
    return NULL;
  }
  memcpy(r->payload, payload, len);
  r->payload[len] = '\0';
  r->len = len;
  r->status[0] = r->severity[0] = '\0';
  v->n++;
  return r;
}

fp_err_t fp_outvec_add(fp_outvec_t *v, int64_t offset, const char *topic, const char *key,
                       const char *payload, size_t len) {
  fp_outrec_t *r = outvec_push(v, offset, topic, key, payload, len);
  if (!r) return FP_ERR_NOMEM;
  {
    /* status and severity for metrics: read back from the event itself */
    json_error_t jerr;
    json_t *ev = json_loadb(payload, len, 0, &jerr);
    const char *st = json_string_value(json_object_get(ev, "status"));
    const char *sv = json_string_value(json_object_get(ev, "severity"));
    snprintf(r->status, sizeof(r->status), "%s", st ? st : "");
    snprintf(r->severity, sizeof(r->severity), "%s", sv ? sv : "none");
    json_decref(ev);
  }
  return FP_OK;
}

fp_err_t fp_outvec_copy(fp_outvec_t *v, const fp_outrec_t *rec) {
  fp_outrec_t *r = outvec_push(v, rec->offset, rec->topic, rec->key, rec->payload, rec->len);
  if (!r) return FP_ERR_NOMEM;
  memcpy(r->status, rec->status, sizeof(r->status));
  memcpy(r->severity, rec->severity, sizeof(r->severity));
  return FP_OK;
}

void fp_incidents_key(const char *rule_id, const char *entity, char *buf, size_t size) {
  snprintf(buf, size, "%s|%s", rule_id, entity);
}

typedef struct lc_key_s {
  char key[300];
  int64_t version;
  int64_t silenced_until;  /* wall ms; paging muted until then */
  fp_lc_state_t st;
  int dirty;
  int swept; /* loaded because the index said due: committed even if unchanged, so its index
              * entry moves to its real due time (or goes) instead of staying at the head */
  const fp_rule_info_t *rule;
} lc_key_t;

static size_t key_index(const lc_key_t *keys, size_t n, const char *k) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(keys[i].key, k) == 0) return i;
  return n;
}

/* Reads a stored state into @p k (an unreadable one starts afresh, logged once). */
static void key_load(lc_key_t *k, const char *text, int64_t version) {
  k->version = version;
  k->dirty = 0;
  memset(&k->st, 0, sizeof(k->st));
  if (text) {
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j || fp_lc_state_from_json(j, &k->st) != FP_OK) {
      fp_log_once(FP_LOG_WARN, "incidents", "unreadable lifecycle state for %s; starting afresh", k->key);
      memset(&k->st, 0, sizeof(k->st));
    }
    json_decref(j);
  }
}

/* Adds the memoised records of one offset (a JSON array of [topic, key, payload]). */
static fp_err_t add_memo(fp_outvec_t *out, int64_t offset, const char *text) {
  json_error_t jerr;
  json_t *a = json_loads(text, 0, &jerr), *rec;
  size_t i;
  fp_err_t err = FP_OK;
  if (!json_is_array(a)) {
    json_decref(a);
    return FP_ERR_SCHEMA;
  }
  json_array_foreach(a, i, rec) {
    const char *topic, *key, *payload;
    if (json_unpack(rec, "[s,s,s]", &topic, &key, &payload) != 0) {
      err = FP_ERR_SCHEMA;
      break;
    }
    if ((err = fp_outvec_add(out, offset, topic, key, payload, strlen(payload))) != FP_OK) break;
  }
  json_decref(a);
  return err;
}

/* Events of a run that carry top terms ("opened", "escalated", "reopened"), read for all of
 * them in one round trip once the run's offsets are stepped (fill_top_terms): a crisis opens
 * many incidents in one run, and a read each, queued behind the other workers' window calls,
 * held every incident of the run back by all of them. */
typedef struct {
  json_t *ev;                   /* borrowed: held by its offset's records */
  const fp_rule_info_t *rule;   /* its first TOPK window is read */
  const char *entity;           /* borrowed from the signal */
  int64_t at_ms;                /* as of the event's time */
} top_want_t;

typedef struct {
  top_want_t *v;
  size_t n, cap;
} top_wants_t;

#define FP_INC_TOP_TERMS 5

static fp_err_t want_top_terms(top_wants_t *w, json_t *ev, const fp_rule_info_t *rule, const char *entity,
                               int64_t at_ms) {
  if (w->n == w->cap) {
    size_t cap = w->cap ? 2 * w->cap : 16;
    top_want_t *v = realloc(w->v, cap * sizeof(*v));
    if (!v) return FP_ERR_NOMEM;
    w->v = v;
    w->cap = cap;
  }
  w->v[w->n++] = (top_want_t){ev, rule, entity, at_ms};
  return FP_OK;
}

/* Sets each wanted event's top_terms from its rule's first TOPK window (rules without one get
 * none), all in one store call. A failed read leaves them out, as a failed read of one did. */
static void fill_top_terms(fp_store_t *store, top_wants_t *w) {
  fp_topk_req_t *q = calloc(w->n ? w->n : 1, sizeof(*q));
  fp_topk_entry_t (*top)[FP_INC_TOP_TERMS] = calloc(w->n ? w->n : 1, sizeof(*top));
  char (*keys)[400] = calloc(w->n ? w->n : 1, sizeof(*keys)), err[128];
  size_t asked = 0;
  if (!q || !top || !keys || !w->n) goto out;
  for (size_t i = 0; i < w->n; i++) {
    const fp_rule_info_t *r = w->v[i].rule;
    for (size_t x = 0; x < r->nwindows; x++) {
      if (r->windows[x].spec.kind != FP_WIN_TOPK) continue;
      snprintf(keys[i], sizeof(keys[i]), "%s|%s|%s", r->id, w->v[i].entity, r->windows[x].name);
      q[i] = (fp_topk_req_t){keys[i], &r->windows[x].spec, w->v[i].at_ms, FP_INC_TOP_TERMS, top[i], 0};
      asked++;
      break;
    }
  }
  if (!asked || fp_store_topk_many(store, q, w->n, err, sizeof(err)) != FP_OK) goto out;
  for (size_t i = 0; i < w->n; i++) {
    json_t *a;
    if (!q[i].k) continue;
    a = json_array();
    for (size_t t = 0; t < q[i].n_out; t++)
      if (fp_utf8_valid(top[i][t].term, strlen(top[i][t].term)))
        json_array_append_new(a, json_pack("{s:s,s:f}", "term", top[i][t].term, "count", top[i][t].count));
    json_object_set_new(w->v[i].ev, "top_terms", a);
  }
out:
  free(q), free(top), free(keys);
}

/* Turns records [topic, key, event] into [topic, key, payload]: the event's JSON text. */
static fp_err_t write_payloads(json_t *recs) {
  size_t x;
  json_t *rec;
  json_array_foreach(recs, x, rec) {
    char *payload = json_dumps(json_array_get(rec, 2), JSON_COMPACT | JSON_SORT_KEYS);
    if (!payload) return FP_ERR_NOMEM;
    json_array_set_new(rec, 2, json_string(payload));
    free(payload);
  }
  return FP_OK;
}

/* Steps the signals of one offset; appends their records to @p recs ([topic, key, event]; the
 * event becomes its payload text with write_payloads) and to @p wants those that carry top
 * terms. */
static fp_err_t step_offset(lc_key_t *keys, size_t nkeys, const fp_lc_params_t *params,
                            const fp_inc_signal_t *sig, size_t from, size_t to,
                            const char *default_topic, json_t *recs, top_wants_t *wants) {
  json_t *events = json_array();
  fp_err_t err = FP_OK;
  static _Thread_local fp_lc_state_t prev;

  for (size_t j = from; j < to && !err; j++) {
    char k[300];
    size_t ki, before = json_array_size(events);
    fp_incidents_key(sig[j].sig.rule->id, sig[j].sig.entity, k, sizeof(k));
    ki = key_index(keys, nkeys, k);
    if (ki == nkeys) continue; /* cannot happen: every signal's key was loaded */
    memcpy(&prev, &keys[ki].st, sizeof(prev));
    fp_lc_step(&keys[ki].st, params, &sig[j].sig, events);
    if (memcmp(&prev, &keys[ki].st, sizeof(prev)) != 0) keys[ki].dirty = 1;
    for (size_t x = before; x < json_array_size(events); x++) {
      json_t *ev = json_array_get(events, x);
      const char *sev = json_string_value(json_object_get(ev, "severity"));
      const char *status = json_string_value(json_object_get(ev, "status"));
      int sv = sev ? fp_sev_parse(sev) : -1;
      const char *topic = fp_lc_route(sig[j].sig.rule, sv > 0 ? (fp_sev_t)sv : FP_SEV_NONE, default_topic);
      if (status && (!strcmp(status, "opened") || !strcmp(status, "escalated") || !strcmp(status, "reopened")) &&
          (err = want_top_terms(wants, ev, sig[j].sig.rule, sig[j].sig.entity, sig[j].sig.at_ms)))
        break;
      if (keys[ki].silenced_until > fp_now_ms()) { /* recorded, not paged */
        topic = fp_lc_route(sig[j].sig.rule, FP_SEV_NONE, default_topic);
        json_object_set_new(ev, "silenced", json_true());
      }
      json_array_append_new(recs, json_pack("[s,s,O]", topic,
                                            json_string_value(json_object_get(ev, "incident_id")), ev));
    }
  }
  json_decref(events);
  return err;
}

static void drop_from(fp_outvec_t *out, size_t start) {
  while (out->n > start) {
    fp_outrec_t *r = &out->recs[--out->n];
    free(r->topic), free(r->key), free(r->payload);
  }
}

/*
 * The second look: another partition may have moved the low watermark between our load and
 * our commit (two partitions' last runs at the same moment), leaving incidents due that no
 * one swept. The commit says so; then this pass resolves them within the same run: its
 * events are appended to the memo of the run's last offset, so a replay of that offset
 * re-emits them too.
 */
/* Appends to a commit the due entries marked no_rule (their rule is not loaded), unchanged
 * but due again FP_LC_UNKNOWN_RULE_RETRY_MS after @p low_wm. The state texts are malloc'd
 * copies, freed by the caller with the others. */
static fp_err_t add_unloaded(const fp_lc_due_t *dues, size_t ndues, int64_t low_wm, const char **knames,
                             int64_t *versions, const char **states, int64_t *due, size_t *nd) {
  for (size_t d = 0; d < ndues; d++) {
    if (!dues[d].no_rule) continue;
    if (!(states[*nd] = strdup(dues[d].state))) return FP_ERR_NOMEM;
    knames[*nd] = dues[d].key;
    versions[*nd] = dues[d].version;
    due[*nd] = fp_add_sat(low_wm, FP_LC_UNKNOWN_RULE_RETRY_MS);
    (*nd)++;
  }
  return FP_OK;
}

static fp_err_t sweep_pass(fp_store_t *store, const char *source, const fp_lc_params_t *params,
                           int64_t last_offset, int64_t committed, const char *default_topic,
                           int64_t due_by, fp_rule_lookup_fn lookup, void *lookup_arg,
                           fp_outvec_t *out, char *errstr, size_t es) {
  lc_key_t *keys = calloc(FP_LC_MAX_SWEEPS, sizeof(*keys));
  fp_inc_signal_t *sig = calloc(FP_LC_MAX_SWEEPS, sizeof(*sig));
  const char *knames[FP_LC_MAX_SWEEPS], *states[FP_LC_MAX_SWEEPS];
  int64_t versions[FP_LC_MAX_SWEEPS], due[FP_LC_MAX_SWEEPS], fence, low_wm;
  fp_err_t err = FP_OK;
  size_t out_start = out->n;
  top_wants_t wants = {0};

  if (!keys || !sig) {
    free(keys), free(sig);
    return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  }
  for (int attempt = 0; attempt < FP_LC_MAX_ATTEMPTS; attempt++) {
    fp_lc_due_t *dues = NULL;
    size_t ndues = 0, n = 0, nd = 0, due_now;
    char *memo = NULL, *merged = NULL;
    json_t *recs = NULL, *old = NULL;
    int conflict = 0;

    err = fp_store_lc_load(store, source, NULL, 0, due_by, FP_LC_MAX_SWEEPS, NULL, NULL, NULL,
                           &fence, &low_wm, &dues, &ndues, errstr, es);
    if (err || !ndues) {
      fp_store_lc_due_free(dues, ndues);
      break;
    }
    for (size_t d = 0; d < ndues; d++) {
      char *bar = strchr(dues[d].key, '|');
      const fp_rule_info_t *ri;
      if (!bar) continue;
      *bar = '\0';
      ri = lookup(lookup_arg, dues[d].key);
      *bar = '|';
      if (!ri) {
        dues[d].no_rule = 1; /* re-indexed unchanged, see below */
        continue;
      }
      memset(&keys[n], 0, sizeof(keys[n]));
      snprintf(keys[n].key, sizeof(keys[n].key), "%s", dues[d].key);
      keys[n].rule = ri;
      key_load(&keys[n], dues[d].state, dues[d].version);
      memset(&sig[n], 0, sizeof(sig[n]));
      sig[n].offset = last_offset;
      sig[n].sig.sev = FP_SEV_NONE;
      sig[n].sig.at_ms = low_wm;
      sig[n].sig.rule = ri;
      sig[n].sig.entity = strchr(keys[n].key, '|') + 1;
      n++;
    }
    recs = json_array();
    if (n) err = step_offset(keys, n, params, sig, 0, n, default_topic, recs, &wants);
    if (!err && wants.n) fill_top_terms(store, &wants);
    wants.n = 0;
    if (!err) err = write_payloads(recs);
    if (!err && (err = fp_store_lc_memo(store, source, &last_offset, 1, &memo, errstr, es)) == FP_OK) {
      json_error_t jerr;
      size_t x;
      json_t *rec;
      old = memo ? json_loads(memo, 0, &jerr) : json_array();
      if (!json_is_array(old)) {
        json_decref(old);
        old = json_array();
      }
      json_array_foreach(recs, x, rec) json_array_append(old, rec);
      merged = json_dumps(old, JSON_COMPACT);
      for (size_t i = 0; i < n; i++) { /* every swept key: changed or not (lc_key_t.swept) */
        json_t *sj;
        sj = fp_lc_state_to_json(&keys[i].st);
        states[nd] = json_dumps(sj, JSON_COMPACT);
        json_decref(sj);
        if (!states[nd]) {
          err = FP_ERR_NOMEM;
          break;
        }
        knames[nd] = keys[i].key;
        versions[nd] = keys[i].version;
        due[nd] = keys[i].st.open ? fp_add_sat(keys[i].st.last_signal_ms, keys[i].rule->resolve_after_ms) : -1;
        nd++;
      }
      if (!err) err = add_unloaded(dues, ndues, low_wm, knames, versions, states, due, &nd);
      if (!merged) err = FP_ERR_NOMEM;
      if (!err && (json_array_size(recs) || nd))
        err = fp_store_lc_commit(store, source, knames, versions, states, due, nd, &last_offset,
                                 (const char *const *)&merged, json_array_size(recs) ? 1 : 0, fence,
                                 committed, due_by, &conflict, &due_now, errstr, es);
      for (size_t i = 0; i < nd; i++) free((char *)states[i]);
    }
    if (!err && !conflict) {
      size_t x;
      json_t *rec;
      json_array_foreach(recs, x, rec) {
        const char *payload = json_string_value(json_array_get(rec, 2));
        if (!err)
          err = fp_outvec_add(out, last_offset, json_string_value(json_array_get(rec, 0)),
                              json_string_value(json_array_get(rec, 1)), payload, strlen(payload));
      }
    }
    json_decref(recs);
    json_decref(old);
    free(memo);
    free(merged);
    fp_store_lc_due_free(dues, ndues);
    if (err || !conflict) break;
    drop_from(out, out_start);
  }
  if (err) drop_from(out, out_start);
  free(keys);
  free(sig);
  free(wants.v);
  return err;
}

fp_err_t fp_incidents_apply(fp_store_t *store, const char *source, const fp_lc_params_t *params,
                            const fp_inc_signal_t *sig_in, size_t n_in, const int64_t *offsets,
                            size_t n_offsets, int64_t committed, const char *default_topic,
                            int64_t due_by, fp_rule_lookup_fn lookup, void *lookup_arg,
                            fp_outvec_t *out, size_t *replayed, char *errstr, size_t es) {
  int64_t last_offset = n_offsets ? offsets[n_offsets - 1] : (n_in ? sig_in[n_in - 1].offset : -1);
  size_t cap = 2 * n_in + n_offsets + FP_LC_MAX_SWEEPS + 1, cap_offs = cap, out_start = out->n;
  lc_key_t *keys = calloc(cap, sizeof(*keys));
  const char **knames = calloc(cap, sizeof(char *)), **states = calloc(cap, sizeof(char *));
  char **texts = calloc(cap, sizeof(char *)), **memo_texts = calloc(cap, sizeof(char *));
  int64_t *versions = calloc(cap, sizeof(int64_t)), *due = calloc(cap, sizeof(int64_t));
  int64_t *memo_offs = calloc(cap, sizeof(int64_t)), fence = -1, low_wm = INT64_MIN;
  int64_t *silenced = calloc(cap, sizeof(int64_t));
  size_t due_now = 0;
  int sweep_again = 0;
  fp_inc_signal_t *sig = calloc(cap, sizeof(*sig));
  fp_lc_due_t *dues = NULL;
  size_t ndues = 0, nkeys0 = 0;
  fp_err_t err = FP_OK;
  int attempt;
  top_wants_t wants = {0};
  json_t *byoff = json_array(); /* per offset with events: its records, until written */

  *replayed = 0;
  if (!keys || !knames || !states || !texts || !memo_texts || !versions || !due || !memo_offs || !sig ||
      !silenced || !byoff) {
    err = fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    goto done;
  }
  /* the keys the batch's own signals touch */
  for (size_t i = 0; i < n_in; i++) {
    char k[300];
    fp_incidents_key(sig_in[i].sig.rule->id, sig_in[i].sig.entity, k, sizeof(k));
    if (key_index(keys, nkeys0, k) == nkeys0) {
      snprintf(keys[nkeys0].key, sizeof(keys[nkeys0].key), "%s", k);
      keys[nkeys0].rule = sig_in[i].sig.rule;
      nkeys0++;
    }
  }

  for (attempt = 0; attempt < FP_LC_MAX_ATTEMPTS; attempt++) {
    size_t nkeys = nkeys0, n = n_in, nmemo = 0, nreplay = 0, nd = 0;
    int conflict = 0;

    for (size_t i = 0; i < nkeys0; i++) knames[i] = keys[i].key;
    fp_store_lc_due_free(dues, ndues);
    dues = NULL;
    ndues = 0;
    /* (1) states, fence and incidents due, in one round trip */
    err = fp_store_lc_load(store, source, knames, nkeys0, lookup ? due_by : INT64_MIN,
                           FP_LC_MAX_SWEEPS, texts, versions, silenced, &fence, &low_wm, &dues,
                           &ndues, errstr, es);
    if (err) goto done;
    for (size_t i = 0; i < nkeys0; i++) {
      key_load(&keys[i], texts[i], versions[i]);
      keys[i].silenced_until = silenced[i];
      free(texts[i]);
      texts[i] = NULL;
    }
    memcpy(sig, sig_in, n_in * sizeof(*sig));
    /* sweeps: a "time passes" signal at the run's last offset for each incident due */
    for (size_t d = 0; d < ndues && last_offset > fence; d++) {
      char *bar = strchr(dues[d].key, '|');
      const fp_rule_info_t *ri;
      if (!bar) continue;
      *bar = '\0';
      ri = lookup(lookup_arg, dues[d].key);
      *bar = '|';
      if (!ri) {
        fp_log_once(FP_LOG_WARN, "incidents", "open incident %s belongs to a rule that is not "
                    "loaded; it stays open until the rule returns", dues[d].key);
        dues[d].no_rule = 1; /* re-indexed unchanged at commit */
        continue;
      }
      snprintf(keys[nkeys].key, sizeof(keys[nkeys].key), "%s", dues[d].key);
      keys[nkeys].rule = ri;
      key_load(&keys[nkeys], dues[d].state, dues[d].version);
      keys[nkeys].swept = 1;
      keys[nkeys].silenced_until = 0;
      nkeys++;
      memset(&sig[n], 0, sizeof(sig[n]));
      sig[n].offset = last_offset;
      sig[n].sig.sev = FP_SEV_NONE;
      sig[n].sig.at_ms = low_wm;
      sig[n].sig.rule = ri;
      sig[n].sig.entity = bar + 1;
      n++;
    }

    /* and the batch's own keys too: their last signal may be long before the watermark */
    for (size_t i = 0; low_wm != INT64_MIN && i < nkeys0 && last_offset > fence; i++) {
      memset(&sig[n], 0, sizeof(sig[n]));
      sig[n].offset = last_offset;
      sig[n].sig.sev = FP_SEV_NONE;
      sig[n].sig.at_ms = low_wm;
      sig[n].sig.rule = keys[i].rule;
      sig[n].sig.entity = strchr(keys[i].key, '|') + 1;
      n++;
    }

    /* (2) offsets at or below the fence were applied before: their events come from the memo.
     * Every input offset of the run is looked up, not only those with a signal now: a sweep
     * may have attached events to an offset that has no signal of its own. */
    for (size_t i = 0; i < n_offsets && nreplay < cap_offs; i++)
      if (offsets[i] <= fence && (nreplay == 0 || memo_offs[nreplay - 1] != offsets[i]))
        memo_offs[nreplay++] = offsets[i];
    if (nreplay) {
      if ((err = fp_store_lc_memo(store, source, memo_offs, nreplay, memo_texts, errstr, es))) goto done;
      for (size_t i = 0; i < nreplay; i++) {
        if (memo_texts[i] && err == FP_OK) err = add_memo(out, memo_offs[i], memo_texts[i]);
        free(memo_texts[i]);
        memo_texts[i] = NULL;
      }
      if (err) goto done;
      *replayed = nreplay;
    }

    /* (3) new offsets: step the state machines in offset order; then the top terms of every
     * event that carries them, in one round trip; then each offset's records and memo */
    json_array_clear(byoff);
    wants.n = 0;
    for (size_t i = 0; i < n && !err;) {
      size_t j = i;
      int64_t off = sig[i].offset;
      json_t *recs;
      while (j < n && sig[j].offset == off) j++;
      if (off <= fence) {
        i = j;
        continue;
      }
      recs = json_array();
      err = step_offset(keys, nkeys, params, sig, i, j, default_topic, recs, &wants);
      if (!err && json_array_size(recs) > 0) {
        memo_offs[nmemo++] = off; /* its text comes below */
        json_array_append(byoff, recs);
      }
      json_decref(recs);
      i = j;
    }
    if (!err && wants.n) fill_top_terms(store, &wants);
    for (size_t k = 0; k < nmemo && !err; k++) {
      json_t *recs = json_array_get(byoff, k), *rec;
      size_t x;
      if ((err = write_payloads(recs)) || !(memo_texts[k] = json_dumps(recs, JSON_COMPACT))) {
        err = FP_ERR_NOMEM;
        break;
      }
      json_array_foreach(recs, x, rec) {
        const char *payload = json_string_value(json_array_get(rec, 2));
        if (!err)
          err = fp_outvec_add(out, memo_offs[k], json_string_value(json_array_get(rec, 0)),
                              json_string_value(json_array_get(rec, 1)), payload, strlen(payload));
      }
    }
    if (err) goto done;

    /* (4) commit the changed states, the memo and the fence, atomically */
    for (size_t i = 0; i < nkeys; i++) {
      json_t *sj;
      char *text;
      if (!keys[i].dirty && !keys[i].swept) continue;
      sj = fp_lc_state_to_json(&keys[i].st);
      text = json_dumps(sj, JSON_COMPACT);
      json_decref(sj);
      if (!text) {
        err = FP_ERR_NOMEM;
        break;
      }
      knames[nd] = keys[i].key;
      versions[nd] = keys[i].version;
      states[nd] = text;
      due[nd] = keys[i].st.open ? fp_add_sat(keys[i].st.last_signal_ms, keys[i].rule->resolve_after_ms) : -1;
      nd++;
    }
    if (!err && last_offset > fence) err = add_unloaded(dues, ndues, low_wm, knames, versions, states, due, &nd);
    if (!err && (last_offset > fence || nd > 0))
      err = fp_store_lc_commit(store, source, knames, versions, states, due, nd, memo_offs,
                               (const char *const *)memo_texts, nmemo,
                               last_offset > fence ? last_offset : fence, committed,
                               lookup ? due_by : INT64_MIN, &conflict, &due_now, errstr, es);
    sweep_again = !err && !conflict && last_offset > fence && due_now > 0;
    for (size_t i = 0; i < nd; i++) free((char *)states[i]);
    for (size_t i = 0; i < nmemo; i++) {
      free(memo_texts[i]);
      memo_texts[i] = NULL;
    }
    if (err) goto done;
    if (!conflict) break;
    /* another worker or instance changed a key meanwhile: recompute from fresh state */
    drop_from(out, out_start);
    *replayed = 0;
    fp_log(FP_LOG_DEBUG, "incidents", "%s: lifecycle conflict, retrying", source);
  }
  if (attempt == FP_LC_MAX_ATTEMPTS)
    err = fp_seterr(errstr, es, FP_ERR_REDIS, "lifecycle: too many concurrent conflicts");
  if (!err && sweep_again && lookup)
    err = sweep_pass(store, source, params, last_offset, committed, default_topic, due_by, lookup,
                     lookup_arg, out, errstr, es);
done:
  if (err) drop_from(out, out_start);
  fp_store_lc_due_free(dues, ndues);
  for (size_t i = 0; texts && i < cap; i++) free(texts[i]);
  for (size_t i = 0; memo_texts && i < cap; i++) free(memo_texts[i]); /* NULL unless an error left them */
  free(keys), free(knames), free(texts), free(versions), free(states), free(due), free(memo_offs);
  free(memo_texts), free(sig), free(silenced);
  free(wants.v);
  json_decref(byoff);
  return err;
}
