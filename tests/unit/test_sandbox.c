/*
 * test_sandbox.c - one case per escape of /work/shared/notes/lua-sandbox.md §3.3: each must
 * end with the right error code inside its budget, and must not change what other rules see.
 * The error code is the check (budget, deadline, memory); elapsed time is only noted, never
 * asserted: speed belongs in bench/, and this machine is shared and noisy.
 */
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rules.h"
#include "sandbox.h"
#include "testlib.h"
#include "util.h"

static fp_sandbox_limits_t lim = {.mem_bytes = 32u * 1024 * 1024, .instructions = 1000000, .deadline_ms = 1000};
static char msg[512];
static double elapsed_s;

/* Runs @p src as a chunk in a fresh env of @p sb; leaves nothing on the stack. */
static fp_err_t run_in(fp_sandbox_t *sb, const char *src, int *ret_true) {
  lua_State *L = fp_sandbox_lua(sb);
  int top = lua_gettop(L);
  msg[0] = '\0';
  fp_sandbox_push_env(sb);
  fp_err_t e = fp_sandbox_load(sb, src, strlen(src), "=test", msg, sizeof msg);
  if (e) return e;
  int64_t t0 = fp_mono_ns();
  e = fp_sandbox_pcall(sb, 0, 1, msg, sizeof msg);
  elapsed_s = (double)(fp_mono_ns() - t0) / 1e9;
  if (!e) {
    if (ret_true) *ret_true = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  FPT_CHECK_EQ_INT(lua_gettop(L), top);
  return e;
}

static fp_err_t run(const char *src) {
  fp_sandbox_t *sb = fp_sandbox_new(&lim, FP_SOURCE_DIR "/tests/rules/fixtures/lib", NULL, 0);
  fp_err_t e = run_in(sb, src, NULL);
  char saved[sizeof msg];
  memcpy(saved, msg, sizeof msg);
  /* the state stays usable after any failure */
  int ok = 0;
  FPT_CHECK_EQ_INT(run_in(sb, "return ('abc'):upper() == 'ABC'", &ok), FP_OK);
  FPT_CHECK(ok, "state unusable after: %s", src);
  fp_sandbox_destroy(sb);
  memcpy(msg, saved, sizeof msg);
  return e;
}

static int truthy(const char *src) {
  fp_sandbox_t *sb = fp_sandbox_new(&lim, FP_SOURCE_DIR "/tests/rules/fixtures/lib", NULL, 0);
  int ok = 0;
  fp_err_t e = run_in(sb, src, &ok);
  FPT_CHECK(e == FP_OK, "%s failed: %s", src, msg);
  fp_sandbox_destroy(sb);
  return ok;
}

#define EXPECT(src, code)                                                                     \
  do {                                                                                       \
    fp_err_t e_ = run(src);                                                                  \
    FPT_CHECK(e_ == (code), "%s: got %s (%s)", src, fp_err_name(e_), msg);                   \
  } while (0)

static void t_infinite_loop(void) {
  EXPECT("while true do end", FP_ERR_RULE_BUDGET);
  FPT_CHECK(strstr(msg, "instruction budget") != NULL, "message: %s", msg);
}

static void t_pcall_loop(void) {
  EXPECT("while true do pcall(function() while true do end end) end", FP_ERR_RULE_BUDGET);
  EXPECT("local ok = pcall(function() while true do end end) return 1", FP_ERR_RULE_BUDGET);
  EXPECT("for i = 1, 1e9 do xpcall(function() while true do end end, function() return 1 end) end",
         FP_ERR_RULE_BUDGET);
}

static void t_coroutine(void) {
  /* the coroutine library is not opened at all; a loop through it is impossible */
  FPT_CHECK(truthy("return coroutine == nil"), "coroutine is reachable");
  EXPECT("local co = coroutine.wrap(function() while true do end end) co()", FP_ERR_RULE_RUNTIME);
}

static void t_deadline(void) {
  fp_sandbox_limits_t l = {.mem_bytes = 32u * 1024 * 1024, .instructions = (uint64_t)1 << 60, .deadline_ms = 100};
  fp_sandbox_t *sb = fp_sandbox_new(&l, NULL, NULL, 0);
  FPT_CHECK_EQ_INT(run_in(sb, "while true do end", NULL), FP_ERR_RULE_BUDGET);
  FPT_CHECK(strstr(msg, "deadline") != NULL, "message: %s", msg);
  fpt_note("deadline of 100 ms stopped the loop after %.2f s", elapsed_s);
  fp_sandbox_destroy(sb);
}

static void t_memory(void) {
  lim.instructions = 200000000; /* so that memory, not the budget, stops the growth loops */
  EXPECT("return string.rep('x', 1 << 30)", FP_ERR_RULE_MEMORY);
  EXPECT("return ('x'):rep(1 << 30)", FP_ERR_RULE_MEMORY);
  EXPECT("local t = {} for i = 1, 1e9 do t[i] = i end", FP_ERR_RULE_MEMORY);
  EXPECT("local s = 'x' for i = 1, 64 do s = s .. s end", FP_ERR_RULE_MEMORY);
  {
    fp_err_t e = run("local t = {} for i = 1, 1e8 do t[#t + 1] = ('y'):rep(100) .. i end");
    /* near the cap every allocation runs an emergency GC: the deadline may come first */
    FPT_CHECK(e == FP_ERR_RULE_MEMORY || e == FP_ERR_RULE_BUDGET, "string table: %s", fp_err_name(e));
  }
  EXPECT("local t = {} for i = 1, 24 do t[i] = ('z'):rep(1 << 20) end return table.concat(t):rep(4)",
         FP_ERR_RULE_MEMORY);
  /* swallowing the memory error does not help: the host flag is the truth */
  EXPECT("pcall(string.rep, 'x', 1 << 30) return 1", FP_ERR_RULE_MEMORY);
  lim.instructions = 1000000;
  /* with the normal budget, whichever limit comes first stops it */
  fp_err_t e = run("local t = {} for i = 1, 1e9 do t[i] = i end");
  FPT_CHECK(e == FP_ERR_RULE_MEMORY || e == FP_ERR_RULE_BUDGET, "table growth: %s", fp_err_name(e));
}

static void t_recursion(void) {
  fp_err_t e = run("local function f(n) return 1 + f(n + 1) end return f(1)");
  FPT_CHECK(e == FP_ERR_RULE_RUNTIME || e == FP_ERR_RULE_MEMORY || e == FP_ERR_RULE_BUDGET,
            "deep recursion: %s (%s)", fp_err_name(e), msg);
  e = run("local function f() return (string.gsub('a', 'a', f)) end return f()");
  FPT_CHECK(e != FP_OK, "C-stack recursion: %s", msg);
}

static void t_pattern_bombs(void) {
  EXPECT("return ('a'):rep(26):find(('a-'):rep(25) .. 'b')", FP_ERR_RULE_RUNTIME);
  FPT_CHECK(strstr(msg, "pattern too complex") != NULL, "message: %s", msg);
  EXPECT("return string.rep('x', 3000):find('.-.-.-y')", FP_ERR_RULE_RUNTIME);
  EXPECT("return string.rep('x', 3000):match('.-.-.-y')", FP_ERR_RULE_RUNTIME);
  EXPECT("for w in string.rep('x', 3000):gmatch('.-.-.-y') do end", FP_ERR_RULE_RUNTIME);
  EXPECT("return (string.rep('x', 3000):gsub('.-.-.-y', ''))", FP_ERR_RULE_RUNTIME);
  EXPECT("return ('x'):rep(70000):find('x+y')", FP_ERR_RULE_RUNTIME); /* subject > 64 KiB */
  /* plain finds and ordinary patterns still work */
  FPT_CHECK(truthy("return ('x'):rep(70000):find('.-.-.-y', 1, true) == nil"), "plain find");
  FPT_CHECK(truthy("return ('  hi there  '):match('^%s*(.-)%s*$') == 'hi there'"), "trim");
  FPT_CHECK(truthy("local n = 0 for w in ('a bb ccc'):gmatch('%a+') do n = n + 1 end return n == 3"),
            "gmatch words");
  FPT_CHECK(truthy("return (('a,b;c'):gsub('[,;]', ' ')) == 'a b c'"), "gsub set");
}

static void t_bytecode(void) {
  FPT_CHECK(truthy("return load == nil and loadstring == nil and string.dump == nil"),
            "load/string.dump reachable");
  EXPECT("return load('return 1')", FP_ERR_RULE_RUNTIME);
  EXPECT("return string.dump(function() end)", FP_ERR_RULE_RUNTIME);

}

static int writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  return fp_buf_append(ud, p, sz) == FP_OK ? 0 : 1;
}

