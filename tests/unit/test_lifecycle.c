/* Unit: the incident state machine - one incident per crisis, ordered escalations, no
 * flapping, grace re-open, post-mortem numbers, byte-identical events for identical input. */
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "testlib.h"

#define MIN (60 * 1000LL)
#define T0 1795600800000LL

static fp_rule_info_t rule;
static fp_lc_params_t params = {0, 5 * MIN, 30 * MIN, 2};

static void setup_rule(void) {
  memset(&rule, 0, sizeof(rule));
  rule.id = "brand.test";
  rule.version = 3;
  memcpy(rule.hash, "0123456789abcdef", 17);
  rule.nwindows = 1;
  rule.windows[0].name = "recent";
  rule.windows[0].spec.kind = FP_WIN_COUNT;
  rule.windows[0].spec.size_ms = 10 * MIN;
  rule.windows[0].spec.step_ms = MIN;
  rule.resolve_after_ms = 30 * MIN;
  rule.respond = "acknowledge publicly";
}

/* One mention with a signal of severity sev at T0 + minute. */
static int step(fp_lc_state_t *st, int64_t minute, fp_sev_t sev, json_t *out, int64_t followers,
                double sentiment) {
  fp_mention_t m;
  fp_win_op_t op;
  char id[32];
  fp_lc_signal_t s;
  memset(&m, 0, sizeof(m));
  memset(&op, 0, sizeof(op));
  snprintf(id, sizeof(id), "m%lld", (long long)minute);
  m.id = id;
  m.author_id = "u";
  m.text = "it broke";
  m.followers = followers;
  m.sentiment = sentiment;
  m.has_sentiment = 1;
  m.created_at_ms = T0 + minute * MIN;
  op.out.value = (double)(sev * 10);
  s = (fp_lc_signal_t){sev, m.created_at_ms, &m, &rule, "acme", &op, 1, 0, NULL, 0};
  s.window_was_empty = minute == 0; /* the streak starts with the first mention */
  return fp_lc_step(st, &params, &s, out);
}

static const char *status_at(json_t *ev, size_t i) {
  return json_string_value(json_object_get(json_array_get(ev, i), "status"));
}

static void test_growing_crisis(void) {
  fp_lc_state_t st;
  json_t *ev = json_array();
  memset(&st, 0, sizeof(st));
  setup_rule();
  step(&st, 0, FP_SEV_NONE, ev, 10, -0.1);
  step(&st, 1, FP_SEV4, ev, 10, -0.5);
  step(&st, 2, FP_SEV4, ev, 5000, -0.6);
  step(&st, 3, FP_SEV3, ev, 10, -0.9);
  step(&st, 4, FP_SEV3, ev, 10, -0.5);
  step(&st, 5, FP_SEV1, ev, 10, -0.5);
  step(&st, 20, FP_SEV_NONE, ev, 10, -0.5); /* quiet, but not for 30 min yet */
  step(&st, 36, FP_SEV_NONE, ev, 10, -0.5); /* 31 min after the last signal */
  FPT_CHECK_EQ_INT(json_array_size(ev), 5);
  FPT_CHECK_EQ_STR(status_at(ev, 0), "opened");
  FPT_CHECK_EQ_STR(status_at(ev, 1), "escalated");
  FPT_CHECK_EQ_STR(status_at(ev, 2), "escalated");
  FPT_CHECK_EQ_STR(status_at(ev, 3), "resolved");
  FPT_CHECK_EQ_STR(status_at(ev, 4), "postmortem");
  const char *id = json_string_value(json_object_get(json_array_get(ev, 0), "incident_id"));
  for (size_t i = 0; i < json_array_size(ev); i++) {
    json_t *e = json_array_get(ev, i);
    char want[64];
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(e, "incident_id")), id);
    snprintf(want, sizeof(want), "%s-%zu", id, i);
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(e, "event_id")), want);
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(e, "schema_version")), 1);
  }
  json_t *esc = json_array_get(ev, 2);
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(esc, "severity")), "sev1");
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(esc, "previous_severity")), "sev3");
  /* post-mortem numbers: opened at minute 1 (first signal minute 1); the last signal at
   * minute 5 makes it due at minute 35, which is when it resolves, whoever notices */
  json_t *sum = json_object_get(json_array_get(ev, 4), "summary");
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "duration_ms")), 34 * MIN);
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(ev, 3), "event_time")),
                   "2026-11-25T10:35:00.000Z");
  /* the streak began with the (signal-less) mention at minute 0: detected one minute later */
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "time_to_detect_ms")), MIN);
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(ev, 0), "first_mention_at")),
                   "2026-11-25T10:00:00.000Z");
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(sum, "peak_severity")), "sev1");
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "mentions")), 5);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "reach")), 5040);
  FPT_CHECK_NEAR(json_number_value(json_object_get(sum, "peak_rate")), 40.0, 1e-9);
  /* samples: the most reached one is m2 */
  json_t *samples = json_object_get(json_array_get(ev, 4), "samples");
  int found = 0;
  for (size_t i = 0; i < json_array_size(samples); i++) {
    json_t *s = json_array_get(samples, i);
    if (!strcmp(json_string_value(json_object_get(s, "reason")), "most_reached") &&
        !strcmp(json_string_value(json_object_get(s, "id")), "m2"))
      found = 1;
  }
  FPT_CHECK(found, "most reached sample kept");
  json_t *tl = json_object_get(json_array_get(ev, 4), "timeline");
  FPT_CHECK_EQ_INT(json_array_size(tl), 4);
  json_decref(ev);
}

