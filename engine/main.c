/*
 * main.c - the `flashpoint` command: argument parsing, signals, exit codes. Everything else
 * lives in the engine library.
 *
 * Exit codes: 0 clean stop; 1 runtime failure (fatal Kafka or Redis error); 2 usage or
 * configuration error (including rules that fail to load); 3 `check` found invalid rules.
 * The offline tools (generate, replay, test, report; docs/tools.md) live in their own files
 * (gen.c, replay.c, ruletest.c, report.c); here is only their argument parsing.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "demo.h"
#include "silence.h"
#include "flashpoint/flashpoint.h"
#include "gen.h"
#include "log.h"
#include "report.h"
#include "replay.h"
#include "ruletest.h"
#include "util.h"
#ifdef FP_HAVE_ZLIB
#include <zlib.h>
#endif

extern char **environ;

static fp_engine_t *volatile the_engine;
static volatile sig_atomic_t stop_signals;

static void on_stop(int sig) {
  (void)sig;
  if (++stop_signals > 1) _exit(130); /* a second signal: leave at once */
  if (the_engine) fp_engine_stop(the_engine);
}

static void on_hup(int sig) {
  (void)sig;
  if (the_engine) fp_engine_reload(the_engine);
}

static void usage(FILE *out) {
  fprintf(out,
          "Flashpoint %s - catches social-media crises while they are still small.\n"
          "\n"
          "Usage:\n"
          "  flashpoint [run] [-c FILE] [-r RULES_DIR] [-s key=value]...\n"
          "                               consume mentions from Kafka, emit incidents\n"
          "  flashpoint demo [--memory]   the whole engine on embedded defaults: an in-process\n"
          "                               Kafka mock cluster, a private redis-server, generated\n"
          "                               mentions with injected crises\n"
          "  flashpoint check RULES_DIR   validate every rule file (exit 3 if any is invalid)\n"
          "  flashpoint generate [--brands N] [--hours H] [--seed S] [--crisis K:B:START:DUR:PEAK]...\n"
          "                      [--truth FILE] [--out FILE]\n"
          "                               write a generated mention stream (JSON lines)\n"
          "  flashpoint replay [--rules DIR] [--redis HOST:PORT] [--mapping FILE] [--truth FILE]\n"
          "                    [--out FILE] [--summary FILE] FILE...\n"
          "                               run rules over files of mentions in event time, print the\n"
          "                               incidents (JSON lines) and a summary on stderr\n"
          "  flashpoint test [RULES_DIR] [FILE...]\n"
          "                               run the rule tests in RULES_DIR/tests (exit 1 on failure)\n"
          "  flashpoint report --out report.html [--rules DIR] [--mapping FILE] FILE...\n"
          "                               a self-contained HTML report of a replay\n"
          "  flashpoint silence RULE ENTITY DURATION\n"
          "                               mute paging for one (rule, entity); events are still\n"
          "                               recorded (0 lifts it)\n"
          "  flashpoint --help-config     list every configuration key\n"
          "  flashpoint --version\n"
          "\n"
          "Configuration: -c FILE (key = value lines), then FLASHPOINT_* environment variables,\n"
          "then -s key=value, each overriding the one before.\n"
          "Signals: SIGTERM/SIGINT stop gracefully (a second one exits at once); SIGHUP reloads\n"
          "the rules.\n"
          "Operations: -s http.port=N serves /metrics, /healthz and /readyz (docs/operations.md).\n"
          "Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error,\n"
          "3 invalid rules (check); `test` exits 1 when a rule test fails; 130 a second stop signal.\n",
          FP_VERSION_STR);
}

