/*
 * lifecycle.c - owns the incident state machine and the incident event documents.
 *
 * States: closed -> open (opened, or reopened within incident.grace of a resolution, which
 * continues the same incident id) -> escalated / de-escalated -> resolved. Escalation is
 * immediate; de-escalation needs the lower signal to last incident.hold and the current
 * severity to have been held that long (hysteresis), so a signal hovering at a threshold
 * does not flap. An incident resolves after the rule's resolve_after with no signal.
 *
 * Event documents carry only event time and data from the signals, never the wall clock,
 * and are encoded with sorted keys: identical signals give byte-identical events.
 */
#include "lifecycle.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "util.h"

static json_t *time_json(int64_t ms) {
  char buf[40];
  if (ms <= 0) return json_null();
  fp_time_format(ms, buf, sizeof(buf));
  return json_string(buf);
}

/* jansson refuses NaN and infinities: a window value that is not finite reads as null */
static json_t *num_json(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *sev_json(fp_sev_t s) { return s == FP_SEV_NONE ? json_null() : json_string(fp_sev_name(s)); }

static void copy_str(char *dst, size_t size, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= size) {
    n = size - 1;
    /* do not cut a UTF-8 sequence in half */
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
  }
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

static void timeline_add(fp_lc_state_t *st, int64_t at, const char *status, fp_sev_t sev) {
  if (st->ntimeline == FP_LC_TIMELINE_MAX) { /* keep the first entries and the latest */
    memmove(&st->timeline[FP_LC_TIMELINE_MAX / 2], &st->timeline[FP_LC_TIMELINE_MAX / 2 + 1],
            (FP_LC_TIMELINE_MAX / 2 - 1) * sizeof(st->timeline[0]));
    st->ntimeline--;
  }
  st->timeline[st->ntimeline].at_ms = at;
  copy_str(st->timeline[st->ntimeline].status, sizeof(st->timeline[0].status), status);
  st->timeline[st->ntimeline].sev = sev;
  st->ntimeline++;
}

/* Keeps the top `keep` samples per reason: most reached (followers) and most negative. */
static void sample_offer(fp_lc_state_t *st, const fp_lc_params_t *p, const fp_mention_t *m) {
  static const char *const reasons[2] = {"most_reached", "most_negative"};
  size_t keep = p->samples < FP_LC_SAMPLES_MAX / 2 ? p->samples : FP_LC_SAMPLES_MAX / 2;
  for (int r = 0; r < 2; r++) {
    size_t have = 0, worst = SIZE_MAX;
    if (r == 1 && (!m->has_sentiment || m->sentiment >= 0)) continue;
    for (size_t i = 0; i < st->nsamples; i++) {
      fp_lc_sample_t *s = &st->samples[i];
      if (strcmp(s->reason, reasons[r])) continue;
      if (!strcmp(s->id, m->id)) goto next; /* already kept for this reason */
      have++;
      if (worst == SIZE_MAX ||
          (r == 0 ? s->followers < st->samples[worst].followers
                  : s->sentiment > st->samples[worst].sentiment))
        worst = i;
    }
    {
      fp_lc_sample_t *slot = NULL;
      if (have < keep && st->nsamples < FP_LC_SAMPLES_MAX) slot = &st->samples[st->nsamples++];
      else if (worst != SIZE_MAX &&
               (r == 0 ? m->followers > st->samples[worst].followers
                       : m->sentiment < st->samples[worst].sentiment))
        slot = &st->samples[worst];
      if (!slot) continue;
      memset(slot, 0, sizeof(*slot));
      copy_str(slot->id, sizeof(slot->id), m->id);
      copy_str(slot->url, sizeof(slot->url), m->url);
      copy_str(slot->author, sizeof(slot->author), m->author_id);
      copy_str(slot->text, sizeof(slot->text), m->text);
      copy_str(slot->reason, sizeof(slot->reason), reasons[r]);
      slot->followers = m->followers;
      slot->sentiment = m->sentiment;
      slot->has_sentiment = m->has_sentiment;
      slot->at_ms = m->created_at_ms;
    }
  next:;
  }
}

static json_t *samples_json(const fp_lc_state_t *st) {
  json_t *a = json_array();
  for (size_t i = 0; i < st->nsamples; i++) {
    const fp_lc_sample_t *s = &st->samples[i];
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:o}", "id", s->id, "author", s->author,
                          "followers", (json_int_t)s->followers, "text", s->text, "reason",
                          s->reason, "at", time_json(s->at_ms));
    json_object_set_new(o, "url", s->url[0] ? json_string(s->url) : json_null());
    json_object_set_new(o, "sentiment", s->has_sentiment ? json_real(s->sentiment) : json_null());
    json_array_append_new(a, o);
  }
  return a;
}