static void t_binary_rule_file(void) {
  lua_State *P = luaL_newstate();
  fp_buf_t b = {0};
  luaL_loadstring(P, "return 1");
  lua_dump(P, writer, &b, 0);
  lua_close(P);
  fp_sandbox_t *sb = fp_sandbox_new(&lim, NULL, NULL, 0);
  lua_State *L = fp_sandbox_lua(sb);
  int top = lua_gettop(L);
  fp_sandbox_push_env(sb);
  fp_err_t e = fp_sandbox_load(sb, b.data, b.len, "@bin.lua", msg, sizeof msg);
  FPT_CHECK_EQ_INT(e, FP_ERR_RULE_LOAD);
  FPT_CHECK(strstr(msg, "binary") != NULL, "message: %s", msg);
  FPT_CHECK_EQ_INT(lua_gettop(L), top);
  fp_sandbox_destroy(sb);
  fp_buf_free(&b);

  /* and as a file in a rules directory */
  char *dir = fpt_tmpdir("binrule");
  char path[512];
  snprintf(path, sizeof path, "%s/a.lua", dir);
  P = luaL_newstate();
  fp_buf_t c = {0};
  luaL_loadstring(P, "return fp.rule{id='x', key='brand', severity=function() end}");
  lua_dump(P, writer, &c, 0);
  lua_close(P);
  FILE *f = fopen(path, "wb");
  fwrite(c.data, 1, c.len, f);
  fclose(f);
  fp_buf_free(&c);
  fp_rules_t *rs = fp_rules_new(dir, NULL, msg, sizeof msg);
  FPT_CHECK(rs == NULL, "binary rule file loaded");
  FPT_CHECK(strstr(msg, "a.lua") && strstr(msg, "binary"), "message: %s", msg);
  fp_rules_destroy(rs);
  remove(path);
  remove(dir);
  free(dir);
}

