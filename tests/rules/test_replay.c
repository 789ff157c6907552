/*
 * test_replay.c - `flashpoint replay` (engine/replay.c) with the example pack over generated
 * streams (engine/gen.c) with injected crises and their ground truth:
 *   - every slow-burn and flash-viral crisis is detected between its start and its end, and
 *     the time from its start is reported;
 *   - a bot burst (5 accounts) never reaches sev1/sev2;
 *   - the background raises nothing above sev4;
 *   - the same input gives byte-identical incidents and summary; gzip input equals plain;
 *   - mentions/s are printed (for bench/).
 * The stream is written as JSON lines, with the truth in FILE.truth.json, exactly as
 * `flashpoint generate` does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef FP_HAVE_ZLIB
#include <zlib.h>
#endif

#include "gen.h"
#include "replay.h"
#include "testlib.h"
#include "util.h"

#define START_MS 1767571200000LL /* 2026-01-05T00:00:00Z */
#define RULES FP_SOURCE_DIR "/rules"

static char *dir;

/* Writes a stream (and its truth file) like `flashpoint generate`. @returns 0. */
static int write_stream(const char *path, int gz, int brands, int hours, const fp_gen_crisis_t *cr, size_t ncr) {
  fp_gen_conf_t gc;
  fp_gen_opts_t go = {1, 0};
  fp_buf_t line = {0};
  const char *key;
  int crisis;
  char tpath[600];
  memset(&gc, 0, sizeof gc);
  gc.seed = 7;
  gc.brands = brands;
  gc.start_ms = START_MS;
  gc.duration_ms = (int64_t)hours * 3600000;
  gc.base_per_min = 20;
  gc.authors = 5000;
  gc.out_of_order = 0.01;
  gc.ncrises = ncr;
  gc.crises = cr;
  gc.id_prefix = "m";
  fp_gen_t *g = fp_gen_new(&gc);
  if (!FPT_CHECK(g != NULL, "generator")) return -1;
  fp_gen_set_opts(g, &go);
#ifdef FP_HAVE_ZLIB
  gzFile z = gz ? gzopen(path, "wb1") : NULL;
#else
  (void)gz;
#endif
  FILE *f = gz ? NULL : fopen(path, "w");
#ifdef FP_HAVE_ZLIB
  if (!FPT_CHECK(gz ? z != NULL : f != NULL, "open %s", path)) {
#else
  if (!FPT_CHECK(f != NULL, "open %s", path)) {
#endif
    fp_gen_destroy(g);
    return -1;
  }
  while (fp_gen_next(g, &line, &key, &crisis)) {
#ifdef FP_HAVE_ZLIB
    if (z) gzprintf(z, "%s\n", line.data);
    else
#endif
    if (f) fprintf(f, "%s\n", line.data);
  }
#ifdef FP_HAVE_ZLIB
  if (z) gzclose(z);
#endif
  if (f) fclose(f);
  json_t *t = json_pack("{s:[]}", "crises"), *arr = json_object_get(t, "crises");
  for (size_t c = 0; c < ncr; c++) {
    char a[32], b[32], root[64];
    fp_time_format(cr[c].start_ms, a, sizeof a);
    fp_time_format(cr[c].start_ms + cr[c].duration_ms, b, sizeof b);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "kind", fp_gen_kind_name(cr[c].kind), "brand", fp_gen_brand(g, cr[c].brand),
                          "start", a, "end", b);
    if (cr[c].kind == FP_CRISIS_FLASH_VIRAL) {
      fp_gen_root_id(g, (int)c, root, sizeof root);
      json_object_set_new(o, "root", json_string(root));
    }
    json_array_append_new(arr, o);
  }
  snprintf(tpath, sizeof tpath, "%s.truth.json", path);
  json_dump_file(t, tpath, JSON_INDENT(2));
  json_decref(t);
  fp_buf_free(&line);
  fp_gen_destroy(g);
  return 0;
}