static int cmd_run(int argc, char **argv) {
  char errstr[1024];
  const char *file = NULL;
  fp_conf_t *conf = fp_conf_new();
  fp_engine_t *e;
  fp_err_t err;
  struct sigaction sa;

  if (!conf) return 1;
  for (int i = 0; i < argc; i++)
    if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) file = argv[i + 1];
  if (!file) file = getenv("FLASHPOINT_CONFIG_FILE");
  if (file && fp_conf_load_file(conf, file, errstr, sizeof(errstr)) != FP_OK) goto conf_err;
  if (fp_conf_load_env(conf, environ, errstr, sizeof(errstr)) != FP_OK) goto conf_err;
  for (int i = 0; i < argc; i++) {
    if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
      i++;
    } else if ((!strcmp(argv[i], "-r") || !strcmp(argv[i], "--rules")) && i + 1 < argc) {
      if (fp_conf_set(conf, "rules.dir", argv[++i], errstr, sizeof(errstr)) != FP_OK) goto conf_err;
    } else if ((!strcmp(argv[i], "-s") || !strcmp(argv[i], "--set")) && i + 1 < argc) {
      char *kv = argv[++i], *eq = strchr(kv, '=');
      if (!eq) {
        fprintf(stderr, "flashpoint: -s expects key=value, got \"%s\"\n", kv);
        fp_conf_destroy(conf);
        return 2;
      }
      *eq = '\0';
      err = fp_conf_set(conf, kv, eq + 1, errstr, sizeof(errstr));
      *eq = '=';
      if (err != FP_OK) goto conf_err;
    } else {
      fprintf(stderr, "flashpoint: unknown argument \"%s\" (see --help)\n", argv[i]);
      fp_conf_destroy(conf);
      return 2;
    }
  }

  /* Handlers first: a SIGTERM while the engine starts (rules, Redis, Kafka clients) is a
   * graceful stop too, taken up as soon as the engine exists. */
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_hup;
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  e = fp_engine_new(conf, errstr, sizeof(errstr));
  fp_conf_destroy(conf);
  if (!e) {
    fprintf(stderr, "flashpoint: %s\n", errstr);
    return 2;
  }
  the_engine = e;
  if (stop_signals) fp_engine_stop(e); /* it came before the_engine was set */
  err = fp_engine_run(e);
  the_engine = NULL;
  fp_engine_destroy(e);
  return err == FP_OK ? 0 : 1;

conf_err:
  fprintf(stderr, "flashpoint: %s\n", errstr);
  fp_conf_destroy(conf);
  return 2;
}

/* ---- offline tools (docs/tools.md) ---------------------------------------------------- */

static const char *default_rules(void) {
  const char *env = getenv("FLASHPOINT_RULES__DIR");
  return env && *env ? env : "rules";
}

static int need_arg(int i, int argc, const char *opt) {
  if (i + 1 < argc) return 1;
  fprintf(stderr, "flashpoint: %s needs a value\n", opt);
  return 0;
}

static int parse_int_arg(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out) {
  if (fp_parse_i64(s, min, max, out) == FP_OK) return 1;
  fprintf(stderr, "flashpoint: %s expects an integer in [%lld, %lld], got \"%s\"\n", opt, (long long)min,
          (long long)max, s);
  return 0;
}

/* kind:brand:start_min:duration_min:peak, brand as an index or "brand-NN". */
static int parse_crisis(const char *s, int brands, fp_gen_crisis_t *c, int64_t start_ms) {
  char buf[256], *f[5];
  int n = 0;
  int64_t v;
  double peak;
  snprintf(buf, sizeof(buf), "%s", s);
  f[n++] = buf;
  for (char *p = buf; *p && n < 5; p++)
    if (*p == ':') {
      *p = '\0';
      f[n++] = p + 1;
    }
  if (n != 5 || strchr(f[4], ':')) goto bad;
  if (fp_gen_kind_parse(f[0]) < 0) goto bad;
  c->kind = (fp_crisis_kind_t)fp_gen_kind_parse(f[0]);
  if (!strncmp(f[1], "brand-", 6)) f[1] += 6;
  if (fp_parse_i64(f[1], 0, brands - 1, &v) != FP_OK) goto bad;
  c->brand = (int)v;
  if (fp_parse_i64(f[2], 0, 100000000, &v) != FP_OK) goto bad;
  c->start_ms = start_ms + v * 60000;
  if (fp_parse_i64(f[3], 1, 100000000, &v) != FP_OK) goto bad;
  c->duration_ms = v * 60000;
  if (fp_parse_double(f[4], &peak) != FP_OK || !(peak > 0)) goto bad;
  c->peak_per_min = peak;
  return 1;
bad:
  fprintf(stderr,
          "flashpoint generate: --crisis expects kind:brand:start_min:duration_min:peak with kind slow_burn, "
          "flash_viral or bot_burst and brand 0..%d, got \"%s\"\n", brands - 1, s);
  return 0;
}