static void t_host_escapes(void) {
  FPT_CHECK(truthy("return os == nil and io == nil and package == nil and dofile == nil and "
                   "loadfile == nil and debug == nil and collectgarbage == nil and print == nil "
                   "and _G == nil"),
            "a host library is reachable");
  EXPECT("return require 'os'", FP_ERR_RULE_RUNTIME);
  EXPECT("return require 'io'", FP_ERR_RULE_RUNTIME);
  EXPECT("return require '../../etc/passwd'", FP_ERR_RULE_RUNTIME);
  EXPECT("return require 'lib.evil'", FP_ERR_RULE_RUNTIME);
  EXPECT("return package.loadlib('libc.so.6', 'system')", FP_ERR_RULE_RUNTIME);
  EXPECT("return dofile('/etc/passwd')", FP_ERR_RULE_RUNTIME);
  EXPECT("return debug.getregistry()", FP_ERR_RULE_RUNTIME);
  EXPECT("debug.sethook() while true do end", FP_ERR_RULE_RUNTIME);
  EXPECT("return os.execute('true')", FP_ERR_RULE_RUNTIME);
  /* require of our own library works, once, and its result is read-only */
  FPT_CHECK(truthy("local a = require 'tiny' local b = require 'tiny' return a == b and a.two() == 2"),
            "require tiny");
  EXPECT("local t = require 'tiny' t.two = nil", FP_ERR_RULE_RUNTIME);
}

