/*
 * fuzz_incident.c - libFuzzer target for the incident lifecycle and encoder
 * (engine/lifecycle.c): fp_lc_step, the event documents, fp_lc_state_to_json/from_json.
 *
 * The input describes one rule (windows, resolve_after, respond), one entity, the lifecycle
 * parameters, and up to 64 signals (severity, event time, a mention or a sweep, window
 * values, top terms). Values span what the engine can hand the lifecycle: mention fields are
 * valid UTF-8 (jansson validated them) with any non-negative counts; the entity, `respond`
 * and top terms come from rule code and may be any bytes; resolve_after is any positive
 * integer a rule file may write; window values are any doubles the store's Lua may return.
 *
 * Oracle (abort() on a violation):
 *  - fp_lc_step returns exactly the number of events it appended, each a JSON object that
 *    json_dumps encodes and that parses back equal (json_equal) to itself;
 *  - the state survives fp_lc_state_to_json -> json_dumps -> json_loads ->
 *    fp_lc_state_from_json unchanged (field by field);
 *  - the round-tripped copy, stepped with the same signals, emits byte-identical events (the
 *    engine reloads the state from Redis before every batch: replays depend on this).
 */
#include <jansson.h>
#include <math.h>

#include "fuzz_common.h"
#include "lifecycle.h"

#define T0 1700000000000LL /* 2023-11-14, a plausible event time */
#define MAX_STEPS 64

static int str_eq(const char *a, const char *b) { return strcmp(a, b) == 0; }
static int dbl_eq(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

static void state_check_equal(const fp_lc_state_t *a, const fp_lc_state_t *b) {
  FZ_CHECK(a->open == b->open && str_eq(a->incident_id, b->incident_id) &&
               a->severity == b->severity && a->peak == b->peak && a->first_ms == b->first_ms &&
               a->opened_ms == b->opened_ms && a->last_signal_ms == b->last_signal_ms &&
               a->sev_since_ms == b->sev_since_ms && a->lower_since_ms == b->lower_since_ms &&
               a->resolved_ms == b->resolved_ms && a->last_ms == b->last_ms &&
               a->lower_sev == b->lower_sev && a->seq == b->seq && a->mentions == b->mentions &&
               a->reach == b->reach && dbl_eq(a->peak_value, b->peak_value),
           "state scalars changed in the JSON round trip");
  FZ_CHECK(a->ntimeline == b->ntimeline, "timeline length %zu -> %zu", a->ntimeline, b->ntimeline);
  for (size_t i = 0; i < a->ntimeline; i++)
    FZ_CHECK(a->timeline[i].at_ms == b->timeline[i].at_ms &&
                 str_eq(a->timeline[i].status, b->timeline[i].status) &&
                 a->timeline[i].sev == b->timeline[i].sev,
             "timeline[%zu] changed", i);
  FZ_CHECK(a->nsamples == b->nsamples, "samples %zu -> %zu", a->nsamples, b->nsamples);
  for (size_t i = 0; i < a->nsamples; i++) {
    const fp_lc_sample_t *x = &a->samples[i], *y = &b->samples[i];
    FZ_CHECK(str_eq(x->id, y->id) && str_eq(x->url, y->url) && str_eq(x->author, y->author) &&
                 str_eq(x->text, y->text) && str_eq(x->reason, y->reason) &&
                 x->followers == y->followers && dbl_eq(x->sentiment, y->sentiment) &&
                 x->has_sentiment == y->has_sentiment && x->at_ms == y->at_ms,
             "sample[%zu] changed", i);
  }
}

/* state -> JSON text -> JSON -> state. */
static void state_roundtrip(const fp_lc_state_t *st, fp_lc_state_t *out) {
  json_t *j = fp_lc_state_to_json(st);
  FZ_CHECK(j != NULL, "fp_lc_state_to_json returned NULL");
  char *text = json_dumps(j, JSON_COMPACT);
  FZ_CHECK(text != NULL, "state JSON does not encode");
  json_error_t e;
  json_t *back = json_loads(text, 0, &e);
  FZ_CHECK(back != NULL, "state JSON does not parse: %s\n%s", e.text, text);
  FZ_CHECK(fp_lc_state_from_json(back, out) == FP_OK, "fp_lc_state_from_json refused:\n%s", text);
  json_decref(back);
  json_decref(j);
  free(text);
  state_check_equal(st, out);
}

/* Appended events [before, end): valid objects that encode and parse back equal.
 * @returns their concatenated encodings (caller frees). */
static char *events_check(json_t *events, size_t before, int n, const fp_lc_signal_t *sig) {
  size_t after = json_array_size(events);
  FZ_CHECK(n >= 0 && n <= 3, "fp_lc_step returned %d", n);
  FZ_CHECK(after - before == (size_t)n, "fp_lc_step returned %d but appended %zu events", n,
           after - before);
  size_t cap = 1, len = 0;
  char *all = calloc(1, 1);
  for (size_t i = before; i < after; i++) {
    json_t *ev = json_array_get(events, i), *back;
    json_error_t e;
    FZ_CHECK(json_is_object(ev), "event %zu is not an object", i);
    FZ_CHECK(json_integer_value(json_object_get(ev, "schema_version")) == 1, "schema_version");
    FZ_CHECK(json_is_string(json_object_get(ev, "event_id")) &&
                 json_is_string(json_object_get(ev, "incident_id")) &&
                 json_is_string(json_object_get(ev, "status")),
             "event ids or status missing");
    /* Every event of this step carries the signal's evidence, none silently dropped. */
    FZ_CHECK(json_array_size(json_object_get(ev, "top_terms")) == sig->ntop,
             "event has %zu top terms, the signal %zu",
             json_array_size(json_object_get(ev, "top_terms")), sig->ntop);
    const char *status = json_string_value(json_object_get(ev, "status"));
    if (sig->values && status && strcmp(status, "resolved") && strcmp(status, "postmortem"))
      FZ_CHECK(json_object_size(json_object_get(ev, "signals")) == sig->nvalues,
               "event has %zu window values, the signal %zu",
               json_object_size(json_object_get(ev, "signals")), sig->nvalues);
    char *text = json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS);
    FZ_CHECK(text != NULL, "event does not encode");
    back = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    FZ_CHECK(back != NULL, "event does not parse back: %s\n%s", e.text, text);
    FZ_CHECK(json_equal(ev, back), "event changed in the round trip:\n%s", text);
    json_decref(back);
    size_t tl = strlen(text);
    if (len + tl + 2 > cap) {
      cap = (len + tl + 2) * 2;
      all = realloc(all, cap);
    }
    memcpy(all + len, text, tl);
    len += tl;
    all[len++] = '\n';
    all[len] = '\0';
    free(text);
  }
  return all;
}