static json_t *timeline_json(const fp_lc_state_t *st) {
  json_t *a = json_array();
  for (size_t i = 0; i < st->ntimeline; i++)
    json_array_append_new(a, json_pack("{s:o,s:s,s:o}", "at", time_json(st->timeline[i].at_ms),
                                       "status", st->timeline[i].status, "severity",
                                       sev_json(st->timeline[i].sev)));
  return a;
}

static json_t *event_new(const fp_lc_state_t *st, const fp_lc_signal_t *sig, const char *status,
                         fp_sev_t prev) {
  char event_id[48];
  json_t *signals = json_object(), *top = json_array();
  const fp_rule_info_t *r = sig->rule;

  snprintf(event_id, sizeof(event_id), "%s-%" PRIu32, st->incident_id, st->seq);
  for (size_t i = 0; sig->values && i < sig->nvalues && i < r->nwindows; i++) {
    const fp_win_op_t *op = &sig->values[i];
    json_t *w = json_pack("{s:o}", "value", num_json(op->out.value));
    if (r->windows[i].spec.kind == FP_WIN_BASELINE) {
      json_object_set_new(w, "mean", num_json(op->out.mean));
      json_object_set_new(w, "stddev", num_json(op->out.stddev));
    }
    json_object_set_new(signals, r->windows[i].name, w);
  }
  for (size_t i = 0; sig->top && i < sig->ntop; i++)
    if (fp_utf8_valid(sig->top[i].term, strlen(sig->top[i].term)))
      json_array_append_new(top, json_pack("{s:s,s:o}", "term", sig->top[i].term, "count", num_json(sig->top[i].count)));

  return json_pack(
      "{s:i,s:s,s:s,s:s,s:o,s:o,s:{s:s,s:i,s:s},s:s,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:o,s:o,s:o,s:o,s:o}",
      "schema_version", FP_INCIDENT_SCHEMA_VERSION, "event_id", event_id, "incident_id",
      st->incident_id, "status", status, "severity", sev_json(st->open ? st->severity : prev),
      "previous_severity", sev_json(prev), "rule", "id", r->id, "version", r->version, "hash",
      r->hash, "entity", sig->entity, "event_time", time_json(sig->at_ms), "first_mention_at",
      time_json(st->first_ms), "last_mention_at", time_json(st->last_ms), "detected_at",
      time_json(st->opened_ms), "peak_severity", sev_json(st->peak), "mentions",
      (json_int_t)st->mentions, "reach", (json_int_t)st->reach, "signals", signals, "samples",
      samples_json(st), "top_terms", top, "respond",
      r->respond ? json_string(r->respond) : json_null(), "timeline", timeline_json(st));
}

static json_t *summary_new(const fp_lc_state_t *st, const fp_lc_signal_t *sig) {
  json_t *ev = event_new(st, sig, "postmortem", st->severity);
  json_object_set_new(ev, "summary",
                      json_pack("{s:I,s:I,s:o,s:f,s:I,s:I,s:o,s:o}", "duration_ms",
                                (json_int_t)(st->resolved_ms - st->opened_ms), "time_to_detect_ms",
                                (json_int_t)(st->opened_ms - st->first_ms), "peak_severity",
                                sev_json(st->peak), "peak_rate", st->peak_value, "reach",
                                (json_int_t)st->reach, "mentions", (json_int_t)st->mentions,
                                "opened_at", time_json(st->opened_ms), "resolved_at",
                                time_json(st->resolved_ms)));
  return ev;
}

static int emit(fp_lc_state_t *st, const fp_lc_signal_t *sig, const char *status, fp_sev_t prev,
                json_t *out) {
  json_t *ev;
  timeline_add(st, sig->at_ms, status, st->open ? st->severity : prev);
  ev = event_new(st, sig, status, prev);
  if (!ev) { /* cannot happen with validated strings; never let an event vanish silently */
    fp_log(FP_LOG_ERROR, "incidents", "incident %s: %s event could not be encoded", st->incident_id, status);
    ev = json_pack("{s:i,s:s,s:s}", "schema_version", FP_INCIDENT_SCHEMA_VERSION, "incident_id",
                   st->incident_id, "status", "unencodable");
  }
  json_array_append_new(out, ev);
  st->seq++;
  return 1;
}

/* Resolves an open incident that has been quiet for resolve_after, at the moment it became
 * due (not when we noticed): the event is the same whichever signal or sweep finds it. */