static void t_tampering(void) {
  fp_sandbox_t *sb = fp_sandbox_new(&lim, FP_SOURCE_DIR "/tests/rules/fixtures/lib", NULL, 0);
  static const char *const attacks[] = {
      "string.upper = nil",
      "getmetatable('').__index.upper = nil",
      "getmetatable('').__index = {}",
      "rawset(string, 'upper', nil)",
      "setmetatable(string, {})",
      "math.floor = function() return 0 end",
      "table.insert = nil",
      "local t = require 'tiny' rawset(t, 'two', function() return 3 end)",
      "setmetatable({}, {__gc = function() while true do end end})",
  };
  int ok = 0;
  for (size_t i = 0; i < sizeof attacks / sizeof *attacks; i++) {
    fp_err_t e = run_in(sb, attacks[i], NULL);
    FPT_CHECK(e == FP_ERR_RULE_RUNTIME, "attack '%s' did not fail: %s", attacks[i],
              fp_err_name(e));
  }
  /* globals written by one rule stay in that rule's env */
  FPT_CHECK_EQ_INT(run_in(sb, "x = 42 tostring = nil return x == 42", &ok), FP_OK);
  FPT_CHECK(ok, "own global");
  FPT_CHECK_EQ_INT(run_in(sb, "return x == nil and tostring(1) == '1' and ('a'):upper() == 'A' "
                              "and string.upper('b') == 'B' and math.floor(1.5) == 1 and "
                              "table.insert ~= nil and require('tiny').two() == 2",
                          &ok),
                   FP_OK);
  FPT_CHECK(ok, "another rule saw the tampering: %s", msg);
  fp_sandbox_destroy(sb);
}

/* Cross-rule tampering and output flood through the rules API: tests/rules/fixtures/tamper
 * holds a.lua (attacks in every stage, floods) and b.lua (a plain rule). B's results must
 * match those of B loaded alone. */
static void mention(fp_mention_t *m, const char *json) {
  memset(m, 0, sizeof *m);
  m->doc = json_loads(json, 0, NULL);
  m->brand = json_string_value(json_object_get(m->doc, "brand"));
  m->text = json_string_value(json_object_get(m->doc, "text"));
  m->created_at_ms = 1000;
}

static void eval_b(const char *dir, char *entity, size_t *nops, fp_sev_t *sev, int *nerr) {
  fp_rules_t *rs = fp_rules_new(dir, NULL, msg, sizeof msg);
  FPT_CHECK(rs != NULL, "load %s: %s", dir, msg);
  if (!rs) return;
  fp_mention_t m;
  mention(&m, "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"hello\",\"author\":{\"id\":\"u1\"}}");
  fp_rule_hit_t hits[8];
  size_t nh = 0;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne = 0;
  *nerr = 0;
  for (int round = 0; round < 3; round++) { /* several rounds: attacks get every chance */
    fp_opvec_reset(&ops);
    FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 1, hits, 8, &nh, &ops, &mref, &ne), FP_OK);
    *nerr += (int)ne;
    for (size_t i = 0; i < nh; i++) {
      const fp_rule_info_t *in = fp_rules_info(rs, hits[i].rule);
      for (size_t j = 0; j < hits[i].op_count; j++) ops.ops[hits[i].op_first + j].out.value = 7;
      fp_sev_t s;
      fp_err_t e = fp_rules_severity(rs, mref, &hits[i], ops.ops, &s, msg, sizeof msg);
      if (strcmp(in->id, "b") == 0) {
        FPT_CHECK_EQ_INT(e, FP_OK);
        snprintf(entity, 128, "%s", hits[i].entity);
        *nops = hits[i].op_count;
        *sev = s;
      } else if (e) {
        (*nerr)++;
      }
    }
    fp_rules_release(rs, mref);
  }
  fp_opvec_free(&ops);
  json_decref(m.doc);
  fp_rules_destroy(rs);
}

