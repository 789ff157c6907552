/*
 * test_example_pack.c - loads the example pack in /work/main/rules and checks each rule fires,
 * or stays quiet, on crafted mentions with hand-set window values; also measures throughput
 * of stage 1 + stage 2 over the whole pack (target > 100k mentions/s on one core).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "testlib.h"
#include "util.h"

static char msg[512];
static fp_rules_t *rs;

static size_t rule_index(const char *id) {
  for (size_t i = 0; i < fp_rules_count(rs); i++)
    if (strcmp(fp_rules_info(rs, i)->id, id) == 0) return i;
  return (size_t)-1;
}

typedef struct {
  const char *window;
  double value, mean, stddev;
} wv_t;

/* Selects @p json; @returns the severity of rule @p id with window values @p v, or -1 when
 * the rule did not select the mention. */
static int sev(const char *json, const char *id, const wv_t *v, size_t nv) {
  fp_mention_t m;
  memset(&m, 0, sizeof m);
  m.doc = json_loads(json, 0, NULL);
  if (!FPT_CHECK(m.doc != NULL, "bad json %s", json)) return -2;
  m.brand = json_string_value(json_object_get(m.doc, "brand"));
  m.text = json_string_value(json_object_get(m.doc, "text"));
  m.created_at_ms = 1000;
  fp_rule_hit_t hits[16];
  size_t nh;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne;
  int out = -1;
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 1, hits, 16, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(ne, 0);
  size_t want = rule_index(id);
  for (size_t h = 0; h < nh; h++) {
    if (hits[h].rule != want) continue;
    const fp_rule_info_t *in = fp_rules_info(rs, want);
    for (size_t j = hits[h].op_first; j < hits[h].op_first + hits[h].op_count; j++)
      for (size_t k = 0; k < nv; k++)
        for (size_t w = 0; w < in->nwindows; w++)
          if (ops.ops[j].spec == &in->windows[w].spec && strcmp(in->windows[w].name, v[k].window) == 0) {
            ops.ops[j].out.value = v[k].value;
            ops.ops[j].out.mean = v[k].mean;
            ops.ops[j].out.stddev = v[k].stddev;
          }
    fp_sev_t s;
    FPT_CHECK_EQ_INT(fp_rules_severity(rs, mref, &hits[h], ops.ops, &s, msg, sizeof msg), FP_OK);
    out = (int)s;
  }
  fp_rules_release(rs, mref);
  fp_opvec_free(&ops);
  json_decref(m.doc);
  return out;
}

#define NEG "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"this blender is terrible, worst purchase\"," \
            "\"author\":{\"id\":\"u1\",\"followers\":50}}"
#define POS "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"love it, great blender\"," \
            "\"author\":{\"id\":\"u1\",\"followers\":50}}"

static void t_negative_surge(void) {
  /* z = (60 - 10) / max(4 * 1, 2) = 12.5 -> sev1, 40 authors of 60: a crowd */
  wv_t crowd[] = {{"recent", 60, 0, 0}, {"base", 5, 10, 4}, {"authors", 40, 0, 0}};
  FPT_CHECK_EQ_INT(sev(NEG, "brand.negative-surge", crowd, 3), FP_SEV1);
  /* same volume from 3 accounts: capped at sev4 */
  wv_t ring[] = {{"recent", 60, 0, 0}, {"base", 5, 10, 4}, {"authors", 3, 0, 0}};
  FPT_CHECK_EQ_INT(sev(NEG, "brand.negative-surge", ring, 3), FP_SEV4);
  /* z = (14 - 10) / 4 = 1: nothing */
  wv_t usual[] = {{"recent", 14, 0, 0}, {"base", 5, 10, 4}, {"authors", 14, 0, 0}};
  FPT_CHECK_EQ_INT(sev(NEG, "brand.negative-surge", usual, 3), FP_SEV_NONE);
  /* positive mentions are not selected */
  FPT_CHECK_EQ_INT(sev(POS, "brand.negative-surge", crowd, 3), -1);
}

static void t_volume_spike(void) {
  /* z = (300 - 100) / max(10, 3) = 20 -> capped at sev2 by the ladder */
  wv_t v[] = {{"recent", 300, 0, 0}, {"base", 50, 100, 10}, {"authors", 200, 0, 0}};
  FPT_CHECK_EQ_INT(sev(POS, "brand.volume-spike", v, 3), FP_SEV2);
  wv_t q[] = {{"recent", 40, 0, 0}, {"base", 5, 1, 1}, {"authors", 40, 0, 0}};
  FPT_CHECK_EQ_INT(sev(POS, "brand.volume-spike", q, 3), FP_SEV_NONE); /* < 50 mentions */
}

