/*
 * gen.h - a deterministic generator of realistic mention streams, with injected crises and
 * their ground truth. Used by the demo, the tests and the benchmarks.
 *
 * Background: many brands with a diurnal rhythm, heavy-tailed author reach (Pareto
 * followers, a few verified accounts), mostly neutral or positive sentiment, reshares of
 * earlier posts. Crises (per brand, from a start time): slow_burn (negative volume ramps up
 * over the duration), flash_viral (one negative root post reshared very fast), bot_burst
 * (a burst of negative posts from a handful of accounts).
 */
#ifndef FP_GEN_H
#define FP_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef enum { FP_CRISIS_SLOW_BURN = 0, FP_CRISIS_FLASH_VIRAL, FP_CRISIS_BOT_BURST } fp_crisis_kind_t;

typedef struct fp_gen_crisis_s {
  fp_crisis_kind_t kind;
  int brand;              /* index of the brand */
  int64_t start_ms;       /* event time it starts (ground truth) */
  int64_t duration_ms;
  double peak_per_min;    /* negative mentions per minute at the peak */
} fp_gen_crisis_t;

typedef struct fp_gen_conf_s {
  uint64_t seed;
  int brands;             /* >= 1 */
  int64_t start_ms;       /* event time of the first mention */
  int64_t duration_ms;
  double base_per_min;    /* background mentions per brand per minute at the daily mean */
  int authors;            /* size of the author population */
  double out_of_order;    /* fraction of mentions delivered up to 30 s out of order */
  size_t ncrises;
  const fp_gen_crisis_t *crises; /* borrowed */
  const char *id_prefix;  /* mention ids are "<prefix>-<seq>" */
} fp_gen_conf_t;

typedef struct fp_gen_s fp_gen_t;

/** @returns a generator (owned; fp_gen_destroy) or NULL. @p conf is copied. */
fp_gen_t *fp_gen_new(const fp_gen_conf_t *conf);
void fp_gen_destroy(fp_gen_t *g);

/**
 * Writes the next mention as one JSON object (no newline) into @p out (reset first).
 * @param key_out receives the brand (the Kafka message key), valid until the next call.
 * @param crisis_out receives the index of the crisis the mention belongs to, or -1.
 * @returns 1 with a mention, 0 at the end of the stream.
 */
int fp_gen_next(fp_gen_t *g, fp_buf_t *out, const char **key_out, int *crisis_out);

/** Name of brand @p i ("brand-07"). */
const char *fp_gen_brand(const fp_gen_t *g, int i);

#endif