static int resolve_if_due(fp_lc_state_t *st, const fp_lc_signal_t *sig, json_t *out) {
  int64_t due = fp_add_sat(st->last_signal_ms, sig->rule->resolve_after_ms);
  fp_lc_signal_t at_due;
  if (!st->open || sig->at_ms < due) return 0;
  at_due = *sig;
  at_due.at_ms = due;
  at_due.values = NULL; /* the window values of a later mention say nothing about the end */
  at_due.nvalues = 0;
  st->open = 0;
  st->resolved_ms = due;
  emit(st, &at_due, "resolved", st->severity, out);
  json_array_append_new(out, summary_new(st, &at_due));
  st->seq++;
  return 2;
}

int fp_lc_step(fp_lc_state_t *st, const fp_lc_params_t *p, const fp_lc_signal_t *sig,
               json_t *out) {
  int64_t t = sig->at_ms;
  int n = resolve_if_due(st, sig, out);
  fp_sev_t s = sig->sev, prev = st->severity;

  if (!sig->mention) return n; /* a sweep */
  /* remember where the current streak of the rule's mentions began (the first window was
   * empty before it): when a crisis opens, that is its first mention, and detection time is
   * measured from it */
  if (!st->open && sig->window_was_empty) st->seen_first_ms = t;
  if (s == FP_SEV_NONE) return n; /* no signal */

  if (!st->open && !(st->resolved_ms && t - st->resolved_ms <= p->grace_ms)) {
    /* a new crisis: fresh identity and evidence */
    uint64_t h = FP_FNV_INIT;
    char tbuf[24];
    /* the crisis began with its streak, but no earlier than the window that detected it */
    int64_t span = sig->rule->nwindows ? sig->rule->windows[0].spec.size_ms : 0;
    int64_t streak = st->seen_first_ms && st->seen_first_ms <= t ? st->seen_first_ms : t;
    if (span && streak < t - span) streak = t - span;
    memset(st, 0, sizeof(*st));
    h = fp_fnv1a(h, sig->rule->id, strlen(sig->rule->id) + 1);
    h = fp_fnv1a(h, sig->entity, strlen(sig->entity) + 1);
    snprintf(tbuf, sizeof(tbuf), "%" PRId64, t);
    h = fp_fnv1a(h, tbuf, strlen(tbuf));
    snprintf(st->incident_id, sizeof(st->incident_id), "%016" PRIx64, h);
    st->first_ms = streak;
    prev = FP_SEV_NONE;
  }
  st->mentions++;
  st->reach = fp_add_sat(st->reach, sig->mention->followers);
  if (t > st->last_ms) st->last_ms = t;
  if (sig->values && sig->nvalues && isfinite(sig->values[0].out.value) &&
      sig->values[0].out.value > st->peak_value)
    st->peak_value = sig->values[0].out.value;
  sample_offer(st, p, sig->mention);

  if (!st->open) {
    int reopen = st->resolved_ms != 0;
    st->open = 1;
    st->severity = s;
    if (s > st->peak) st->peak = s;
    st->sev_since_ms = st->last_signal_ms = t;
    st->lower_since_ms = 0;
    if (!reopen) st->opened_ms = t;
    st->resolved_ms = 0;
    st->seen_first_ms = 0;
    return n + emit(st, sig, reopen ? "reopened" : "opened", FP_SEV_NONE, out);
  }
  st->last_signal_ms = t;
  if (s > st->severity) {
    st->severity = s;
    if (s > st->peak) st->peak = s;
    st->sev_since_ms = t;
    st->lower_since_ms = 0;
    return n + emit(st, sig, "escalated", prev, out);
  }
  if (s == st->severity) {
    st->lower_since_ms = 0;
    return n;
  }
  /* lower, but still a signal: de-escalate once it has lasted the hold (hysteresis) */
  if (!st->lower_since_ms) {
    st->lower_since_ms = t;
    st->lower_sev = s;
  } else if (s > st->lower_sev) {
    st->lower_sev = s;
  }
  if (t - st->lower_since_ms >= p->hold_ms && t - st->sev_since_ms >= p->hold_ms) {
    st->severity = st->lower_sev;
    st->sev_since_ms = t;
    st->lower_since_ms = 0;
    return n + emit(st, sig, "deescalated", prev, out);
  }
  return n;
}

const char *fp_lc_route(const fp_rule_info_t *rule, fp_sev_t sev, const char *def) {
  if ((unsigned)sev < 5 && rule->topics[sev]) return rule->topics[sev];
  if (rule->topics[0]) return rule->topics[0];
  return def;
}

/* ---- persistence: a compact JSON object, field names kept short ---- */