static void t_cross_rule(void) {
  char e1[128] = "", e2[128] = "";
  size_t n1 = 0, n2 = 0;
  fp_sev_t s1 = FP_SEV_NONE, s2 = FP_SEV_NONE;
  int err1, err2;
  eval_b(FP_SOURCE_DIR "/tests/rules/fixtures/tamper_b_only", e1, &n1, &s1, &err1);
  eval_b(FP_SOURCE_DIR "/tests/rules/fixtures/tamper", e2, &n2, &s2, &err2);
  FPT_CHECK_EQ_STR(e1, "acme|ACME");
  FPT_CHECK_EQ_STR(e2, e1);
  FPT_CHECK_EQ_INT(n2, n1);
  FPT_CHECK_EQ_INT(s1, FP_SEV3);
  FPT_CHECK_EQ_INT(s2, s1);
  FPT_CHECK_EQ_INT(err1, 0);
  FPT_CHECK(err2 > 0, "the attacking rule never failed");
}

static void t_output_flood(void) {
  fp_rules_t *rs = fp_rules_new(FP_SOURCE_DIR "/tests/rules/fixtures/flood", NULL, msg, sizeof msg);
  FPT_CHECK(rs != NULL, "load flood: %s", msg);
  if (!rs) return;
  fp_mention_t m;
  mention(&m, "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"hello\"}");
  fp_rule_hit_t hits[8];
  size_t nh = 0;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne = 0;
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 1, hits, 8, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(nh, 1);
  FPT_CHECK_EQ_INT(strlen(hits[0].entity), 17); /* a 1 MiB entity is hashed: '#' + 16 hex */
  FPT_CHECK(hits[0].entity[0] == '#', "entity %s", hits[0].entity);
  fp_sev_t s;
  fp_err_t e = fp_rules_severity(rs, mref, &hits[0], ops.ops, &s, msg, sizeof msg);
  FPT_CHECK_EQ_INT(e, FP_ERR_RULE_RUNTIME);
  FPT_CHECK(strlen(msg) < 300, "error message not bounded: %zu", strlen(msg));
  fp_rules_release(rs, mref);
  fp_opvec_free(&ops);
  json_decref(m.doc);
  fp_rules_destroy(rs);
}

/*
 * The watchdog (sandbox.h): a C call the hook cannot stop (tests/rules/fixtures/stuck: a
 * pattern the guard lets through that runs ~20 s) must end the process with SIGABRT soon
 * after the hard limit, log the rule and file at ERROR and record a strike; after 3 strikes
 * the rule loads quarantined and the same mention passes. Each hang runs in a forked child.
 */
#define STUCK_DIR FP_SOURCE_DIR "/tests/rules/fixtures/stuck"

typedef struct {
  pid_t pid;
  int status, done;
} child_t;

static int child_exited(void *arg) {
  child_t *c = arg;
  if (!c->done && waitpid(c->pid, &c->status, WNOHANG) == c->pid) c->done = 1;
  return c->done;
}

static void stuck_child(const char *strikes, const char *log_path) {
  char err[512];
  int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) dup2(fd, 2);
  fp_watchdog_conf_t wc = {.hard_ms = 300, .strikes_dir = strikes};
  if (fp_sandbox_watchdog_start(&wc, err, sizeof err) != FP_OK) _exit(10);
  fp_rules_limits_t rl = {.strikes_dir = strikes, .strikes_quarantine = 3};
  fp_rules_t *rs = fp_rules_new(STUCK_DIR, &rl, err, sizeof err);
  if (!rs) _exit(11);
  fp_mention_t m;
  mention(&m, "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"x\"}");
  fp_rule_hit_t hits[2];
  size_t nh;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne;
  fp_rules_select(rs, &m, 1, hits, 2, &nh, &ops, &mref, &ne);
  _exit(0); /* the watchdog did not fire */
}