static void test_no_flapping(void) {
  fp_lc_state_t st;
  json_t *ev = json_array();
  memset(&st, 0, sizeof(st));
  setup_rule();
  /* a signal hovering between sev3 and sev4 every minute for an hour */
  for (int i = 0; i < 60; i++) step(&st, i, (i % 2) ? FP_SEV3 : FP_SEV4, ev, 1, -0.5);
  /* opened (sev4), escalated (sev3), and never de-escalated: the lower signal never lasts 5 min
   * without a sev3 in between resetting it */
  FPT_CHECK_EQ_INT(json_array_size(ev), 2);
  FPT_CHECK_EQ_STR(status_at(ev, 0), "opened");
  FPT_CHECK_EQ_STR(status_at(ev, 1), "escalated");
  /* a steady lower signal for longer than the hold de-escalates once */
  for (int i = 60; i < 70; i++) step(&st, i, FP_SEV4, ev, 1, -0.5);
  FPT_CHECK_EQ_INT(json_array_size(ev), 3);
  FPT_CHECK_EQ_STR(status_at(ev, 2), "deescalated");
  json_decref(ev);
}

static void test_grace_reopen_and_new_incident(void) {
  fp_lc_state_t st;
  json_t *ev = json_array();
  memset(&st, 0, sizeof(st));
  setup_rule();
  step(&st, 0, FP_SEV3, ev, 1, -0.5);
  step(&st, 31, FP_SEV_NONE, ev, 1, -0.5); /* resolved + postmortem */
  step(&st, 40, FP_SEV3, ev, 1, -0.5);     /* within 30 min grace: same incident */
  FPT_CHECK_EQ_INT(json_array_size(ev), 4);
  FPT_CHECK_EQ_STR(status_at(ev, 3), "reopened");
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(ev, 3), "incident_id")),
                   json_string_value(json_object_get(json_array_get(ev, 0), "incident_id")));
  step(&st, 71, FP_SEV_NONE, ev, 1, -0.5);
  step(&st, 200, FP_SEV3, ev, 1, -0.5);    /* long after: a new crisis */
  FPT_CHECK_EQ_STR(status_at(ev, json_array_size(ev) - 1), "opened");
  FPT_CHECK(strcmp(json_string_value(json_object_get(json_array_get(ev, json_array_size(ev) - 1), "incident_id")),
                   json_string_value(json_object_get(json_array_get(ev, 0), "incident_id"))) != 0,
            "new incident id");
  json_decref(ev);
}