static double fz_value(fz_t *f) {
  uint8_t mode = fz_u8(f) & 3;
  double d;
  switch (mode) {
  case 0: return (double)fz_u8(f);
  case 1: return (double)fz_u32(f) / 16.0;
  default:
    d = fz_double(f);
    /* F3 (non-finite window values) is handled by lifecycle.c itself: no precondition */
    return d;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_t f = {data, size};
  static char respond[128], entity[128], ids[4][97], texts[4][300], urls[4][200], authors[4][80];
  static fp_rule_info_t rule;
  static const char *const wnames[4] = {"volume", "baseline", "negative", "reach"};
  fp_lc_params_t p;
  fp_lc_state_t st, st_rt;
  uint8_t flags;

  /* The rule. */
  memset(&rule, 0, sizeof rule);
  rule.id = "fuzz.rule";
  rule.version = 1 + fz_u8(&f);
  memcpy(rule.hash, "0123456789abcdef", 17);
  rule.nwindows = fz_u8(&f) % 5;
  for (size_t w = 0; w < rule.nwindows; w++) {
    rule.windows[w].name = wnames[w];
    rule.windows[w].spec.kind = (fp_win_kind_t)(fz_u8(&f) % 5);
    rule.windows[w].spec.size_ms = 60000;
    rule.windows[w].spec.step_ms = 10000;
  }
  flags = fz_u8(&f);
  /* resolve_after: any positive integer fp.rule accepts, or a usual one */
  if (flags & 1) {
    rule.resolve_after_ms = fz_range(&f, 1, INT64_MAX);
    if (rule.resolve_after_ms > 366LL * 86400000) /* precondition: rules.c bounds durations (F2) */
      rule.resolve_after_ms = 366LL * 86400000;
  } else {
    rule.resolve_after_ms = fz_range(&f, 1, 86400000);
  }
  rule.respond = NULL;
  if (flags & 2) {
    fz_bytes(&f, respond, sizeof respond - 1);
    fz_utf8_fix(respond); /* precondition: rules.c rejects non-UTF-8 text fields (F1) */
    rule.respond = respond;
  }
  fz_bytes(&f, entity, sizeof entity - 1);
  if (!entity[0]) strcpy(entity, "acme");
  fz_utf8_fix(entity); /* precondition: rules.c hashes non-UTF-8 entities (F1) */

  p.resolve_after_ms = rule.resolve_after_ms;
  p.hold_ms = fz_range(&f, 0, 7LL * 86400000);   /* incident.hold range */
  p.grace_ms = fz_range(&f, 0, 7LL * 86400000);  /* incident.grace range */
  p.samples = (size_t)(fz_u8(&f) % 51);          /* incident.samples range */

  /* A small pool of mentions, as the decoder would produce them. */
  fp_mention_t pool[4];
  memset(pool, 0, sizeof pool);
  for (int i = 0; i < 4; i++) {
    fp_mention_t *m = &pool[i];
    fz_bytes(&f, ids[i], 96);
    if (!ids[i][0]) snprintf(ids[i], sizeof ids[i], "m-%d", i);
    fz_utf8_fix(ids[i]);
    fz_bytes(&f, texts[i], 255);
    fz_utf8_fix(texts[i]);
    fz_bytes(&f, urls[i], 199);
    fz_utf8_fix(urls[i]);
    fz_bytes(&f, authors[i], 79);
    if (!authors[i][0]) strcpy(authors[i], "a");
    fz_utf8_fix(authors[i]);
    m->id = ids[i];
    m->text = texts[i];
    m->url = urls[i][0] ? urls[i] : NULL;
    m->author_id = authors[i];
    m->brand = entity;
    uint8_t mf = fz_u8(&f);
    m->followers = (mf & 1) ? fz_range(&f, 0, INT64_MAX) : fz_range(&f, 0, 100000000);
    if (m->followers > 1000000000000LL) /* precondition: mention.c caps counts (F4) */
      m->followers = 1000000000000LL;
    m->verified = (mf >> 1) & 1;
    m->has_sentiment = (mf >> 2) & 1;
    m->sentiment = m->has_sentiment ? ((double)fz_u16(&f) / 32767.5) - 1.0 : 0.0;
    if (m->sentiment > 1.0) m->sentiment = 1.0;
  }

  memset(&st, 0, sizeof st);
  json_t *events = json_array(), *events_rt = json_array();
  int64_t now = T0;
  fp_win_op_t values[4];
  fp_topk_entry_t top[8];
  for (int step = 0; step < MAX_STEPS && f.n > 0; step++) {
    fp_lc_signal_t sig;
    uint8_t sf = fz_u8(&f);
    memset(&sig, 0, sizeof sig);
    sig.sev = (fp_sev_t)(fz_u8(&f) % 5);
    /* event time: mostly forward, sometimes backward (out-of-order mentions) */
    switch ((sf >> 1) & 3) {
    case 0: now += fz_range(&f, 0, 60000); break;
    case 1: now += fz_range(&f, 0, 7LL * 86400000); break;
    case 2: now -= fz_range(&f, 0, 3600000); break;
    default: break;
    }
    if (now < 946684800000LL) now = 946684800000LL;
    sig.at_ms = now;
    sig.mention = (sf & 1) ? NULL : &pool[(sf >> 3) & 3];
    if (sig.mention) ((fp_mention_t *)sig.mention)->created_at_ms = now;
    sig.rule = &rule;
    sig.entity = entity;
    if (sf & 0x20) {
      memset(values, 0, sizeof values);
      for (size_t w = 0; w < rule.nwindows; w++) {
        values[w].out.value = fz_value(&f);
        values[w].out.mean = fz_value(&f);
        values[w].out.stddev = fz_value(&f);
      }
      sig.values = values;
      sig.nvalues = rule.nwindows;
    }
    if (sf & 0x40) {
      sig.ntop = fz_u8(&f) % 9;
      for (size_t t = 0; t < sig.ntop; t++) {
        fz_bytes(&f, top[t].term, 63);
        fz_utf8_fix(top[t].term); /* precondition: rules.c skips non-UTF-8 terms (F1) */
        top[t].count = (double)fz_u16(&f);
      }
      sig.top = top;
    }

    /* Persist and reload, as the engine does between batches. */
    state_roundtrip(&st, &st_rt);

    size_t b1 = json_array_size(events), b2 = json_array_size(events_rt);
    int n1 = fp_lc_step(&st, &p, &sig, events);
    char *t1 = events_check(events, b1, n1, &sig);
    int n2 = fp_lc_step(&st_rt, &p, &sig, events_rt);
    char *t2 = events_check(events_rt, b2, n2, &sig);
    FZ_CHECK(n1 == n2 && strcmp(t1, t2) == 0,
             "a reloaded state emits different events:\n%s---\n%s", t1, t2);
    free(t1);
    free(t2);
    state_check_equal(&st, &st_rt);
    FZ_CHECK(st.ntimeline <= FP_LC_TIMELINE_MAX && st.nsamples <= FP_LC_SAMPLES_MAX,
             "bounds");
  }
  state_roundtrip(&st, &st_rt);
  json_decref(events);
  json_decref(events_rt);
  return 0;
}