static void t_viral_complaint(void) {
  const char *re = "{\"id\":\"2\",\"brand\":\"acme\",\"reshare_of\":\"p1\",\"text\":\"terrible service\","
                   "\"author\":{\"id\":\"u2\",\"followers\":10}}";
  /* 250 reshares in 10 min = 25/min -> sev2; reach 1e4 (< 1e6) keeps the plain ladder */
  wv_t v[] = {{"reshares", 250, 0, 0}, {"reach", 9999, 0, 0}, {"authors", 200, 0, 0}};
  FPT_CHECK_EQ_INT(sev(re, "post.viral-complaint", v, 3), FP_SEV2);
  /* same velocity reaching 2M followers: sev1 */
  wv_t big[] = {{"reshares", 250, 0, 0}, {"reach", 2e6, 0, 0}, {"authors", 200, 0, 0}};
  FPT_CHECK_EQ_INT(sev(re, "post.viral-complaint", big, 3), FP_SEV1);
  /* not a reshare: not selected */
  FPT_CHECK_EQ_INT(sev(NEG, "post.viral-complaint", v, 3), -1);
}

static void t_influencer(void) {
  const char *inf = "{\"id\":\"3\",\"brand\":\"acme\",\"text\":\"awful, never again\","
                    "\"author\":{\"id\":\"star\",\"followers\":2000000,\"verified\":true}}";
  wv_t one[] = {{"influencers", 1, 0, 0}, {"reach", 2e6, 0, 0}};
  FPT_CHECK_EQ_INT(sev(inf, "brand.influencer", one, 2), FP_SEV4); /* log10(2e6) = 6.3 */
  wv_t many[] = {{"influencers", 5, 0, 0}, {"reach", 1e7, 0, 0}};
  FPT_CHECK_EQ_INT(sev(inf, "brand.influencer", many, 2), FP_SEV2);
  FPT_CHECK_EQ_INT(sev(NEG, "brand.influencer", one, 2), -1); /* 50 followers */
}

static void t_crisis_keywords(void) {
  const char *rc = "{\"id\":\"4\",\"brand\":\"acme\",\"text\":\"Acme announces a RECALL of blenders\","
                   "\"author\":{\"id\":\"u4\"}}";
  wv_t v[] = {{"hits", 60, 0, 0}, {"authors", 50, 0, 0}};
  FPT_CHECK_EQ_INT(sev(rc, "brand.crisis-keywords", v, 2), FP_SEV2);
  wv_t bots[] = {{"hits", 200, 0, 0}, {"authors", 2, 0, 0}};
  FPT_CHECK_EQ_INT(sev(rc, "brand.crisis-keywords", bots, 2), FP_SEV4);
  FPT_CHECK_EQ_INT(sev(POS, "brand.crisis-keywords", v, 2), -1);
}

static void t_throughput(void) {
  const char *json =
      "{\"id\":\"m1\",\"platform\":\"x\",\"brand\":\"acme\",\"entities\":[\"acme\",\"blender\"],"
      "\"hashtags\":[\"acme\",\"fail\"],\"author\":{\"id\":\"u1\",\"followers\":1200,\"verified\":false},"
      "\"text\":\"My Acme blender caught fire, this is terrible. Recall it now!\",\"lang\":\"en\","
      "\"created_at\":\"2026-11-25T10:00:00Z\",\"reshare_of\":\"p1\","
      "\"engagement\":{\"likes\":3,\"reshares\":1,\"replies\":0},\"url\":\"https://x/1\"}";
  fp_mention_t m;
  memset(&m, 0, sizeof m);
  m.doc = json_loads(json, 0, NULL);
  m.brand = "acme";
  m.text = json_string_value(json_object_get(m.doc, "text"));
  m.created_at_ms = 1000;
  fp_rule_hit_t hits[16];
  size_t nh, total_hits = 0;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne;
  const int N = 20000;
  int64_t t0 = fp_mono_ns();
  for (int i = 0; i < N; i++) {
    fp_opvec_reset(&ops);
    fp_rules_select(rs, &m, i, hits, 16, &nh, &ops, &mref, &ne);
    for (size_t h = 0; h < nh; h++) {
      fp_sev_t s;
      fp_rules_severity(rs, mref, &hits[h], ops.ops, &s, msg, sizeof msg);
    }
    total_hits += nh;
    fp_rules_release(rs, mref);
  }
  double secs = (double)(fp_mono_ns() - t0) / 1e9;
  fpt_note("example pack: %.0f mentions/s (%zu hits per mention)", N / secs, total_hits / N);
  FPT_CHECK(total_hits / N == 4, "all but brand.influencer (1200 followers) select this, got %zu", total_hits / N);
  /* speed is measured in bench/, never asserted in a test */
  fp_opvec_free(&ops);
  json_decref(m.doc);
}

int main(void) {
  rs = fp_rules_new(FP_SOURCE_DIR "/rules", NULL, msg, sizeof msg);
  if (!rs) {
    fprintf(stderr, "cannot load the example pack: %s\n", msg);
    return 1;
  }
  fpt_run("negative_surge", t_negative_surge);
  fpt_run("volume_spike", t_volume_spike);
  fpt_run("viral_complaint", t_viral_complaint);
  fpt_run("influencer", t_influencer);
  fpt_run("crisis_keywords", t_crisis_keywords);
  fpt_run("throughput", t_throughput);
  fp_rules_destroy(rs);
  return fpt_done();
}