static int cmd_generate(int argc, char **argv) {
  int64_t brands = 10, hours = 6, seed = 1, rate = 20, authors = 5000;
  double ooo = 0.01, neg = 0;
  const char *truth = NULL, *out_path = NULL, *start_s = "2026-01-05T00:00:00Z", *prefix = "m";
  const char *crisis_args[64];
  size_t ncrisis = 0;
  fp_gen_crisis_t crises[64];
  int64_t start_ms;
  unsigned long long counts[65] = {0}, total = 0;
  int rc = 1;

  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--brands") && need_arg(i, argc, a)) {
      if (!parse_int_arg(a, argv[++i], 1, 1000, &brands)) return 2;
    } else if (!strcmp(a, "--hours") && need_arg(i, argc, a)) {
      if (!parse_int_arg(a, argv[++i], 1, 24 * 60, &hours)) return 2;
    } else if (!strcmp(a, "--seed") && need_arg(i, argc, a)) {
      if (!parse_int_arg(a, argv[++i], 0, INT64_MAX, &seed)) return 2;
    } else if (!strcmp(a, "--rate") && need_arg(i, argc, a)) {
      if (!parse_int_arg(a, argv[++i], 1, 100000, &rate)) return 2;
    } else if (!strcmp(a, "--authors") && need_arg(i, argc, a)) {
      if (!parse_int_arg(a, argv[++i], 10, 100000000, &authors)) return 2;
    } else if (!strcmp(a, "--out-of-order") && need_arg(i, argc, a)) {
      if (fp_parse_double(argv[++i], &ooo) != FP_OK || ooo < 0 || ooo > 1) {
        fprintf(stderr, "flashpoint generate: --out-of-order expects a fraction in [0, 1]\n");
        return 2;
      }
    } else if (!strcmp(a, "--negative") && need_arg(i, argc, a)) {
      if (fp_parse_double(argv[++i], &neg) != FP_OK || neg < 0 || neg > 1) {
        fprintf(stderr, "flashpoint generate: --negative expects a fraction in [0, 1]\n");
        return 2;
      }
    } else if (!strcmp(a, "--start") && need_arg(i, argc, a)) {
      start_s = argv[++i];
    } else if (!strcmp(a, "--prefix") && need_arg(i, argc, a)) {
      prefix = argv[++i];
    } else if (!strcmp(a, "--crisis") && need_arg(i, argc, a)) {
      if (ncrisis == 64) {
        fprintf(stderr, "flashpoint generate: at most 64 crises\n");
        return 2;
      }
      crisis_args[ncrisis++] = argv[++i];
    } else if (!strcmp(a, "--truth") && need_arg(i, argc, a)) {
      truth = argv[++i];
    } else if ((!strcmp(a, "--out") || !strcmp(a, "-o")) && need_arg(i, argc, a)) {
      out_path = argv[++i];
    } else {
      fprintf(stderr, "usage: flashpoint generate [--brands N] [--hours H] [--seed S] [--rate PER_MIN]\n"
                      "         [--authors N] [--negative FRACTION] [--out-of-order FRACTION] [--start RFC3339]\n"
                      "         [--prefix ID_PREFIX] [--crisis kind:brand:start_min:duration_min:peak]...\n"
                      "         [--truth FILE] [--out FILE(.gz)]\n");
      return 2;
    }
  }
  if (fp_time_parse_rfc3339(start_s, &start_ms) != FP_OK) {
    fprintf(stderr, "flashpoint generate: --start expects an RFC 3339 time, got \"%s\"\n", start_s);
    return 2;
  }
  for (size_t c = 0; c < ncrisis; c++)
    if (!parse_crisis(crisis_args[c], (int)brands, &crises[c], start_ms)) return 2;

  fp_gen_conf_t gc;
  memset(&gc, 0, sizeof(gc));
  gc.seed = (uint64_t)seed;
  gc.brands = (int)brands;
  gc.start_ms = start_ms;
  gc.duration_ms = hours * 3600 * 1000;
  gc.base_per_min = (double)rate;
  gc.authors = (int)authors;
  gc.out_of_order = ooo;
  gc.ncrises = ncrisis;
  gc.crises = crises;
  gc.id_prefix = prefix;
  fp_gen_t *g = fp_gen_new(&gc);
  fp_gen_opts_t go = {1, neg};
  fp_buf_t line = {0};
  const char *key;
  int crisis;
  FILE *out = stdout;
