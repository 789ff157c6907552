/*
 * ruletest.h - rule unit tests as data (`flashpoint test`): JSON files next to the rules
 * (rules/tests/NAME.json) give input mentions - explicit ones, or compact series such as
 * "20 negative mentions per minute for 15 minutes" - and the incident events expected.
 * Each test runs on a fresh in-process pipeline, so what passes here is what production does.
 * The file format is in docs/tools.md.
 */
#ifndef FP_RULETEST_H
#define FP_RULETEST_H

#include <stdio.h>

#include "flashpoint/flashpoint.h"

typedef struct fp_ruletest_opts_s {
  const char *rules_dir;       /* required */
  const char *const *files;    /* test files; NULL/0: every .json file in RULES_DIR/tests */
  size_t nfiles;
  const char *filter;          /* run only tests whose name contains this, or NULL */
  int verbose;                 /* print every event of every test */
  FILE *out;                   /* the report (PASS/FAIL lines and diffs) */
} fp_ruletest_opts_t;

/**
 * Runs the tests.
 * @param passed_out, failed_out receive the counts of tests (may be NULL).
 * @returns FP_OK when the tests ran (whatever their outcome; look at *failed_out),
 *          FP_ERR_RULE_LOAD when the rules do not load, FP_ERR_IO when no test file is found.
 */
fp_err_t fp_ruletest_run(const fp_ruletest_opts_t *opts, int *passed_out, int *failed_out, char *errstr,
                         size_t errstr_size);

/**
 * Parses a series phrase: "<N> [negative|positive|neutral] mentions per <second|minute|hour>
 * for <D> <seconds|minutes|hours>" (singular or plural units, "a" for 1).
 * @returns FP_OK with the count, the sentiment ("negative", "positive", "neutral"; "neutral"
 * when omitted), the period and the duration in ms; FP_ERR_CONFIG otherwise.
 */
fp_err_t fp_ruletest_parse_series(const char *s, double *per, char *sentiment, size_t sentiment_size,
                                  int64_t *period_ms, int64_t *duration_ms);

/** Parses a relative time "+5m", "+1h30m", "90s", "+2h5m10s" into ms. @returns FP_OK or FP_ERR_CONFIG. */
fp_err_t fp_ruletest_parse_offset(const char *s, int64_t *ms_out);

#endif
