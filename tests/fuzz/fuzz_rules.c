/*
 * fuzz_rules.c - libFuzzer target for the rule loader under the Lua sandbox (engine/rules.c,
 * engine/sandbox.c).
 *
 * The input is written as the only rule file, fuzz.lua, of a private temporary directory made
 * once per process (lib/ beside it holds a copy of rules/lib/virality.lua, so `require`
 * resolves). fp_rules_new loads it under small limits; when it loads, one fp_rules_select on a
 * fixed mention and one fp_rules_severity per hit run it. Whatever the rule does, the engine
 * must not crash, leak, trip a sanitizer or run past the budget (libFuzzer's -timeout catches
 * a hang: the pattern guard and the sticky hook must hold).
 * Oracle: codes are the documented ones, a failed load names fuzz.lua and a line, every hit's
 * ops are within the op vector and carry the hit's window specs.
 */
#include <ftw.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "log.h"
#include "mention.h"
#include "rules.h"

static char g_dir[256], g_file[300];
static fp_mention_t g_mention;

static const char k_mention[] =
    "{\"id\":\"1865230\",\"platform\":\"x\",\"brand\":\"acme\",\"entities\":[\"acme\",\"acme-phone\"],"
    "\"author\":{\"id\":\"u42\",\"followers\":12800,\"verified\":false},"
    "\"text\":\"my acme phone caught fire, this is dangerous #recall \xc3\xa9t\xc3\xa9 terrible\","
    "\"lang\":\"en\",\"created_at\":\"2024-11-25T10:02:13Z\",\"reshare_of\":\"1865001\","
    "\"engagement\":{\"likes\":31,\"reshares\":12,\"replies\":4},\"sentiment\":-0.8,"
    "\"url\":\"https://x.example/u42/1865230\",\"hashtags\":[\"recall\",\"fire\"],"
    "\"extra\":{\"nested\":[1,2.5,\"three\",true,null,{\"deep\":{\"er\":[[[]]]}}]}}";

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static void cleanup(void) {
  if (g_dir[0]) nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out;
  char buf[8192];
  size_t n;
  if (!in) return; /* no library: require fails cleanly, still worth fuzzing */
  out = fopen(to, "wb");
  FZ_CHECK(out != NULL, "cannot create %s", to);
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
  fclose(in);
  fclose(out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char err[256], lib[300];
  const char *tmp = getenv("TMPDIR");
  fp_log_setup(FP_LOG_OFF, 0); /* rule failures log a warning once per rule set */
  snprintf(g_dir, sizeof g_dir, "%s/fp-fuzz-rules.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  FZ_CHECK(mkdtemp(g_dir) != NULL, "mkdtemp %s", g_dir);
  atexit(cleanup);
  snprintf(lib, sizeof lib, "%s/lib", g_dir);
  FZ_CHECK(mkdir(lib, 0700) == 0, "mkdir %s", lib);
  snprintf(lib, sizeof lib, "%s/lib/virality.lua", g_dir);
  copy_file(FP_SOURCE_DIR "/rules/lib/virality.lua", lib);
  snprintf(g_file, sizeof g_file, "%s/fuzz.lua", g_dir);
  FZ_CHECK(fp_mention_decode(k_mention, sizeof k_mention - 1, 1 << 20, &g_mention, err,
                             sizeof err) == FP_OK,
           "fixed mention: %s", err);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  FILE *f = fopen(g_file, "wb");
  FZ_CHECK(f != NULL, "cannot write %s", g_file);
  if (size) FZ_CHECK(fwrite(data, 1, size, f) == size, "short write");
  fclose(f);

  fp_rules_limits_t lim = {.mem_bytes = 8u << 20, .instructions = 100000, .deadline_ms = 100,
                           .quarantine_after = 2};
  err[0] = '\0';
  fp_rules_t *rs = fp_rules_new(g_dir, &lim, err, sizeof err);
  if (!rs) {
    FZ_CHECK(err[0] != '\0', "load failed without a reason");
    return 0;
  }
  FZ_CHECK(fp_rules_count(rs) == 1, "%zu rules from one file", fp_rules_count(rs));
  const fp_rule_info_t *info = fp_rules_info(rs, 0);
  FZ_CHECK(info && info->id && *info->id && info->nwindows <= FP_RULE_MAX_WINDOWS &&
               info->resolve_after_ms > 0,
           "rule info");

  for (int round = 0; round < 2; round++) { /* twice: state left by one call must not leak */
    fp_rule_hit_t hits[4];
    size_t nhits = 0;
    fp_opvec_t ops = {0};
    int mref = -1;
    unsigned nerr = 0;
    fp_err_t rc = fp_rules_select(rs, &g_mention, 42 + round, hits, 4, &nhits, &ops, &mref, &nerr);
    FZ_CHECK(rc == FP_OK || rc == FP_ERR_RULE_MEMORY || rc == FP_ERR_NOMEM, "select %d", (int)rc);
    FZ_CHECK(nhits <= 1, "%zu hits for one rule", nhits);
    for (size_t h = 0; h < nhits; h++) {
      FZ_CHECK(hits[h].rule == 0 && hits[h].op_first + hits[h].op_count <= ops.n, "hit range");
      for (size_t o = hits[h].op_first; o < hits[h].op_first + hits[h].op_count; o++) {
        fp_win_op_t *op = &ops.ops[o];
        int ok = 0;
        for (size_t w = 0; w < info->nwindows; w++) ok |= op->spec == &info->windows[w].spec;
        FZ_CHECK(ok && op->key && op->offset == 42 + round, "op %zu", o);
        op->out.value = (double)(o + 1) * 7;
        op->out.mean = 2;
        op->out.stddev = 1.5;
      }
      fp_sev_t sev;
      rc = fp_rules_severity(rs, mref, &hits[h], ops.ops, &sev, err, sizeof err);
      FZ_CHECK(rc == FP_OK || rc == FP_ERR_RULE_RUNTIME || rc == FP_ERR_RULE_BUDGET ||
                   rc == FP_ERR_RULE_MEMORY,
               "severity %d", (int)rc);
      FZ_CHECK(rc != FP_OK || (sev >= FP_SEV_NONE && sev <= FP_SEV1), "severity value");
    }
    fp_rules_release(rs, mref);
    fp_opvec_free(&ops);
  }
  fp_rules_destroy(rs);
  return 0;
}