static void t_watchdog(void) {
  char *strikes = fpt_tmpdir("strikes");
  char log_path[600], err[512];
  if (!strikes) return;
  snprintf(log_path, sizeof log_path, "%s/child.log", strikes);
  for (unsigned round = 1; round <= 3; round++) {
    child_t c = {0, 0, 0};
    int64_t t0 = fpt_now_ms();
    fflush(NULL);
    c.pid = fork();
    if (c.pid == 0) stuck_child(strikes, log_path);
    if (!FPT_CHECK(c.pid > 0, "fork")) break;
    int ended = fpt_wait_until(child_exited, &c, 30000);
    FPT_CHECK(ended, "round %u: the child is still stuck after 30 s", round);
    if (!ended) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, &c.status, 0);
      break;
    }
    FPT_CHECK(WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGABRT,
              "round %u: child ended with status 0x%x, not SIGABRT", round, c.status);
    int64_t took = fpt_now_ms() - t0;
    FPT_CHECK(took < 10000, "round %u: abort after %lld ms (hard limit 300 ms)", round, (long long)took);
    char *out = fpt_read_file(log_path, NULL);
    FPT_CHECK(out && strstr(out, "ERROR") && strstr(out, "test.stuck") &&
                  strstr(out, "fixtures/stuck/stuck.lua") && strstr(out, "hard limit"),
              "round %u: the log names the rule and the file: %s", round, out ? out : "(none)");
    free(out);
    char hash[17] = "";
    fp_rules_t *probe = fp_rules_new(STUCK_DIR, NULL, err, sizeof err);
    if (FPT_CHECK(probe != NULL, "load: %s", err)) {
      snprintf(hash, sizeof hash, "%s", fp_rules_info(probe, 0)->hash);
      fp_rules_destroy(probe);
    }
    FPT_CHECK_EQ_INT(fp_sandbox_strikes(strikes, "test.stuck", hash), round);
  }
  /* three strikes: the rule loads quarantined and the mention passes at once */
  fp_rules_limits_t rl = {.strikes_dir = strikes, .strikes_quarantine = 3};
  fp_rules_t *rs = fp_rules_new(STUCK_DIR, &rl, err, sizeof err);
  if (FPT_CHECK(rs != NULL, "load: %s", err)) {
    FPT_CHECK_EQ_INT(fp_rules_info(rs, 0)->quarantined, 1);
    fp_mention_t m;
    mention(&m, "{\"id\":\"1\",\"brand\":\"acme\",\"text\":\"x\"}");
    fp_rule_hit_t hits[2];
    size_t nh = 9;
    fp_opvec_t ops = {0};
    int mref;
    unsigned ne;
    int64_t t0 = fpt_now_ms();
    FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 1, hits, 2, &nh, &ops, &mref, &ne), FP_OK);
    FPT_CHECK_EQ_INT(nh, 0);
    FPT_CHECK(fpt_now_ms() - t0 < 1000, "a quarantined rule is not run");
    fp_rules_release(rs, mref);
    fp_opvec_free(&ops);
    json_decref(m.doc);
    fp_rules_destroy(rs);
  }
  /* without a strikes directory nothing is consulted: the rule is live */
  rs = fp_rules_new(STUCK_DIR, NULL, err, sizeof err);
  if (FPT_CHECK(rs != NULL, "load: %s", err)) {
    FPT_CHECK_EQ_INT(fp_rules_info(rs, 0)->quarantined, 0);
    fp_rules_destroy(rs);
  }
  /* start/stop in-process is clean (no call runs past the limit) */
  fp_watchdog_conf_t wc = {.hard_ms = 300};
  FPT_CHECK_EQ_INT(fp_sandbox_watchdog_start(&wc, err, sizeof err), FP_OK);
  FPT_CHECK(truthy("local s = 0 for i = 1, 1000 do s = s + i end return s == 500500"), "runs under the watchdog");
  fp_sandbox_watchdog_stop();
  fp_sandbox_watchdog_stop(); /* idempotent */
  free(strikes);
}