json_t *fp_lc_state_to_json(const fp_lc_state_t *st) {
  json_t *tl = json_array(), *sm = json_array();
  for (size_t i = 0; i < st->ntimeline; i++)
    json_array_append_new(tl, json_pack("[I,s,i]", (json_int_t)st->timeline[i].at_ms,
                                        st->timeline[i].status, (int)st->timeline[i].sev));
  for (size_t i = 0; i < st->nsamples; i++) {
    const fp_lc_sample_t *s = &st->samples[i];
    json_array_append_new(sm, json_pack("[s,s,s,s,s,I,f,b,I]", s->id, s->url, s->author, s->text,
                                        s->reason, (json_int_t)s->followers, s->sentiment,
                                        s->has_sentiment, (json_int_t)s->at_ms));
  }
  return json_pack("{s:b,s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:I,s:f,s:o,s:o,s:I}", "open",
                   st->open, "id", st->incident_id, "sev", (int)st->severity, "peak", (int)st->peak,
                   "first", (json_int_t)st->first_ms, "opened", (json_int_t)st->opened_ms, "sig",
                   (json_int_t)st->last_signal_ms, "since", (json_int_t)st->sev_since_ms, "lower",
                   (json_int_t)st->lower_since_ms, "resolved", (json_int_t)st->resolved_ms, "last",
                   (json_int_t)st->last_ms, "lsev", (int)st->lower_sev, "seq",
                   (json_int_t)st->seq, "n", (json_int_t)st->mentions, "reach",
                   (json_int_t)st->reach, "peakv", st->peak_value, "tl", tl, "sm", sm, "sf",
                   (json_int_t)st->seen_first_ms);
}

fp_err_t fp_lc_state_from_json(json_t *j, fp_lc_state_t *st) {
  json_error_t e;
  int open = 0, sev = 0, peak = 0, lsev = 0;
  const char *id = "";
  json_int_t first = 0, opened = 0, sig = 0, since = 0, lower = 0, resolved = 0, last = 0, seq = 0,
             n = 0, reach = 0, sf = 0;
  double peakv = 0;
  json_t *tl = NULL, *sm = NULL, *v;
  size_t i;

  memset(st, 0, sizeof(*st));
  if (json_unpack_ex(j, &e, 0, "{s:b,s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:I,s:F,s:o,s:o,s?I}",
                     "open", &open, "id", &id, "sev", &sev, "peak", &peak, "first", &first,
                     "opened", &opened, "sig", &sig, "since", &since, "lower", &lower, "resolved",
                     &resolved, "last", &last, "lsev", &lsev, "seq", &seq, "n", &n, "reach", &reach,
                     "peakv", &peakv, "tl", &tl, "sm", &sm, "sf", &sf) != 0 ||
      sev < 0 || sev > 4 || peak < 0 || peak > 4 || lsev < 0 || lsev > 4)
    return FP_ERR_SCHEMA;
  st->open = open;
  copy_str(st->incident_id, sizeof(st->incident_id), id);
  st->severity = (fp_sev_t)sev;
  st->peak = (fp_sev_t)peak;
  st->lower_sev = (fp_sev_t)lsev;
  st->first_ms = first, st->opened_ms = opened, st->last_signal_ms = sig;
  st->sev_since_ms = since, st->lower_since_ms = lower, st->resolved_ms = resolved;
  st->last_ms = last, st->seq = (uint32_t)seq, st->mentions = n, st->reach = reach;
  st->peak_value = peakv;
  st->seen_first_ms = sf;
  json_array_foreach(tl, i, v) {
    json_int_t at;
    const char *status;
    int s;
    if (i >= FP_LC_TIMELINE_MAX || json_unpack(v, "[I,s,i]", &at, &status, &s) != 0 || s < 0 || s > 4)
      return FP_ERR_SCHEMA;
    st->timeline[i].at_ms = at;
    copy_str(st->timeline[i].status, sizeof(st->timeline[i].status), status);
    st->timeline[i].sev = (fp_sev_t)s;
    st->ntimeline = i + 1;
  }
  json_array_foreach(sm, i, v) {
    const char *sid, *url, *author, *text, *reason;
    json_int_t followers, at;
    double sent;
    int has;
    fp_lc_sample_t *s = &st->samples[i];
    if (i >= FP_LC_SAMPLES_MAX ||
        json_unpack(v, "[s,s,s,s,s,I,F,b,I]", &sid, &url, &author, &text, &reason, &followers,
                    &sent, &has, &at) != 0)
      return FP_ERR_SCHEMA;
    copy_str(s->id, sizeof(s->id), sid);
    copy_str(s->url, sizeof(s->url), url);
    copy_str(s->author, sizeof(s->author), author);
    copy_str(s->text, sizeof(s->text), text);
    copy_str(s->reason, sizeof(s->reason), reason);
    s->followers = followers, s->sentiment = sent, s->has_sentiment = has, s->at_ms = at;
    st->nsamples = i + 1;
  }
  return FP_OK;
}
