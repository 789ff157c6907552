/*
 * gen.c - owns the mention generator (see gen.h). Time advances in one-second ticks of
 * event time; each tick draws Poisson counts per brand for the background and per active
 * crisis, then emits them (with a small fraction held back and released up to 30 s later,
 * to exercise out-of-order handling). Everything derives from the seed: the same
 * configuration gives the same bytes. fp_gen_opts_t holds later additions (the root post of
 * a flash-viral crisis, the negative share) whose zero values leave the original streams
 * unchanged.
 */
#include "gen.h"

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_MAX_BRANDS 1000
#define GEN_PENDING_MAX 4096

typedef struct pending_s {
  int64_t release_ms;
  char *json;
  int brand, crisis;
} pending_t;

struct fp_gen_s {
  fp_gen_conf_t c;
  fp_gen_opts_t o;
  fp_gen_crisis_t *crises;
  uint64_t rng;
  int64_t now_ms, end_ms;
  uint64_t seq;
  char brands[GEN_MAX_BRANDS][24];
  /* the current tick's emissions not yet returned */
  int tick_brand[4096], tick_crisis[4096];
  size_t tick_n, tick_i;
  pending_t pending[GEN_PENDING_MAX];
  size_t npending;
  char *ready;
  int ready_brand, ready_crisis;
  uint64_t root_seq[64]; /* the viral root post of each crisis */
  unsigned char root_done[64]; /* emit_roots: the root post was emitted */
};

static uint64_t rnd(fp_gen_t *g) { /* splitmix64 */
  uint64_t z = (g->rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double unif(fp_gen_t *g) { return (double)(rnd(g) >> 11) / 9007199254740992.0; }

static int poisson(fp_gen_t *g, double lambda) {
  if (lambda <= 0) return 0;
  if (lambda > 30) { /* normal approximation */
    double u1 = unif(g) + 1e-12, u2 = unif(g);
    double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
    int n = (int)llround(lambda + sqrt(lambda) * z);
    return n < 0 ? 0 : n;
  }
  double l = exp(-lambda), p = 1.0;
  int k = 0;
  do {
    k++;
    p *= unif(g);
  } while (p > l);
  return k - 1;
}

fp_gen_t *fp_gen_new(const fp_gen_conf_t *conf) {
  fp_gen_t *g;
  if (!conf || conf->brands < 1 || conf->brands > GEN_MAX_BRANDS || conf->ncrises > 64) return NULL;
  if (!(g = calloc(1, sizeof(*g)))) return NULL;
  g->c = *conf;
  if (conf->ncrises) {
    if (!(g->crises = calloc(conf->ncrises, sizeof(*g->crises)))) {
      free(g);
      return NULL;
    }
    memcpy(g->crises, conf->crises, conf->ncrises * sizeof(*g->crises));
  }
  g->c.crises = g->crises;
  if (!g->c.id_prefix) g->c.id_prefix = "m";
  if (g->c.authors < 10) g->c.authors = 10;
  g->rng = conf->seed ? conf->seed : 1;
  g->now_ms = conf->start_ms - 1000;
  g->end_ms = conf->start_ms + conf->duration_ms;
  for (int i = 0; i < conf->brands; i++) snprintf(g->brands[i], sizeof(g->brands[i]), "brand-%02d", i);
  return g;
}

void fp_gen_set_opts(fp_gen_t *g, const fp_gen_opts_t *o) { g->o = *o; }

void fp_gen_destroy(fp_gen_t *g) {
  if (!g) return;
  for (size_t i = 0; i < g->npending; i++) free(g->pending[i].json);
  free(g->ready);
  free(g->crises);
  free(g);
}

const char *fp_gen_brand(const fp_gen_t *g, int i) { return g->brands[i]; }

void fp_gen_root_id(const fp_gen_t *g, int i, char *buf, size_t size) {
  snprintf(buf, size, "%s-root-%d", g->c.id_prefix, i);
}

static const char *const kind_names[] = {"slow_burn", "flash_viral", "bot_burst"};

const char *fp_gen_kind_name(fp_crisis_kind_t k) {
  return (int)k >= 0 && (int)k < 3 ? kind_names[k] : "unknown";
}

int fp_gen_kind_parse(const char *name) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(name, kind_names[i])) return i;
  return -1;
}

