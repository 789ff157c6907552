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

/**
 * Options added after fp_gen_conf_t was fixed (positional initialisers use it); their
 * zero values keep the original streams byte-identical (the demo and the benchmarks).
 */
typedef struct fp_gen_opts_s {
  int emit_roots;         /* non-zero: a flash_viral crisis opens with its root post itself
                             (id "<prefix>-root-<i>", a verified author with 250k followers) */
  double negative_ratio;  /* share of negative background mentions; 0 means 0.08 */
} fp_gen_opts_t;

typedef struct fp_gen_s fp_gen_t;

/** @returns a generator (owned; fp_gen_destroy) or NULL. @p conf is copied. */
fp_gen_t *fp_gen_new(const fp_gen_conf_t *conf);
void fp_gen_destroy(fp_gen_t *g);
/** Sets the extra options (@p o copied); call before the first fp_gen_next(). */
void fp_gen_set_opts(fp_gen_t *g, const fp_gen_opts_t *o);

/**
 * Writes the next mention as one JSON object (no newline) into @p out (reset first).
 * @param key_out receives the brand (the Kafka message key), valid until the next call.
 * @param crisis_out receives the index of the crisis the mention belongs to, or -1.
 * @returns 1 with a mention, 0 at the end of the stream.
 */
int fp_gen_next(fp_gen_t *g, fp_buf_t *out, const char **key_out, int *crisis_out);

/** Name of brand @p i ("brand-07"). */
const char *fp_gen_brand(const fp_gen_t *g, int i);

/** Writes the id of crisis @p i's root post ("<prefix>-root-<i>") into @p buf. */
void fp_gen_root_id(const fp_gen_t *g, int i, char *buf, size_t size);

/** Kind names: "slow_burn", "flash_viral", "bot_burst". @returns the kind or -1. */
const char *fp_gen_kind_name(fp_crisis_kind_t k);
int fp_gen_kind_parse(const char *name);

#endif