static void test_state_roundtrip_and_determinism(void) {
  fp_lc_state_t a, b;
  json_t *ev1 = json_array(), *ev2 = json_array(), *j;
  char *s1, *s2;
  memset(&a, 0, sizeof(a));
  setup_rule();
  for (int i = 0; i < 12; i++) step(&a, i, i < 6 ? FP_SEV4 : FP_SEV2, ev1, 100 * i, -0.1 * (i % 9));
  j = fp_lc_state_to_json(&a);
  FPT_CHECK_EQ_INT(fp_lc_state_from_json(j, &b), FP_OK);
  FPT_CHECK(memcmp(&a, &b, sizeof(a)) == 0, "state survives a JSON round trip");
  json_decref(j);
  /* continuing from the restored state gives the same events as from the original */
  step(&a, 50, FP_SEV_NONE, ev1, 1, 0);
  step(&b, 50, FP_SEV_NONE, ev2, 1, 0);
  s1 = json_dumps(json_array_get(ev1, json_array_size(ev1) - 1), JSON_COMPACT | JSON_SORT_KEYS);
  s2 = json_dumps(json_array_get(ev2, json_array_size(ev2) - 1), JSON_COMPACT | JSON_SORT_KEYS);
  FPT_CHECK(s1 && s2 && strcmp(s1, s2) == 0, "byte-identical events");
  free(s1);
  free(s2);
  json_t *bad = json_pack("{s:i}", "open", 1);
  FPT_CHECK_EQ_INT(fp_lc_state_from_json(bad, &b), FP_ERR_SCHEMA);
  json_decref(bad);
  json_decref(ev1);
  json_decref(ev2);
}

static void test_sweep_resolves_at_due_time(void) {
  fp_lc_state_t st, st2;
  json_t *ev = json_array(), *ev2 = json_array();
  fp_lc_signal_t sweep;
  char *a, *b;
  memset(&st, 0, sizeof(st));
  setup_rule();
  step(&st, 0, FP_SEV3, ev, 1, -0.5);
  memcpy(&st2, &st, sizeof(st));
  /* a sweep before the due time does nothing; one after resolves at the due time */
  sweep = (fp_lc_signal_t){FP_SEV_NONE, T0 + 10 * MIN, NULL, &rule, "acme", NULL, 0, 0, NULL, 0};
  FPT_CHECK_EQ_INT(fp_lc_step(&st, &params, &sweep, ev), 0);
  sweep.at_ms = T0 + 47 * MIN;
  FPT_CHECK_EQ_INT(fp_lc_step(&st, &params, &sweep, ev), 2);
  /* the same resolution found by a later mention instead is byte-identical */
  step(&st2, 52, FP_SEV_NONE, ev2, 1, -0.5);
  FPT_CHECK_EQ_INT(json_array_size(ev), 3);
  FPT_CHECK_EQ_INT(json_array_size(ev2), 2);
  a = json_dumps(json_array_get(ev, 1), JSON_COMPACT | JSON_SORT_KEYS);
  b = json_dumps(json_array_get(ev2, 0), JSON_COMPACT | JSON_SORT_KEYS);
  FPT_CHECK(a && b && strcmp(a, b) == 0, "resolution independent of who finds it");
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(ev, 1), "event_time")),
                   "2026-11-25T10:30:00.000Z");
  free(a), free(b);
  json_decref(ev), json_decref(ev2);
}

static void test_route(void) {
  setup_rule();
  FPT_CHECK_EQ_STR(fp_lc_route(&rule, FP_SEV1, "incidents"), "incidents");
  rule.topics[FP_SEV1] = "pager";
  FPT_CHECK_EQ_STR(fp_lc_route(&rule, FP_SEV1, "incidents"), "pager");
  FPT_CHECK_EQ_STR(fp_lc_route(&rule, FP_SEV3, "incidents"), "incidents");
}

int main(void) {
  fpt_run("growing crisis", test_growing_crisis);
  fpt_run("no flapping", test_no_flapping);
  fpt_run("grace re-open and new incident", test_grace_reopen_and_new_incident);
  fpt_run("state round trip and determinism", test_state_roundtrip_and_determinism);
  fpt_run("sweep resolves at the due time", test_sweep_resolves_at_due_time);
  fpt_run("routing", test_route);
  return fpt_done();
}