#ifdef FP_HAVE_ZLIB
  gzFile gz = NULL;
#endif
  if (!g) {
    fprintf(stderr, "flashpoint generate: bad generator settings\n");
    return 2;
  }
  fp_gen_set_opts(g, &go);
  if (out_path && strcmp(out_path, "-")) {
    size_t l = strlen(out_path);
#ifdef FP_HAVE_ZLIB
    if (l > 3 && !strcmp(out_path + l - 3, ".gz")) {
      if (!(gz = gzopen(out_path, "wb6"))) {
        fprintf(stderr, "flashpoint generate: cannot write %s\n", out_path);
        goto out;
      }
      out = NULL;
    } else
#endif
    if (!(out = fopen(out_path, "w"))) {
      (void)l;
      fprintf(stderr, "flashpoint generate: cannot write %s\n", out_path);
      goto out;
    }
  }
  while (fp_gen_next(g, &line, &key, &crisis)) {
    fp_buf_append(&line, "\n", 1);
#ifdef FP_HAVE_ZLIB
    if (gz) gzwrite(gz, line.data, (unsigned)line.len);
    else
#endif
      fwrite(line.data, 1, line.len, out);
    counts[crisis >= 0 && crisis < 64 ? crisis : 64]++;
    total++;
  }
  rc = 0;
#ifdef FP_HAVE_ZLIB
  if (gz && gzclose(gz) != Z_OK) rc = 1;
  gz = NULL;
#endif
  if (out && out != stdout && fclose(out) != 0) rc = 1;
  if (out == stdout && fflush(stdout) != 0) rc = 1;
  out = NULL;
  {
    json_t *t = json_pack("{s:{s:I,s:I,s:I,s:s,s:I,s:I},s:[],s:I}", "generator", "seed", (json_int_t)seed,
                          "brands", (json_int_t)brands, "hours", (json_int_t)hours, "start", start_s,
                          "rate_per_brand_per_min", (json_int_t)rate, "authors", (json_int_t)authors,
                          "crises", "mentions", (json_int_t)total);
    json_t *arr = json_object_get(t, "crises");
    for (size_t c = 0; c < ncrisis; c++) {
      char s1[32], s2[32], root[128];
      fp_time_format(crises[c].start_ms, s1, sizeof(s1));
      fp_time_format(crises[c].start_ms + crises[c].duration_ms, s2, sizeof(s2));
      json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:s,s:f,s:I}", "index", (int)c, "kind",
                            fp_gen_kind_name(crises[c].kind), "brand", fp_gen_brand(g, crises[c].brand), "start",
                            s1, "end", s2, "peak_per_min", crises[c].peak_per_min, "mentions",
                            (json_int_t)counts[c]);
      if (crises[c].kind == FP_CRISIS_FLASH_VIRAL) {
        fp_gen_root_id(g, (int)c, root, sizeof(root));
        json_object_set_new(o, "root", json_string(root));
      }
      json_array_append_new(arr, o);
      fprintf(stderr, "generate: crisis %zu %s on %s from %s to %s (%llu mentions)\n", c,
              fp_gen_kind_name(crises[c].kind), fp_gen_brand(g, crises[c].brand), s1, s2, counts[c]);
    }
    if (truth && json_dump_file(t, truth, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
      fprintf(stderr, "flashpoint generate: cannot write %s\n", truth);
      rc = 1;
    }
    json_decref(t);
  }
  fprintf(stderr, "generate: %llu mentions, %lld brands, %lld h from %s\n", total, (long long)brands,
          (long long)hours, start_s);
out:
#ifdef FP_HAVE_ZLIB
  if (gz) gzclose(gz);
#endif
  if (out && out != stdout) fclose(out);
  fp_buf_free(&line);
  fp_gen_destroy(g);
  return rc;
}

