/*
 * test_rules.c - the rule contract (errors name file and line), stage 1 and 2 on hand-built
 * mentions, quarantine after K failures, and the rules/lib signals against hand-computed
 * values (tests/rules/fixtures/signals/check.lua asserts them at load).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "testlib.h"
#include "util.h"

#define FIX FP_SOURCE_DIR "/tests/rules/fixtures/"

static char msg[512];

static void load_fails(const char *dir, const char *want1, const char *want2) {
  fp_rules_t *rs = fp_rules_new(dir, NULL, msg, sizeof msg);
  FPT_CHECK(rs == NULL, "%s loaded", dir);
  FPT_CHECK(strstr(msg, want1) != NULL, "%s: '%s' not in: %s", dir, want1, msg);
  if (want2) FPT_CHECK(strstr(msg, want2) != NULL, "%s: '%s' not in: %s", dir, want2, msg);
  fp_rules_destroy(rs);
}

static void t_contract(void) {
  load_fails(FIX "bad/unknown_field", "unknown_field/r.lua:2:", "unknown field 'colour'");
  load_fails(FIX "bad/missing_id", "missing_id/r.lua:2:", "missing 'id'");
  load_fails(FIX "bad/dup_id", "dup_id/b.lua:3:", "duplicate rule id 'same'");
  load_fails(FIX "bad/bad_duration", "bad_duration/r.lua:5:", "bad duration '10x'");
  load_fails(FIX "bad/not_multiple", "not_multiple/r.lua:6:", "not a whole multiple");
  load_fails(FIX "bad/bad_severity", "bad_severity/r.lua:1:", "unknown severity 'sev5'");
  load_fails(FIX "bad/too_many", "too_many/r.lua:1:", "more than 16 windows");
  load_fails(FIX "bad/not_a_rule", "not_a_rule/r.lua:1:", "must return fp.rule");
  load_fails(FIX "bad/syntax", "syntax/r.lua:3:", NULL);
  load_fails(FIX "bad/load_error", "load_error/r.lua:2:", "refusing to load");
  load_fails(FIX "bad/missing_of", "missing_of/r.lua:5:", "missing 'of'");
  load_fails(FIX "bad/load_loop", "load_loop/r.lua:1:", "budget");
  load_fails(FIX "does-not-exist", "does-not-exist", NULL);
  load_fails(FIX "signals_fail", "signals_fail/check.lua:3:", "deliberately wrong");
  FPT_CHECK_EQ_INT(fp_rules_check_dir(FIX "bad/dup_id", NULL, msg, sizeof msg), FP_ERR_RULE_LOAD);
}

static void t_signals(void) {
  fp_rules_t *rs = fp_rules_new(FIX "signals", NULL, msg, sizeof msg);
  FPT_CHECK(rs != NULL, "signals: %s", msg);
  fp_rules_destroy(rs);
}

static void t_info(void) {
  fp_rules_t *rs = fp_rules_new(FIX "basic", NULL, msg, sizeof msg);
  if (!FPT_CHECK(rs != NULL, "basic: %s", msg)) return;
  FPT_CHECK_EQ_INT(fp_rules_count(rs), 2);
  const fp_rule_info_t *r1 = fp_rules_info(rs, 0);
  FPT_CHECK_EQ_STR(r1->id, "r1");
  FPT_CHECK_EQ_INT(r1->version, 3);
  FPT_CHECK_EQ_INT(r1->nwindows, 5);
  const char *names[] = {"c", "s", "d", "t", "b"}; /* declaration order */
  fp_win_kind_t kinds[] = {FP_WIN_COUNT, FP_WIN_SUM, FP_WIN_DISTINCT, FP_WIN_TOPK, FP_WIN_BASELINE};
  for (size_t i = 0; i < 5; i++) {
    FPT_CHECK_EQ_STR(r1->windows[i].name, names[i]);
    FPT_CHECK_EQ_INT(r1->windows[i].spec.kind, kinds[i]);
  }
  FPT_CHECK_EQ_INT(r1->windows[0].spec.size_ms, 600000);
  FPT_CHECK_EQ_INT(r1->windows[0].spec.step_ms, 60000);
  FPT_CHECK_EQ_INT(r1->windows[4].spec.size_ms, 86400000);
  FPT_CHECK_EQ_STR(r1->windows[1].of, "author.followers");
  FPT_CHECK_EQ_INT(r1->resolve_after_ms, 45 * 60000);
  FPT_CHECK_EQ_STR(r1->respond, "look");
  FPT_CHECK_EQ_STR(r1->topics[FP_SEV1], "pager");
  FPT_CHECK_EQ_STR(r1->topics[FP_SEV3], "inc");
  FPT_CHECK_EQ_INT(strlen(r1->hash), 16);
  /* the hash is FNV-1a 64 of the file bytes */
  FILE *f = fopen(FIX "basic/r1.lua", "rb");
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  char want[17];
  snprintf(want, sizeof want, "%016llx", (unsigned long long)fp_fnv1a(FP_FNV_INIT, buf, n));
  FPT_CHECK_EQ_STR(r1->hash, want);
  FPT_CHECK(fp_rules_info(rs, 1)->resolve_after_ms == 30 * 60000, "default resolve_after");
  FPT_CHECK(fp_rules_info(rs, 1)->topics[FP_SEV1] == NULL, "no topics");
  FPT_CHECK_EQ_STR(fp_sev_name(FP_SEV2), "sev2");
  FPT_CHECK_EQ_INT(fp_sev_parse("sev1"), FP_SEV1);
  FPT_CHECK_EQ_INT(fp_sev_parse("none"), FP_SEV_NONE);
  FPT_CHECK_EQ_INT(fp_sev_parse("sev9"), -1);
  FPT_CHECK_EQ_INT(fp_rules_check_dir(FIX "basic", NULL, msg, sizeof msg), FP_OK);
  fp_rules_destroy(rs);
}

