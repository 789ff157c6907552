/*
 * test_ruletest.c - `flashpoint test` (engine/ruletest.c): the example pack's own tests
 * (rules/tests/NAME.json) pass, every rule file has a test file, a deliberately broken
 * expectation fails with a readable diff and a non-zero exit, and the series grammar parses.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ruletest.h"
#include "testlib.h"

#define RULES FP_SOURCE_DIR "/rules"
#define BIN FP_BINARY_DIR "/flashpoint"

static void t_pack_passes(void) {
  char err[1024];
  int passed = 0, failed = 0;
  fp_ruletest_opts_t o;
  memset(&o, 0, sizeof o);
  o.rules_dir = RULES;
  o.out = stdout;
  FPT_CHECK_EQ_INT(fp_ruletest_run(&o, &passed, &failed, err, sizeof err), FP_OK);
  FPT_CHECK_EQ_INT(failed, 0);
  FPT_CHECK(passed >= 10, "%d tests passed", passed);
}

static void t_every_rule_has_tests(void) {
  DIR *d = opendir(RULES);
  struct dirent *de;
  int n = 0;
  if (!FPT_CHECK(d != NULL, "rules dir")) return;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    char path[1024];
    if (l < 5 || strcmp(de->d_name + l - 4, ".lua")) continue;
    snprintf(path, sizeof path, "%s/tests/%.*s.json", RULES, (int)(l - 4), de->d_name);
    char *s = fpt_read_file(path, NULL);
    FPT_CHECK(s != NULL, "%s has a test file %s", de->d_name, path);
    free(s);
    n++;
  }
  closedir(d);
  FPT_CHECK(n >= 5, "%d rule files", n);
}

static const char *BROKEN =
    "{\"tests\": [{\"name\": \"volume spike pages (it must not)\","
    " \"input\": [{\"series\": \"10 positive mentions per minute for 4 hours\", \"brand\": \"acme\"},"
    "            {\"series\": \"100 positive mentions per minute for 10 minutes\", \"brand\": \"acme\", \"at\": \"+3h\"}],"
    " \"expect\": [{\"rule\": \"brand.volume-spike\", \"entity\": \"acme\", \"status\": \"escalated\", \"severity\": \"sev1\","
    "             \"at\": \"+3h05m\", \"within\": \"2m\"}],"
    " \"no_incident_above\": \"sev3\"}]}";

static void t_broken_fails_with_diff(void) {
  char *dir = fpt_tmpdir("ruletest"), path[512], err[1024];
  const char *files[1] = {path};
  int passed = 0, failed = 0;
  char *buf = NULL;
  size_t len = 0;
  if (!dir) return;
  snprintf(path, sizeof path, "%s/broken.json", dir);
  FILE *f = fopen(path, "w");
  fputs(BROKEN, f);
  fclose(f);
  FILE *mem = open_memstream(&buf, &len);
  fp_ruletest_opts_t o;
  memset(&o, 0, sizeof o);
  o.rules_dir = RULES;
  o.files = files;
  o.nfiles = 1;
  o.out = mem;
  FPT_CHECK_EQ_INT(fp_ruletest_run(&o, &passed, &failed, err, sizeof err), FP_OK);
  fclose(mem);
  FPT_CHECK_EQ_INT(failed, 1);
  FPT_CHECK_EQ_INT(passed, 0);
  fputs(buf, stderr);
  FPT_CHECK(strstr(buf, "FAIL ") != NULL, "FAIL line");
  FPT_CHECK(strstr(buf, "- expected: escalated") && strstr(buf, "sev1  at +3h05m00s ±2m00s"), "the missing expectation");
  FPT_CHECK(strstr(buf, "+ nearest:  escalated   brand.volume-spike") != NULL, "the nearest event");
  FPT_CHECK(strstr(buf, "- forbidden: any incident above sev3") != NULL, "the forbidden escalation");
  FPT_CHECK(strstr(buf, "events (") != NULL, "the events of the test");
  free(buf);

  /* the binary: exit 0 on the pack, 1 on the broken file, 2 without rules */
  const char *ok_argv[] = {BIN, "test", RULES, NULL};
  fpt_proc_t *p = fpt_proc_spawn(ok_argv, NULL, NULL);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 300000), 0);
  fpt_proc_free(p);
  const char *bad_argv[] = {BIN, "test", RULES, path, NULL};
  p = fpt_proc_spawn(bad_argv, NULL, NULL);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 300000), 1);
  char *outp = fpt_proc_output(p, NULL);
  FPT_CHECK(outp && strstr(outp, "0 passed, 1 failed"), "binary prints the counts");
  free(outp);
  fpt_proc_free(p);
  const char *none_argv[] = {BIN, "test", "/nonexistent-rules", NULL};
  p = fpt_proc_spawn(none_argv, NULL, NULL);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 60000), 2);
  fpt_proc_free(p);
  free(dir);
}

static void t_grammar(void) {
  double per;
  char kind[16];
  int64_t period, dur, ms;
  FPT_CHECK_EQ_INT(fp_ruletest_parse_series("20 negative mentions per minute for 15 minutes", &per, kind, sizeof kind,
                                            &period, &dur), FP_OK);
  FPT_CHECK(per == 20 && !strcmp(kind, "negative") && period == 60000 && dur == 900000, "parsed");
  FPT_CHECK_EQ_INT(fp_ruletest_parse_series("a mention per hour for 2 hours", &per, kind, sizeof kind, &period, &dur), FP_OK);
  FPT_CHECK(per == 1 && !strcmp(kind, "neutral") && period == 3600000 && dur == 7200000, "parsed");
  FPT_CHECK_EQ_INT(fp_ruletest_parse_series("20 angry mentions per minute for 15 minutes", &per, kind, sizeof kind, &period,
                                            &dur), FP_ERR_CONFIG);
  FPT_CHECK_EQ_INT(fp_ruletest_parse_series("20 mentions per fortnight for 1 hour", &per, kind, sizeof kind, &period, &dur),
                   FP_ERR_CONFIG);
  FPT_CHECK_EQ_INT(fp_ruletest_parse_offset("+1h30m", &ms), FP_OK);
  FPT_CHECK_EQ_INT(ms, 5400000);
  FPT_CHECK_EQ_INT(fp_ruletest_parse_offset("90s", &ms), FP_OK);
  FPT_CHECK_EQ_INT(ms, 90000);
  FPT_CHECK_EQ_INT(fp_ruletest_parse_offset("+5x", &ms), FP_ERR_CONFIG);
}

int main(void) {
  fpt_run("series grammar", t_grammar);
  fpt_run("example pack tests pass", t_pack_passes);
  fpt_run("every rule has a test file", t_every_rule_has_tests);
  fpt_run("broken expectation fails with a diff", t_broken_fails_with_diff);
  return fpt_done();
}
