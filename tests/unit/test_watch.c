/*
 * test_watch.c - the rules-directory watcher (engine/watch.c): a change calls back once after
 * the debounce, a burst of quick changes calls back once, irrelevant files do not count, and
 * lib/ (also when created later) is watched. Waits are on conditions with deadlines; the
 * only fixed waits check that nothing more happens (a quiet period of several debounces).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"
#include "watch.h"

static atomic_int calls;
static _Atomic int64_t last_call_ms;

static void on_change(void *arg) {
  (void)arg;
  atomic_store(&last_call_ms, fpt_now_ms());
  atomic_fetch_add(&calls, 1);
}

static int calls_at_least(void *arg) { return atomic_load(&calls) >= *(int *)arg; }

static void write_file(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!FPT_CHECK(f != NULL, "open %s", path)) return;
  fputs(text, f);
  fclose(f);
}

/* Lets several debounce periods pass, to see that no further callback comes. */
static void quiet(void) {
  struct timespec ts = {0, 4L * FP_WATCH_DEBOUNCE_MS * 1000000L};
  nanosleep(&ts, NULL);
}

static void t_one_change(void) {
  char *dir = fpt_tmpdir("watch");
  char err[256];
  if (!dir) return;
  atomic_store(&calls, 0);
  fp_watch_t *w = fp_watch_new(dir, on_change, NULL, err, sizeof err);
  if (!FPT_CHECK(w != NULL, "watch: %s", err)) return;
  int64_t t0 = fpt_now_ms();
  write_file(dir, "a.lua", "return 1\n");
  int one = 1;
  FPT_CHECK(fpt_wait_until(calls_at_least, &one, 5000), "a change calls back");
  FPT_CHECK(atomic_load(&last_call_ms) - t0 >= FP_WATCH_DEBOUNCE_MS - 5,
            "called after the debounce (%lld ms)", (long long)(atomic_load(&last_call_ms) - t0));
  quiet();
  FPT_CHECK_EQ_INT(atomic_load(&calls), 1);

  /* an editor's scratch files and other names do not count */
  write_file(dir, ".a.lua.swp", "x");
  write_file(dir, "a.lua~", "x");
  write_file(dir, "notes.txt", "x");
  quiet();
  FPT_CHECK_EQ_INT(atomic_load(&calls), 1);

  /* an atomic deploy: write aside, rename over */
  write_file(dir, ".a.lua.new", "return 2\n");
  char from[512], to[512];
  snprintf(from, sizeof from, "%s/.a.lua.new", dir);
  snprintf(to, sizeof to, "%s/a.lua", dir);
  FPT_CHECK_EQ_INT(rename(from, to), 0);
  int two = 2;
  FPT_CHECK(fpt_wait_until(calls_at_least, &two, 5000), "a rename calls back");
  quiet();
  FPT_CHECK_EQ_INT(atomic_load(&calls), 2);
  fp_watch_destroy(w);
  free(dir);
}

static void t_burst(void) {
  char *dir = fpt_tmpdir("watch");
  char err[256], name[32];
  if (!dir) return;
  atomic_store(&calls, 0);
  fp_watch_t *w = fp_watch_new(dir, on_change, NULL, err, sizeof err);
  if (!FPT_CHECK(w != NULL, "watch: %s", err)) return;
  for (int i = 0; i < 20; i++) { /* 20 files written back to back: one reload */
    snprintf(name, sizeof name, "r%d.lua", i);
    write_file(dir, name, "return 1\n");
  }
  int one = 1;
  FPT_CHECK(fpt_wait_until(calls_at_least, &one, 5000), "the burst calls back");
  quiet();
  FPT_CHECK_EQ_INT(atomic_load(&calls), 1);
  fp_watch_destroy(w);
  free(dir);
}

static void t_lib(void) {
  char *dir = fpt_tmpdir("watch");
  char err[256], lib[512];
  if (!dir) return;
  atomic_store(&calls, 0);
  fp_watch_t *w = fp_watch_new(dir, on_change, NULL, err, sizeof err);
  if (!FPT_CHECK(w != NULL, "watch: %s", err)) return;
  snprintf(lib, sizeof lib, "%s/lib", dir);
  FPT_CHECK_EQ_INT(mkdir(lib, 0755), 0); /* lib/ appears after the start: watched from then */
  int one = 1, two = 2;
  FPT_CHECK(fpt_wait_until(calls_at_least, &one, 5000), "lib/ created");
  quiet();
  write_file(lib, "helpers.lua", "return {}\n");
  FPT_CHECK(fpt_wait_until(calls_at_least, &two, 5000), "a change in lib/ calls back");
  quiet();
  FPT_CHECK_EQ_INT(atomic_load(&calls), 2);
  fp_watch_destroy(w);
  /* destroyed: changes call nothing */
  write_file(lib, "helpers.lua", "return {1}\n");
  quiet();
  FPT_CHECK_EQ_INT(atomic_load(&calls), 2);
  free(dir);
}

static void t_errors(void) {
  char err[256] = "";
  FPT_CHECK(fp_watch_new("/nonexistent/rules", on_change, NULL, err, sizeof err) == NULL, "missing dir");
  FPT_CHECK(strstr(err, "/nonexistent/rules") != NULL, "reason names the dir: %s", err);
  fp_watch_destroy(NULL);
}

int main(void) {
  fpt_run("one_change_one_callback", t_one_change);
  fpt_run("burst_one_callback", t_burst);
  fpt_run("lib_folder", t_lib);
  fpt_run("errors", t_errors);
  return fpt_done();
}
