/*
 * unit tier: the container files in docker/ as far as they can be checked without a Docker
 * engine.
 *
 *   - docker/flashpoint.conf loads through the same parser as `flashpoint run -c`, sets the
 *     values the image and compose file rely on, and explains every key of the
 *     configuration table (`flashpoint --help-config`);
 *   - docker/check.sh (Dockerfile packages, build flags, runtime libraries of the real binary,
 *     non-root user, HEALTHCHECK, EXPOSE, ENTRYPOINT; compose structure and topic names) passes.
 *     Its compose validation by `docker compose config` is reported as a note when the compose
 *     plugin is missing: a skip, never counted as a pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flashpoint/flashpoint.h"
#include "testlib.h"

static void expect(const fp_conf_t *c, const char *key, const char *want) {
  char buf[256];
  if (FPT_CHECK(fp_conf_get(c, key, buf, sizeof(buf)) == FP_OK, "get %s", key))
    FPT_CHECK(!strcmp(buf, want), "%s = \"%s\", want \"%s\"", key, buf, want);
}

static void test_conf(void) {
  char path[512], errstr[1024], line[512];
  fp_conf_t *c = fp_conf_new();
  char *text;
  FILE *help;
  int keys = 0;

  snprintf(path, sizeof(path), "%s/docker/flashpoint.conf", FP_SOURCE_DIR);
  if (!FPT_CHECK(c != NULL, "conf")) return;
  FPT_CHECK(fp_conf_load_file(c, path, errstr, sizeof(errstr)) == FP_OK, "load %s: %s", path, errstr);
  expect(c, "input.topics", "mentions");
  expect(c, "output.topic", "incidents");
  expect(c, "dlq.topic", "mentions.dlq");
  expect(c, "http.port", "9464");
  expect(c, "http.addr", "0.0.0.0");
  expect(c, "redis.host", "redis");
  expect(c, "rules.dir", "/etc/flashpoint/rules");
  expect(c, "store.backend", "redis");
  fp_conf_destroy(c);

  /* every key of the table has a "key =" line in the annotated file */
  text = fpt_read_file(path, NULL);
  help = tmpfile();
  if (!FPT_CHECK(text && help, "read the file and the help")) goto out;
  fp_conf_print_help(help, 0);
  rewind(help);
  while (fgets(line, sizeof(line), help)) {
    char key[128], pat[160];
    if (line[0] == ' ' || line[0] == '\n' || sscanf(line, "%127s", key) != 1) continue;
    if (strchr(key, '*') || (!strchr(key, '.') && strcmp(key, "workers") != 0)) continue;
    keys++;
    snprintf(pat, sizeof(pat), "\n%s =", key);
    FPT_CHECK(strstr(text, pat) != NULL, "docker/flashpoint.conf explains %s", key);
  }
  FPT_CHECK(keys > 30, "the help lists the configuration table (%d keys)", keys);
out:
  if (help) fclose(help);
  free(text);
}

static void test_check_script(void) {
  char cmd[2048], line[1024];
  FILE *p;
  int rc, skips = 0, passes = 0;

  snprintf(cmd, sizeof(cmd), "bash '%s/docker/check.sh' '%s' '%s/flashpoint' 2>&1", FP_SOURCE_DIR,
           FP_SOURCE_DIR, FP_BINARY_DIR);
  p = popen(cmd, "r");
  if (!FPT_CHECK(p != NULL, "run docker/check.sh")) return;
  while (fgets(line, sizeof(line), p)) {
    fputs(line, stderr);
    if (!strncmp(line, "SKIP", 4)) {
      skips++;
      fpt_note("not verified here: %s", line + 5);
    }
    passes += !strncmp(line, "ok", 2);
  }
  rc = pclose(p);
  FPT_CHECK(rc == 0, "docker/check.sh passes (exit status %d)", rc);
  FPT_CHECK(passes > 40, "docker/check.sh ran its checks (%d passed, %d skipped)", passes, skips);
}

int main(void) {
  fpt_run("docker/flashpoint.conf loads and explains every key", test_conf);
  fpt_run("Dockerfile and compose.yaml (docker/check.sh)", test_check_script);
  return fpt_done();
}