/* The mention table is a lazy, read-only view: reads, nesting, #, ipairs, pairs, derived
 * fields; no writes; no use after the release. */
static void t_mention_view(void) {
  fp_sandbox_t *unused = NULL;
  (void)unused;
  fp_rules_t *rs = fp_rules_new(FP_SOURCE_DIR "/tests/rules/fixtures/view", NULL, msg, sizeof msg);
  if (!FPT_CHECK(rs != NULL, "load view: %s", msg)) return;
  fp_mention_t m;
  mention(&m, "{\"id\":\"7\",\"brand\":\"acme\",\"text\":\"hi\",\"n\":null,"
              "\"author\":{\"id\":\"u1\",\"followers\":12,\"verified\":true},"
              "\"hashtags\":[\"a\",\"b\",\"c\"],\"deep\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":1}}}}}}}}}");
  m.has_sentiment = 1;
  m.sentiment = -0.5;
  fp_rule_hit_t hits[2];
  size_t nh = 0;
  fp_opvec_t ops = {0};
  int mref;
  unsigned ne = 0;
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 77, hits, 2, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(ne, 0);
  FPT_CHECK_EQ_INT(nh, 1); /* `when` returns true only if every check in view.lua holds */
  fp_sev_t s = FP_SEV_NONE;
  if (nh) {
    FPT_CHECK_EQ_INT(fp_rules_severity(rs, mref, &hits[0], ops.ops, &s, msg, sizeof msg), FP_OK);
    FPT_CHECK_EQ_INT(s, FP_SEV4); /* severity(w, m) sees the same view */
  }
  fp_rules_release(rs, mref);
  /* after the release the rule's kept reference fails cleanly (the document is gone) */
  json_decref(m.doc);
  mention(&m, "{\"id\":\"8\",\"brand\":\"other\",\"text\":\"hi\"}");
  fp_opvec_reset(&ops);
  FPT_CHECK_EQ_INT(fp_rules_select(rs, &m, 78, hits, 2, &nh, &ops, &mref, &ne), FP_OK);
  FPT_CHECK_EQ_INT(nh, 0);
  FPT_CHECK_EQ_INT(ne, 1); /* view.lua reads the previous mention's unread field: an error */
  fp_rules_release(rs, mref);
  /* a stale handle from another rule set is ignored, not unref'd in this one */
  fp_rules_release(rs, 12345);
  fp_opvec_free(&ops);
  json_decref(m.doc);
  fp_rules_destroy(rs);
}

int main(void) {
  fpt_run("infinite_loop", t_infinite_loop);
  fpt_run("pcall_loop", t_pcall_loop);
  fpt_run("coroutine", t_coroutine);
  fpt_run("deadline", t_deadline);
  fpt_run("memory_bombs", t_memory);
  fpt_run("deep_recursion", t_recursion);
  fpt_run("pattern_bombs", t_pattern_bombs);
  fpt_run("bytecode", t_bytecode);
  fpt_run("binary_rule_file", t_binary_rule_file);
  fpt_run("host_escapes", t_host_escapes);
  fpt_run("tampering", t_tampering);
  fpt_run("cross_rule", t_cross_rule);
  fpt_run("output_flood", t_output_flood);
  fpt_run("mention_view", t_mention_view);
  fpt_run("watchdog", t_watchdog);
  return fpt_done();
}