/* Diurnal factor in [0.35, 1.65]: quiet at night (UTC), busy in the evening. */
static double diurnal(int64_t ms) {
  double h = (double)((ms / 1000) % 86400) / 3600.0;
  return 1.0 + 0.65 * sin((h - 12.0) / 24.0 * 2 * M_PI);
}

static double crisis_rate(const fp_gen_crisis_t *c, int64_t t) {
  double x;
  if (t < c->start_ms || t >= c->start_ms + c->duration_ms) return 0;
  x = (double)(t - c->start_ms) / (double)c->duration_ms;
  switch (c->kind) {
  case FP_CRISIS_SLOW_BURN: return c->peak_per_min * (x < 0.7 ? x / 0.7 : (1 - x) / 0.3 * 0.8 + 0.2);
  case FP_CRISIS_FLASH_VIRAL: return c->peak_per_min * (x < 0.1 ? x / 0.1 : exp(-(x - 0.1) * 3));
  case FP_CRISIS_BOT_BURST: return c->peak_per_min;
  }
  return 0;
}

static const char *const pos_texts[] = {
    "loving my new %s, works great", "%s support was quick and friendly",
    "just ordered from %s again", "the %s update is actually nice",
    "anyone else using %s? thoughts", "%s store opening hours today?",
};
static const char *const neg_texts[] = {
    "%s charged me twice and nobody answers, terrible",
    "my %s order arrived broken, awful service",
    "got food poisoning after eating %s, never again",
    "%s data breach? my account was hacked",
    "boycott %s until they fix this",
    "%s recall now, this is dangerous",
};

/* Writes @p tpl with every "%s" replaced by @p brand (templates are data, not formats). */
static void fill_template(char *out, size_t size, const char *tpl, const char *brand) {
  size_t o = 0, bl = strlen(brand);
  for (const char *p = tpl; *p && o + 1 < size; p++) {
    if (p[0] == '%' && p[1] == 's') {
      size_t n = bl < size - 1 - o ? bl : size - 1 - o;
      memcpy(out + o, brand, n);
      o += n;
      p++;
    } else {
      out[o++] = *p;
    }
  }
  out[o] = '\0';
}

static char *make_mention(fp_gen_t *g, int brand, int crisis, int64_t t) {
  json_t *o;
  char text[256], id[96], author[32];
  int negative, verified;
  double sentiment;
  int64_t followers;
  uint64_t a;
  const fp_gen_crisis_t *c = crisis >= 0 ? &g->crises[crisis] : NULL;
  char *out;

  snprintf(id, sizeof(id), "%s-%llu", g->c.id_prefix, (unsigned long long)g->seq++);
  if (c && c->kind == FP_CRISIS_BOT_BURST) a = rnd(g) % 5; /* a handful of bot accounts */
  else a = (uint64_t)(pow(unif(g), 2.0) * g->c.authors);    /* heavy users post more */
  snprintf(author, sizeof(author), "%s%llu", c && c->kind == FP_CRISIS_BOT_BURST ? "bot" : "u",
           (unsigned long long)a);
  followers = (int64_t)(50.0 / pow(1.0 - unif(g) * 0.999999, 1.0 / 1.2)); /* Pareto, alpha 1.2 */
  if (c && c->kind == FP_CRISIS_BOT_BURST) followers = 3 + (int64_t)(rnd(g) % 20);
  verified = followers > 200000 || (rnd(g) % 1000) == 0;
  negative = c ? 1 : unif(g) < (g->o.negative_ratio > 0 ? g->o.negative_ratio : 0.08);
  sentiment = negative ? -0.4 - 0.6 * unif(g) : -0.2 + 1.1 * unif(g);
  if (sentiment > 1) sentiment = 1;
  fill_template(text, sizeof(text), negative ? neg_texts[rnd(g) % 6] : pos_texts[rnd(g) % 6],
                g->brands[brand]);

  o = json_pack("{s:s,s:s,s:s,s:[s],s:{s:s,s:I,s:b},s:s,s:s,s:I,s:f,s:{s:I,s:I,s:I}}", "id", id,
                "platform", (rnd(g) & 1) ? "x" : "threads", "brand", g->brands[brand], "entities",
                g->brands[brand], "author", "id", author, "followers", (json_int_t)followers,
                "verified", verified, "text", text, "lang", "en", "created_at", (json_int_t)t,
                "sentiment", sentiment, "engagement", "likes", (json_int_t)(rnd(g) % 50), "reshares",
                (json_int_t)(rnd(g) % 10), "replies", (json_int_t)(rnd(g) % 5));
  if (c && c->kind == FP_CRISIS_FLASH_VIRAL && g->o.emit_roots && !g->root_done[crisis]) {
    /* the root post itself: one complaint from a well-followed account */
    g->root_done[crisis] = 1;
    snprintf(id, sizeof(id), "%s-root-%d", g->c.id_prefix, crisis);
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(json_object_get(o, "author"), "followers", json_integer(250000));
    json_object_set_new(json_object_get(o, "author"), "verified", json_true());
  } else if (c && c->kind == FP_CRISIS_FLASH_VIRAL) {
    char root[96];
    if (!g->root_seq[crisis]) g->root_seq[crisis] = g->seq; /* the first crisis post is the root */
    snprintf(root, sizeof(root), "%s-root-%d", g->c.id_prefix, crisis);
    json_object_set_new(o, "reshare_of", json_string(root));
  }
  if (negative && strstr(text, "recall")) json_object_set_new(o, "hashtags", json_pack("[s]", "recall"));
  out = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return out;
}