/* Options shared by replay and report. @returns 1 if argv[*i] was one of them, -1 on error. */
static int replay_opt(int argc, char **argv, int *i, fp_replay_opts_t *o, const char **settings, size_t *nset) {
  const char *a = argv[*i];
  if ((!strcmp(a, "--rules") || !strcmp(a, "-r")) && need_arg(*i, argc, a)) o->rules_dir = argv[++*i];
  else if (!strcmp(a, "--redis") && need_arg(*i, argc, a)) o->redis = argv[++*i];
  else if (!strcmp(a, "--mapping") && need_arg(*i, argc, a)) o->mapping = argv[++*i];
  else if (!strcmp(a, "--truth") && need_arg(*i, argc, a)) o->truth = argv[++*i];
  else if (!strcmp(a, "--batch") && need_arg(*i, argc, a)) {
    int64_t b;
    if (!parse_int_arg(a, argv[++*i], 1, 100000, &b)) return -1;
    o->batch = (size_t)b;
  } else if ((!strcmp(a, "-s") || !strcmp(a, "--set")) && need_arg(*i, argc, a)) {
    if (*nset >= 31) {
      fprintf(stderr, "flashpoint: too many -s settings\n");
      return -1;
    }
    settings[(*nset)++] = argv[++*i];
    settings[*nset] = NULL;
  } else return 0;
  return 1;
}

static int cmd_replay(int argc, char **argv) {
  fp_replay_opts_t o;
  const char *settings[32] = {NULL}, *out_path = NULL, *summary_path = NULL;
  const char **files = calloc((size_t)argc + 1, sizeof(*files));
  size_t nset = 0;
  int rc = 2, quiet = 0, progress = -1;
  char errstr[1024];
  json_t *summary = NULL;
  FILE *out = stdout;

  memset(&o, 0, sizeof(o));
  o.rules_dir = default_rules();
  o.settings = settings;
  if (!files) return 1;
  for (int i = 0; i < argc; i++) {
    int k = replay_opt(argc, argv, &i, &o, settings, &nset);
    if (k < 0) goto out;
    if (k) continue;
    if ((!strcmp(argv[i], "--out") || !strcmp(argv[i], "-o")) && need_arg(i, argc, argv[i])) out_path = argv[++i];
    else if (!strcmp(argv[i], "--summary") && need_arg(i, argc, argv[i])) summary_path = argv[++i];
    else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) quiet = 1;
    else if (!strcmp(argv[i], "--progress")) progress = 1;
    else if (!strcmp(argv[i], "--no-progress")) progress = 0;
    else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "usage: flashpoint replay [--rules DIR] [--redis HOST:PORT] [--mapping FILE] [--truth FILE]\n"
                      "         [--out FILE] [--summary FILE] [--batch N] [-s key=value]... [--quiet] FILE...\n");
      goto out;
    } else files[o.nfiles++] = argv[i];
  }
  if (!o.nfiles) {
    fprintf(stderr, "flashpoint replay: no input file (use - for stdin)\n");
    goto out;
  }
  o.files = files;
  if (out_path && strcmp(out_path, "-") && !(out = fopen(out_path, "w"))) {
    fprintf(stderr, "flashpoint replay: cannot write %s\n", out_path);
    goto out;
  }
  o.incidents = out;
  o.log = quiet ? NULL : stderr;
  o.progress = progress;
  fp_log_setup(FP_LOG_WARN, 0);
  if (fp_replay_run(&o, &summary, NULL, errstr, sizeof(errstr)) != FP_OK) {
    fprintf(stderr, "flashpoint replay: %s\n", errstr);
    goto out;
  }
  rc = 0;
  if (summary_path && json_dump_file(summary, summary_path, JSON_INDENT(2)) != 0) {
    fprintf(stderr, "flashpoint replay: cannot write %s\n", summary_path);
    rc = 1;
  }
out:
  json_decref(summary);
  if (out && out != stdout && fclose(out) != 0) rc = 1;
  if (out == stdout && fflush(stdout) != 0) rc = 1;
  free(files);
  return rc;
}

