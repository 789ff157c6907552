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

fp_err_t fp_outvec_add(fp_outvec_t *v, int64_t offset, const char *topic, const char *key,
                       const char *payload, size_t len) {
  fp_outrec_t *r;
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    fp_outrec_t *p = realloc(v->recs, cap * sizeof(*p));
    if (!p) return FP_ERR_NOMEM;
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
    return FP_ERR_NOMEM;
  }
  memcpy(r->payload, payload, len);
  r->payload[len] = '\0';
  r->len = len;
  r->status[0] = r->severity[0] = '\0';
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
  v->n++;
  return FP_OK;
}

void fp_incidents_key(const char *rule_id, const char *entity, char *buf, size_t size) {
  snprintf(buf, size, "%s|%s", rule_id, entity);
}

typedef struct lc_key_s {
  char key[300];
  char *text;       /* loaded state (owned) */
  int64_t version;
  fp_lc_state_t st;
  int dirty;
  const fp_rule_info_t *rule;
} lc_key_t;

static size_t key_index(lc_key_t *keys, size_t n, const char *k) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(keys[i].key, k) == 0) return i;
  return n;
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

fp_err_t fp_incidents_apply(fp_store_t *store, const char *source, const fp_lc_params_t *params,
                            const fp_inc_signal_t *sig, size_t n, int64_t last_offset,
                            int64_t committed, const char *default_topic, fp_outvec_t *out,
                            size_t *replayed, char *errstr, size_t es) {
  lc_key_t *keys = NULL;
  size_t nkeys = 0, out_start = out->n;
  const char **knames = NULL, **states = NULL;
  char **texts = NULL, **memo_texts = NULL;
  int64_t *versions = NULL, *due = NULL, *memo_offs = NULL, fence = -1;
  fp_err_t err = FP_OK;
  int attempt;
  static _Thread_local fp_lc_state_t prev_st;

  *replayed = 0;
  if (!(keys = calloc(n ? n : 1, sizeof(*keys))) || !(knames = calloc(n ? n : 1, sizeof(char *))) ||
      !(texts = calloc(n ? n : 1, sizeof(char *))) || !(versions = calloc(n ? n : 1, sizeof(int64_t))) ||
      !(states = calloc(n ? n : 1, sizeof(char *))) || !(due = calloc(n ? n : 1, sizeof(int64_t))) ||
      !(memo_offs = calloc(n ? n : 1, sizeof(int64_t))) || !(memo_texts = calloc(n ? n : 1, sizeof(char *)))) {
    err = FP_ERR_NOMEM;
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    char k[300];
    fp_incidents_key(sig[i].sig.rule->id, sig[i].sig.entity, k, sizeof(k));
    if (key_index(keys, nkeys, k) == nkeys) {
      snprintf(keys[nkeys].key, sizeof(keys[nkeys].key), "%s", k);
      keys[nkeys].rule = sig[i].sig.rule;
      knames[nkeys] = keys[nkeys].key;
      nkeys++;
    }
  }

  for (attempt = 0; attempt < FP_LC_MAX_ATTEMPTS; attempt++) {
    size_t nmemo = 0, nreplay = 0;
    int conflict = 0;
    int64_t replay_offs_prev = -1;

    for (size_t i = 0; i < nkeys; i++) {
      free(keys[i].text);
      keys[i].text = NULL;
      texts[i] = NULL;
    }
    if ((err = fp_store_lc_load(store, source, knames, nkeys, texts, versions, &fence, errstr, es)))
      goto done;
    for (size_t i = 0; i < nkeys; i++) {
      keys[i].text = texts[i];
      keys[i].version = versions[i];
      keys[i].dirty = 0;
      memset(&keys[i].st, 0, sizeof(keys[i].st));
      if (texts[i]) {
        json_error_t jerr;
        json_t *j = json_loads(texts[i], 0, &jerr);
        if (!j || fp_lc_state_from_json(j, &keys[i].st) != FP_OK) {
          fp_log_once(FP_LOG_WARN, "incidents", "unreadable lifecycle state for %s; starting afresh",
                      keys[i].key);
          memset(&keys[i].st, 0, sizeof(keys[i].st));
        }
        json_decref(j);
      }
    }

    /* (2) replayed offsets: read their memo in one call */
    for (size_t i = 0; i < n; i++)
      if (sig[i].offset <= fence && sig[i].offset != replay_offs_prev)
        memo_offs[nreplay++] = replay_offs_prev = sig[i].offset;
    if (nreplay) {
      char **mt = calloc(nreplay, sizeof(char *));
      if (!mt) {
        err = FP_ERR_NOMEM;
        goto done;
      }
      if ((err = fp_store_lc_memo(store, source, memo_offs, nreplay, mt, errstr, es))) {
        free(mt);
        goto done;
      }
      for (size_t i = 0; i < nreplay; i++) {
        if (mt[i] && err == FP_OK) err = add_memo(out, memo_offs[i], mt[i]);
        free(mt[i]);
      }
      free(mt);
      if (err) goto done;
      *replayed = nreplay;
    }

    /* (3) new offsets: step the state machines in offset order */
    for (size_t i = 0; i < n;) {
      int64_t off = sig[i].offset;
      json_t *events = json_array(), *recs = json_array();
      size_t j = i;
      if (off <= fence) {
        while (i < n && sig[i].offset == off) i++;
        json_decref(events);
        json_decref(recs);
        continue;
      }
      for (; j < n && sig[j].offset == off; j++) {
        char k[300];
        size_t ki, before = json_array_size(events);
        fp_incidents_key(sig[j].sig.rule->id, sig[j].sig.entity, k, sizeof(k));
        ki = key_index(keys, nkeys, k);
        memcpy(&prev_st, &keys[ki].st, sizeof(prev_st));
        fp_lc_step(&keys[ki].st, params, &sig[j].sig, events);
        if (memcmp(&prev_st, &keys[ki].st, sizeof(prev_st)) != 0) keys[ki].dirty = 1;
        for (size_t x = before; x < json_array_size(events); x++) {
          json_t *ev = json_array_get(events, x);
          char *payload = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
          const char *sev = json_string_value(json_object_get(ev, "severity"));
          const char *topic = fp_lc_route(sig[j].sig.rule, sev ? (fp_sev_t)fp_sev_parse(sev) : FP_SEV_NONE,
                                          default_topic);
          if (!payload) {
            err = FP_ERR_NOMEM;
            break;
          }
          json_array_append_new(recs, json_pack("[s,s,s]", topic,
                                                json_string_value(json_object_get(ev, "incident_id")),
                                                payload));
          free(payload);
        }
      }
      json_decref(events);
      if (!err && json_array_size(recs) > 0) {
        size_t x;
        json_t *rec;
        memo_offs[nmemo] = off;
        memo_texts[nmemo] = json_dumps(recs, JSON_COMPACT);
        if (!memo_texts[nmemo]) err = FP_ERR_NOMEM;
        else nmemo++;
        json_array_foreach(recs, x, rec) {
          const char *topic = json_string_value(json_array_get(rec, 0));
          const char *key = json_string_value(json_array_get(rec, 1));
          const char *payload = json_string_value(json_array_get(rec, 2));
          if (!err) err = fp_outvec_add(out, off, topic, key, payload, strlen(payload));
        }
      }
      json_decref(recs);
      if (err) goto done;
      i = j;
    }

    /* (4) commit */
    size_t nd = 0;
    for (size_t i = 0; i < nkeys; i++) {
      if (!keys[i].dirty) continue;
      json_t *sj = fp_lc_state_to_json(&keys[i].st);
      char *text = json_dumps(sj, JSON_COMPACT);
      json_decref(sj);
      if (!text) {
        err = FP_ERR_NOMEM;
        goto done;
      }
      knames[nd] = keys[i].key;
      versions[nd] = keys[i].version;
      states[nd] = text;
      due[nd] = keys[i].st.open ? keys[i].st.last_signal_ms + keys[i].rule->resolve_after_ms : -1;
      nd++;
    }
    if (last_offset > fence || nd > 0)
      err = fp_store_lc_commit(store, source, knames, versions, states, due, nd, memo_offs,
                               (const char *const *)memo_texts, nmemo,
                               last_offset > fence ? last_offset : fence, committed, &conflict,
                               errstr, es);
    for (size_t i = 0; i < nd; i++) free((char *)states[i]);
    for (size_t i = 0; i < nmemo; i++) {
      free(memo_texts[i]);
      memo_texts[i] = NULL;
    }
    /* knames was reused for the dirty subset: rebuild it for a retry */
    for (size_t i = 0; i < nkeys; i++) knames[i] = keys[i].key;
    if (err) goto done;
    if (!conflict) break;
    /* another worker changed a key: drop this attempt's records and recompute */
    while (out->n > out_start) {
      fp_outrec_t *r = &out->recs[--out->n];
      free(r->topic), free(r->key), free(r->payload);
    }
    *replayed = 0;
    fp_log(FP_LOG_DEBUG, "incidents", "%s: lifecycle conflict, retrying", source);
  }
  if (attempt == FP_LC_MAX_ATTEMPTS)
    err = fp_seterr(errstr, es, FP_ERR_REDIS, "lifecycle: too many concurrent conflicts");
done:
  if (err) {
    while (out->n > out_start) {
      fp_outrec_t *r = &out->recs[--out->n];
      free(r->topic), free(r->key), free(r->payload);
    }
  }
  for (size_t i = 0; keys && i < nkeys; i++) free(keys[i].text);
  free(keys), free(knames), free(texts), free(versions), free(states), free(due), free(memo_offs);
  free(memo_texts);
  return err;
}