/* Fills the next tick's emission plan. @returns 0 at the end of the stream. */
static int next_tick(fp_gen_t *g) {
  for (;;) {
    g->now_ms += 1000;
    if (g->now_ms >= g->end_ms) return 0;
    g->tick_n = g->tick_i = 0;
    for (int b = 0; b < g->c.brands; b++) {
      int n = poisson(g, g->c.base_per_min / 60.0 * diurnal(g->now_ms));
      for (int i = 0; i < n && g->tick_n < 4096; i++) {
        g->tick_brand[g->tick_n] = b;
        g->tick_crisis[g->tick_n++] = -1;
      }
    }
    for (size_t c = 0; c < g->c.ncrises; c++) {
      int n = poisson(g, crisis_rate(&g->crises[c], g->now_ms) / 60.0);
      for (int i = 0; i < n && g->tick_n < 4096; i++) {
        g->tick_brand[g->tick_n] = g->crises[c].brand;
        g->tick_crisis[g->tick_n++] = (int)c;
      }
    }
    if (g->tick_n) return 1;
  }
}

int fp_gen_next(fp_gen_t *g, fp_buf_t *out, const char **key_out, int *crisis_out) {
  for (;;) {
    /* a held-back mention whose time has come goes first */
    for (size_t i = 0; i < g->npending; i++) {
      if (g->pending[i].release_ms <= g->now_ms || g->now_ms >= g->end_ms) {
        pending_t p = g->pending[i];
        g->pending[i] = g->pending[--g->npending];
        fp_buf_reset(out);
        fp_buf_append(out, p.json, strlen(p.json));
        free(p.json);
        *key_out = g->brands[p.brand];
        *crisis_out = p.crisis;
        return 1;
      }
    }
    if (g->tick_i < g->tick_n) {
      int b = g->tick_brand[g->tick_i], c = g->tick_crisis[g->tick_i];
      int64_t t = g->now_ms + (int64_t)(rnd(g) % 1000);
      char *json = make_mention(g, b, c, t);
      g->tick_i++;
      if (!json) return 0;
      if (g->c.out_of_order > 0 && unif(g) < g->c.out_of_order && g->npending < GEN_PENDING_MAX) {
        g->pending[g->npending].release_ms = g->now_ms + 1000 + (int64_t)(rnd(g) % 30000);
        g->pending[g->npending].json = json;
        g->pending[g->npending].brand = b;
        g->pending[g->npending++].crisis = c;
        continue;
      }
      fp_buf_reset(out);
      fp_buf_append(out, json, strlen(json));
      free(json);
      *key_out = g->brands[b];
      *crisis_out = c;
      return 1;
    }
    if (!next_tick(g)) {
      if (g->npending) continue; /* flush the held-back ones */
      return 0;
    }
  }
}