static json_t *replay(const char *path, const char *out_path, double *rate) {
  fp_replay_opts_t o;
  const char *files[1] = {path};
  char err[1024];
  json_t *s = NULL;
  FILE *out = out_path ? fopen(out_path, "w") : NULL;
  memset(&o, 0, sizeof o);
  o.rules_dir = RULES;
  o.files = files;
  o.nfiles = 1;
  o.incidents = out;
  o.log = stderr;
  o.progress = 0;
  fp_err_t e = fp_replay_run(&o, &s, rate, err, sizeof err);
  FPT_CHECK(e == FP_OK, "replay %s: %s", path, e == FP_OK ? "" : err);
  if (out) fclose(out);
  return s;
}

static void t_acceptance(void) {
  char path[512];
  double rate = 0;
  /* 10 brands, 5 hours; crises start after 2.5 h of background */
  fp_gen_crisis_t cr[3] = {
      {FP_CRISIS_SLOW_BURN, 1, START_MS + 150 * 60000LL, 60 * 60000LL, 30},
      {FP_CRISIS_FLASH_VIRAL, 4, START_MS + 200 * 60000LL, 30 * 60000LL, 40},
      {FP_CRISIS_BOT_BURST, 7, START_MS + 250 * 60000LL, 20 * 60000LL, 40},
  };
  snprintf(path, sizeof path, "%s/accept.jsonl.gz", dir);
  if (write_stream(path, 1, 10, 5, cr, 3)) return;
  json_t *s = replay(path, NULL, &rate);
  if (!s) return;
  json_t *crises = json_object_get(s, "crises"), *c;
  size_t i;
  FPT_CHECK_EQ_INT(json_array_size(crises), 3);
  json_array_foreach(crises, i, c) {
    const char *kind = json_string_value(json_object_get(c, "kind"));
    const char *peak = json_string_value(json_object_get(c, "peak_severity"));
    if (strcmp(kind, "bot_burst")) {
      int64_t t = json_integer_value(json_object_get(c, "time_from_start_ms"));
      FPT_CHECK(json_is_true(json_object_get(c, "detected")), "%s crisis detected", kind);
      FPT_CHECK(t >= 0 && t <= json_integer_value(json_object_get(c, "time_from_start_ms")) &&
                    t < (!strcmp(kind, "slow_burn") ? 60 : 30) * 60000LL,
                "%s detected within its duration (%lld ms after the start)", kind, (long long)t);
      fpt_note("%s on %s: detected %.1f min after the start by %s (%s), peak %s", kind,
               json_string_value(json_object_get(c, "brand")), (double)t / 60000.0,
               json_string_value(json_object_get(c, "rule")), json_string_value(json_object_get(c, "severity_at_detection")),
               peak);
    } else {
      FPT_CHECK(fp_replay_sev_rank(peak) < fp_replay_sev_rank("sev2"), "bot burst stays below sev2 (peak %s)", peak);
      fpt_note("bot_burst on %s: peak %s", json_string_value(json_object_get(c, "brand")), peak);
    }
  }
  const char *bg = json_string_value(json_object_get(json_object_get(s, "background"), "max_severity"));
  FPT_CHECK(fp_replay_sev_rank(bg) <= 1, "background raises nothing above sev4 (max %s)", bg);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(s, "dead_letters"), "total")), 0);
  FPT_CHECK(rate > 0, "throughput reported");
  fpt_note("replay throughput: %.0f mentions/s (%lld mentions)", rate,
           (long long)json_integer_value(json_object_get(s, "records")));
  json_decref(s);
}