static int cmd_test(int argc, char **argv) {
  fp_ruletest_opts_t o;
  const char **files = calloc((size_t)argc + 1, sizeof(*files));
  char errstr[1024];
  int passed = 0, failed = 0;
  fp_err_t err;
  memset(&o, 0, sizeof(o));
  if (!files) return 1;
  o.out = stdout;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) o.verbose = 1;
    else if (!strcmp(argv[i], "--run") && need_arg(i, argc, argv[i])) o.filter = argv[++i];
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: flashpoint test [-v] [--run SUBSTRING] [RULES_DIR] [TEST_FILE.json...]\n");
      free(files);
      return 2;
    } else if (!o.rules_dir && !strstr(argv[i], ".json")) o.rules_dir = argv[i];
    else files[o.nfiles++] = argv[i];
  }
  if (!o.rules_dir) o.rules_dir = default_rules();
  o.files = o.nfiles ? files : NULL;
  fp_log_setup(FP_LOG_WARN, 0);
  err = fp_ruletest_run(&o, &passed, &failed, errstr, sizeof(errstr));
  free(files);
  if (err != FP_OK) {
    fprintf(stderr, "flashpoint test: %s\n", errstr);
    return 2;
  }
  return failed ? 1 : 0;
}

static int cmd_report(int argc, char **argv) {
  fp_report_opts_t o;
  const char *settings[32] = {NULL};
  const char **files = calloc((size_t)argc + 1, sizeof(*files));
  size_t nset = 0;
  char errstr[1024];
  int rc = 2;
  memset(&o, 0, sizeof(o));
  if (!files) return 1;
  o.replay.rules_dir = default_rules();
  o.replay.settings = settings;
  for (int i = 0; i < argc; i++) {
    int k = replay_opt(argc, argv, &i, &o.replay, settings, &nset);
    if (k < 0) goto out;
    if (k) continue;
    if ((!strcmp(argv[i], "--out") || !strcmp(argv[i], "-o")) && need_arg(i, argc, argv[i])) o.out_path = argv[++i];
    else if (!strcmp(argv[i], "--title") && need_arg(i, argc, argv[i])) o.title = argv[++i];
    else if (!strcmp(argv[i], "--entities") && need_arg(i, argc, argv[i])) {
      int64_t n;
      i++;
      if (!parse_int_arg("--entities", argv[i], 1, 1000, &n)) goto out;
      o.max_entities = (int)n;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "usage: flashpoint report --out report.html [--rules DIR] [--mapping FILE] [--truth FILE]\n"
                      "         [--title TEXT] [--entities N] [-s key=value]... FILE...\n");
      goto out;
    } else files[o.replay.nfiles++] = argv[i];
  }
  if (!o.out_path || !o.replay.nfiles) {
    fprintf(stderr, "flashpoint report: --out FILE and at least one input file are required\n");
    goto out;
  }
  o.replay.files = files;
  o.replay.log = stderr;
  o.replay.progress = -1;
  fp_log_setup(FP_LOG_WARN, 0);
  if (fp_report_run(&o, errstr, sizeof(errstr)) != FP_OK) {
    fprintf(stderr, "flashpoint report: %s\n", errstr);
    goto out;
  }
  fprintf(stderr, "report: wrote %s\n", o.out_path);
  rc = 0;
out:
  free(files);
  return rc;
}

int main(int argc, char **argv) {
  char errstr[1024];
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
    usage(stdout);
    return 0;
  }
  if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
    printf("flashpoint %s (incident schema v%d)\n", FP_VERSION_STR, FP_INCIDENT_SCHEMA_VERSION);
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "--help-config")) {
    fp_conf_print_help(stdout, argc >= 3 && !strcmp(argv[2], "--markdown"));
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "demo")) return fp_demo_main(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "silence")) return fp_silence_main(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "check")) {
    if (argc != 3) {
      fprintf(stderr, "usage: flashpoint check RULES_DIR\n");
      return 2;
    }
    if (fp_rules_check_dir(argv[2], stdout, errstr, sizeof(errstr)) != FP_OK) {
      fprintf(stderr, "flashpoint check: %s\n", errstr);
      return 3;
    }
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "replay")) return cmd_replay(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "test")) return cmd_test(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "report")) return cmd_report(argc - 2, argv + 2);
  if (argc >= 2 && argv[1][0] != '-') {
    fprintf(stderr, "flashpoint: unknown command \"%s\" (see --help)\n", argv[1]);
    return 2;
  }
  return cmd_run(argc - 1, argv + 1);
}
