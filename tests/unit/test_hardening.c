/* Unit: regressions of the fuzzing findings (tests/fuzz/README.md F1-F4): strings that reach
 * incident JSON are valid UTF-8 or refused, durations are bounded, non-finite window values
 * and huge reach neither break the event nor the saved state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lifecycle.h"
#include "mention.h"
#include "rules.h"
#include "testlib.h"

static fp_rules_t *load_rule(const char *body, char *err, size_t es) {
  char *dir = fpt_tmpdir("hard"), path[512];
  FILE *f;
  fp_rules_t *r;
  snprintf(path, sizeof(path), "%s/r.lua", dir);
  f = fopen(path, "w");
  fputs(body, f);
  fclose(f);
  r = fp_rules_new(dir, NULL, err, es);
  unlink(path);
  rmdir(dir);
  free(dir);
  return r;
}

static void test_rule_strings_and_durations(void) {
  char err[512];
  fp_rules_t *r;
  r = load_rule("return fp.rule{ id='a', key='brand', respond='\xff\xfe', "
                "windows={ n=fp.count{size='10m', step='1m'} }, severity=function(w) end }", err, sizeof(err));
  FPT_CHECK(r == NULL && strstr(err, "respond") && strstr(err, "UTF-8"), "non-UTF-8 respond refused: %s", err);
  fp_rules_destroy(r);
  r = load_rule("return fp.rule{ id='a', key='brand', resolve_after=math.maxinteger, "
                "windows={ n=fp.count{size='10m', step='1m'} }, severity=function(w) end }", err, sizeof(err));
  FPT_CHECK(r == NULL && strstr(err, "resolve_after"), "unbounded resolve_after refused: %s", err);
  fp_rules_destroy(r);
  r = load_rule("return fp.rule{ id='a', key='brand', "
                "windows={ n=fp.count{size=math.maxinteger, step=math.maxinteger} }, severity=function(w) end }",
                err, sizeof(err));
  FPT_CHECK(r == NULL && strstr(err, "size"), "unbounded window refused: %s", err);
  fp_rules_destroy(r);
  /* an entity that is not UTF-8 is named by its hash */
  r = load_rule("return fp.rule{ id='a', key=function(m) return '\\255x' end, "
                "windows={ n=fp.count{size='10m', step='1m'} }, severity=function(w) end }", err, sizeof(err));
  FPT_CHECK(r != NULL, "rule with a function key loads: %s", r ? "" : err);
  if (r) {
    fp_mention_t m;
    const char *doc = "{\"id\":\"m\",\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"t\",\"created_at\":1795600800000}";
    fp_rule_hit_t hits[4];
    fp_opvec_t ops = {0};
    size_t nh = 0;
    int mref;
    unsigned ne;
    memset(&m, 0, sizeof(m));
    FPT_CHECK_EQ_INT(fp_mention_decode(doc, strlen(doc), 1 << 20, &m, err, sizeof(err)), FP_OK);
    fp_rules_select(r, &m, 1, hits, 4, &nh, &ops, &mref, &ne);
    FPT_CHECK_EQ_INT(nh, 1);
    if (nh) FPT_CHECK(hits[0].entity[0] == '#' && strlen(hits[0].entity) == 17, "hashed entity %s", hits[0].entity);
    fp_rules_release(r, mref);
    fp_opvec_free(&ops);
    fp_mention_clear(&m);
    fp_rules_destroy(r);
  }
}

static void test_counts_capped(void) {
  fp_mention_t m;
  char err[256];
  const char *doc = "{\"id\":\"m\",\"brand\":\"b\",\"author\":{\"id\":\"u\",\"followers\":9223372036854775807},"
                    "\"text\":\"t\",\"created_at\":1795600800000}";
  memset(&m, 0, sizeof(m));
  FPT_CHECK_EQ_INT(fp_mention_decode(doc, strlen(doc), 1 << 20, &m, err, sizeof(err)), FP_ERR_SCHEMA);
  FPT_CHECK(strstr(err, "author.followers") != NULL, "reason names the field: %s", err);
}

static void test_non_finite_and_saturation(void) {
  fp_rule_info_t rule;
  fp_lc_params_t p = {0, 60000, 60000, 2};
  fp_lc_state_t st;
  fp_mention_t m;
  fp_win_op_t op;
  json_t *ev = json_array(), *sj;
  memset(&rule, 0, sizeof(rule));
  rule.id = "r";
  rule.version = 1;
  memcpy(rule.hash, "0000000000000000", 17);
  rule.nwindows = 1;
  rule.windows[0].name = "w";
  rule.resolve_after_ms = INT64_MAX; /* saturates, never overflows */
  memset(&st, 0, sizeof(st));
  memset(&m, 0, sizeof(m));
  memset(&op, 0, sizeof(op));
  m.id = "m1";
  m.author_id = "u";
  m.text = "x";
  m.followers = INT64_MAX - 5;
  m.created_at_ms = 1795600800000LL;
  op.out.value = INFINITY;
  fp_lc_signal_t s = {FP_SEV3, m.created_at_ms, &m, &rule, "e", &op, 1, 1, NULL, 0};
  FPT_CHECK_EQ_INT(fp_lc_step(&st, &p, &s, ev), 1);
  s.at_ms += 1000;
  s.sev = FP_SEV2;
  FPT_CHECK_EQ_INT(fp_lc_step(&st, &p, &s, ev), 1); /* reach would overflow without saturation */
  FPT_CHECK_EQ_INT(st.reach, INT64_MAX);
  json_t *w = json_object_get(json_object_get(json_array_get(ev, 0), "signals"), "w");
  FPT_CHECK(w && json_is_null(json_object_get(w, "value")), "an infinite window value reads as null");
  sj = fp_lc_state_to_json(&st);
  FPT_CHECK(sj != NULL, "state still serialises");
  json_decref(sj);
  json_decref(ev);
}

int main(void) {
  fpt_run("rule strings must be UTF-8, durations bounded (F1, F2)", test_rule_strings_and_durations);
  fpt_run("counts are capped (F4)", test_counts_capped);
  fpt_run("non-finite values and saturating sums (F3, F4)", test_non_finite_and_saturation);
  return fpt_done();
}