static void mk(fp_mention_t *m, const char *json, int64_t ts) {
  json_error_t je;
  memset(m, 0, sizeof *m);
  m->doc = json_loads(json, 0, &je);
  FPT_CHECK(m->doc != NULL, "bad test json: %s", je.text);
  m->id = json_string_value(json_object_get(m->doc, "id"));
  m->brand = json_string_value(json_object_get(m->doc, "brand"));
  m->text = json_string_value(json_object_get(m->doc, "text"));
  m->reshare_of = json_string_value(json_object_get(m->doc, "reshare_of"));
  json_t *s = json_object_get(m->doc, "sentiment");
  if (json_is_number(s)) m->sentiment = json_number_value(s), m->has_sentiment = 1;
  m->created_at_ms = ts;
}

static void t_select(void) {
  fp_rules_t *rs = fp_rules_new(FIX "basic", NULL, msg, sizeof msg);
  if (!FPT_CHECK(rs != NULL, "basic: %s", msg)) return;
  fp_mention_t m;
  fp_rule_hit_t hits[4];
  size_t nh;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne;

  mk(&m, "{\"id\":\"1\",\"brand\":\"acme\",\"lang\":\"en\",\"author\":{\"id\":\"u1\",\"followers\":100},"
         "\"hashtags\":[\"#Recall\",\"Acme\",\"acme\"],\"text\":\"Huge recall of the Acme blender\"}",
     5000);
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 42, hits, 4, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(ne, 0);
  FPT_CHECK_EQ_INT(nh, 1); /* r2: not a reshare */
  FPT_CHECK_EQ_INT(hits[0].rule, 0);
  FPT_CHECK_EQ_STR(hits[0].entity, "acme");
  FPT_CHECK_EQ_INT(hits[0].op_first, 0);
  FPT_CHECK_EQ_INT(hits[0].op_count, 6); /* c s d t(2 terms) b */
  fp_win_op_t *o = ops.ops;
  const fp_rule_info_t *r1 = fp_rules_info(rs, 0);
  FPT_CHECK_EQ_STR(o[0].key, "r1|acme|c");
  FPT_CHECK(o[0].spec == &r1->windows[0].spec, "spec pointer");
  FPT_CHECK_EQ_INT(o[0].offset, 42);
  FPT_CHECK_EQ_INT(o[0].ts_ms, 5000);
  FPT_CHECK_NEAR(o[0].amount, 1, 0);
  FPT_CHECK(o[0].member == NULL, "count member");
  FPT_CHECK_EQ_STR(o[1].key, "r1|acme|s");
  FPT_CHECK_NEAR(o[1].amount, 100, 0);
  FPT_CHECK_EQ_STR(o[2].member, "u1");
  FPT_CHECK_EQ_STR(o[3].key, "r1|acme|t");
  FPT_CHECK_EQ_STR(o[3].member, "recall");
  FPT_CHECK_EQ_STR(o[4].member, "acme");
  FPT_CHECK(o[3].spec == o[4].spec, "topk ops share the window");
  FPT_CHECK_EQ_STR(o[5].key, "r1|acme|b");

  /* stage 2 with hand-set values */
  fp_sev_t sev;
  o[0].out.value = 10;
  o[1].out.value = 1000; /* 1000 per 10 min = 100 per minute */
  o[5].out.mean = 2;
  FPT_CHECK_EQ_INT(fp_rules_severity(rs, mref, &hits[0], ops.ops, &sev, msg, sizeof msg), FP_OK);
  FPT_CHECK_EQ_INT(sev, FP_SEV2);
  o[0].out.value = 9;
  FPT_CHECK_EQ_INT(fp_rules_severity(rs, mref, &hits[0], ops.ops, &sev, msg, sizeof msg), FP_OK);
  FPT_CHECK_EQ_INT(sev, FP_SEV_NONE);
  fp_rules_release(rs, mref);
  json_decref(m.doc);

  /* a French reshare with missing author fields: r1 skips (when), r2 keys on reshare_of */
  fp_opvec_reset(&ops);
  mk(&m, "{\"id\":\"2\",\"brand\":\"acme\",\"lang\":\"fr\",\"reshare_of\":\"p9\",\"sentiment\":-0.5,"
         "\"text\":\"The HUGE recall of the Acme blender, the motor exploded; 2024\"}", 6000);
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 43, hits, 4, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(nh, 1);
  FPT_CHECK_EQ_INT(hits[0].rule, 1);
  FPT_CHECK_EQ_STR(hits[0].entity, "p9");
  FPT_CHECK_EQ_INT(hits[0].op_count, 7); /* 6 terms + neg */
  const char *terms[] = {"huge", "recall", "acme", "blender", "motor", "exploded"};
  for (size_t i = 0; i < 6; i++) FPT_CHECK_EQ_STR(ops.ops[i].member, terms[i]);
  FPT_CHECK_EQ_STR(ops.ops[6].key, "r2|p9|neg");
  FPT_CHECK_NEAR(ops.ops[6].amount, 1, 0);
  FPT_CHECK_EQ_INT(fp_rules_severity(rs, mref, &hits[0], ops.ops, &sev, msg, sizeof msg), FP_OK);
  FPT_CHECK_EQ_INT(sev, FP_SEV4);
  fp_rules_release(rs, mref);
  json_decref(m.doc);

  /* missing fields: SUM adds 0, DISTINCT member NULL (nothing added), TOPK no terms = one
   * op with member NULL; an over-long entity is hashed */
  fp_opvec_reset(&ops);
  char big[400];
  memset(big, 'b', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  char json[600];
  snprintf(json, sizeof json, "{\"id\":\"3\",\"brand\":\"%s\",\"lang\":\"en\",\"text\":\"x\"}", big);
  mk(&m, json, 7000);
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 44, hits, 4, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(nh, 1);
  FPT_CHECK_EQ_INT(hits[0].op_count, 5);
  FPT_CHECK_EQ_INT(strlen(hits[0].entity), 17);
  FPT_CHECK_NEAR(ops.ops[1].amount, 0, 0);
  FPT_CHECK(ops.ops[2].member == NULL, "distinct of a missing field");
  FPT_CHECK(ops.ops[3].member == NULL, "topk of a missing field");
  FPT_CHECK(ops.ops[3].spec == &r1->windows[3].spec, "topk op present");
  fp_rules_release(rs, mref);
  json_decref(m.doc);

  /* missing brand: key path absent -> not selected */
  fp_opvec_reset(&ops);
  mk(&m, "{\"id\":\"4\",\"lang\":\"en\",\"text\":\"x\"}", 8000);
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 45, hits, 4, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(nh, 0);
  FPT_CHECK_EQ_INT(ops.n, 0);
  fp_rules_release(rs, mref);
  json_decref(m.doc);

  fp_opvec_free(&ops);
  fp_rules_destroy(rs);
}

static fp_err_t sev_of(fp_rules_t *rs, const char *text, fp_sev_t *sev, size_t *nh) {
  char json[256];
  fp_mention_t m;
  fp_rule_hit_t hits[2];
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne;
  fp_err_t e = FP_OK;
  snprintf(json, sizeof json, "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"%s\"}", text);
  mk(&m, json, 1);
  fp_rules_select(rs, &m, 1, hits, 2, nh, &ops, &mref, &ne);
  *sev = FP_SEV_NONE;
  if (*nh) e = fp_rules_severity(rs, mref, &hits[0], ops.ops, sev, msg, sizeof msg);
  fp_rules_release(rs, mref);
  fp_opvec_free(&ops);
  json_decref(m.doc);
  return e;
}

static void t_quarantine(void) {
  fp_rules_limits_t lim = {.quarantine_after = 3};
  fp_rules_t *rs = fp_rules_new(FIX "quarantine", &lim, msg, sizeof msg);
  if (!FPT_CHECK(rs != NULL, "quarantine: %s", msg)) return;
  fp_sev_t sev;
  size_t nh;
  const fp_rule_info_t *q = fp_rules_info(rs, 0);
  FPT_CHECK_EQ_INT(sev_of(rs, "fail", &sev, &nh), FP_ERR_RULE_RUNTIME);
  FPT_CHECK(strstr(msg, "asked to fail") != NULL, "message: %s", msg);
  FPT_CHECK_EQ_INT(sev_of(rs, "loop", &sev, &nh), FP_ERR_RULE_BUDGET);
  FPT_CHECK_EQ_INT(sev_of(rs, "ok", &sev, &nh), FP_OK); /* resets the streak */
  FPT_CHECK_EQ_INT(sev, FP_SEV4);
  FPT_CHECK_EQ_INT(sev_of(rs, "fail", &sev, &nh), FP_ERR_RULE_RUNTIME);
  FPT_CHECK_EQ_INT(sev_of(rs, "fail", &sev, &nh), FP_ERR_RULE_RUNTIME);
  FPT_CHECK_EQ_INT(q->quarantined, 0);
  FPT_CHECK_EQ_INT(sev_of(rs, "fail", &sev, &nh), FP_ERR_RULE_RUNTIME);
  FPT_CHECK_EQ_INT(q->quarantined, 1);
  FPT_CHECK_EQ_INT(q->failures, 5);
  FPT_CHECK_EQ_INT(sev_of(rs, "ok", &sev, &nh), FP_OK);
  FPT_CHECK_EQ_INT(nh, 0); /* skipped from now on */
  fp_rules_destroy(rs);
}

static void t_check_dir(void) {
  char *path = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&path, &len);
  FPT_CHECK_EQ_INT(fp_rules_check_dir(FP_SOURCE_DIR "/rules", out, msg, sizeof msg), FP_OK);
  fclose(out);
  FPT_CHECK(path && strstr(path, "brand.negative-surge") && strstr(path, "5 rule(s)"),
            "check output: %s / %s", path ? path : "", msg);
  free(path);
}

int main(void) {
  fpt_run("contract", t_contract);
  fpt_run("signals", t_signals);
  fpt_run("info", t_info);
  fpt_run("select_severity", t_select);
  fpt_run("quarantine", t_quarantine);
  fpt_run("check_dir", t_check_dir);
  return fpt_done();
}