static void t_deterministic(void) {
  char plain[512], gz[512], o1[512], o2[512], o3[512];
  fp_gen_crisis_t cr[1] = {{FP_CRISIS_FLASH_VIRAL, 0, START_MS + 20 * 60000LL, 15 * 60000LL, 40}};
  snprintf(plain, sizeof plain, "%s/det.jsonl", dir);
  snprintf(gz, sizeof gz, "%s/det.jsonl.gz", dir);
  snprintf(o1, sizeof o1, "%s/det.1", dir);
  snprintf(o2, sizeof o2, "%s/det.2", dir);
  snprintf(o3, sizeof o3, "%s/det.3", dir);
  if (write_stream(plain, 0, 3, 1, cr, 1) || write_stream(gz, 1, 3, 1, cr, 1)) return;
  json_t *a = replay(plain, o1, NULL), *b = replay(plain, o2, NULL), *c = replay(gz, o3, NULL);
  size_t l1, l2, l3;
  char *x = fpt_read_file(o1, &l1), *y = fpt_read_file(o2, &l2), *z = fpt_read_file(o3, &l3);
  char *sa = json_dumps(a, JSON_SORT_KEYS), *sb = json_dumps(b, JSON_SORT_KEYS);
  FPT_CHECK(x && y && l1 > 0 && l1 == l2 && !memcmp(x, y, l1), "incidents byte-identical across runs (%zu bytes)", l1);
  FPT_CHECK(z && l3 == l1 && !memcmp(x, z, l1), "gzip input gives the same incidents");
  FPT_CHECK(sa && sb && !strcmp(sa, sb), "summary identical across runs");
  FPT_CHECK(!strstr(x ? x : "", "\"detected_at\":null"), "events carry detection times");
  free(x), free(y), free(z), free(sa), free(sb);
  json_decref(a), json_decref(b), json_decref(c);
}

static void t_dead_letters_and_csv(void) {
  char path[512], mpath[512];
  snprintf(path, sizeof path, "%s/feed.csv", dir);
  snprintf(mpath, sizeof mpath, "%s/map.json", dir);
  FILE *f = fopen(path, "w");
  fputs("tweet_id,body,user,fans,ts,company\n"
        "1,acme is great,u1,10,1767571200,acme\n"
        "2,acme again,u2,12,1767571260,acme\n"
        "3,no user,,5,1767571270,acme\n"
        "4,late one,u4,5,1767560000,acme\n"
        "5,bad fans,u5,many,1767571280,acme\n", f);
  fclose(f);
  f = fopen(mpath, "w");
  fputs("{\"files\": {\"feed\": {\"id\": \"tweet_id\", \"text\": \"body\", \"author.id\": \"user\","
        " \"author.followers\": \"fans\", \"created_at\": {\"from\": \"ts\", \"format\": \"epoch_s\"},"
        " \"brand\": \"company\"}}}", f);
  fclose(f);
  fp_replay_opts_t o;
  const char *files[1] = {path};
  char err[1024];
  json_t *s = NULL;
  memset(&o, 0, sizeof o);
  o.rules_dir = RULES;
  o.files = files;
  o.nfiles = 1;
  o.mapping = mpath;
  fp_err_t e = fp_replay_run(&o, &s, NULL, err, sizeof err);
  if (!FPT_CHECK(e == FP_OK, "replay: %s", err)) return;
  json_t *dl = json_object_get(s, "dead_letters");
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(s, "records")), 5);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(s, "mentions")), 2);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(dl, "by_code"), "schema")), 2);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(dl, "by_code"), "late")), 1);
  json_t *ex = json_array_get(json_object_get(dl, "examples"), 0);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(ex, "line")), 4);
  FPT_CHECK(strstr(json_string_value(json_object_get(ex, "reason")), "author.id") != NULL, "reason names the field: %s",
            json_string_value(json_object_get(ex, "reason")));
  json_decref(s);
}

int main(void) {
  if (!(dir = fpt_tmpdir("replay"))) return 1;
  fpt_run("acceptance: crises detected, bots and background stay low", t_acceptance);
  fpt_run("deterministic output, gzip equals plain", t_deterministic);
  fpt_run("csv with a mapping, dead letters counted", t_dead_letters_and_csv);
  free(dir);
  return fpt_done();
}
