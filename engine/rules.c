/*
 * rules.c - owns a rule set: loading and validating rule files, the Lua-facing `fp` API
 * (fp.rule, window constructors, keyword matchers, lexicon sentiment), and the two
 * evaluation stages of rules.h. Every call into rule code goes through sandbox.c.
 *
 * How it works:
 *  - Loading: every `*.lua` directly in the directory, sorted by name, runs in its own _ENV
 *    and must return fp.rule{...}. fp.rule and the window constructors validate their
 *    arguments where they are called, so errors carry the line of the offending definition;
 *    what can only be checked across files (duplicate ids) uses the line of fp.rule.
 *    Windows keep declaration order (constructors stamp a sequence number).
 *  - Stage 1 builds ONE sealed (read-only, recursively) Lua table per mention, calls each
 *    live rule's `when` then `key`, and appends one window op per window (TOPK: one per
 *    term). Field paths (`key = "brand"`, `of = "author.followers"`) are resolved in C on
 *    the JSON document, without entering Lua.
 *  - Stage 2 writes the window values into per-rule value tables made at load time (sealed
 *    for the rule, so the hot path allocates nothing) and calls `severity(w, m)`.
 *  - Failures: counted per rule, the first one logged; after `quarantine_after` consecutive
 *    failures the rule is quarantined (logged once) and skipped. A success resets the streak:
 *    a stage-1 run that did not select, or a stage-2 call that returned a severity.
 * Invariant kept by callers: one thread per rule set; ops passed to stage 2 are those stage 1
 * appended for that hit (spec pointers identify the windows).
 */
#include "rules.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "sandbox.h"
#include "util.h"

#define MAX_RULE_FILE (1024 * 1024)
#define MAX_MENTION_DEPTH 8
#define MAX_TERMS 8
#define TERM_MAX 63

typedef struct rule_s {
  fp_rule_info_t info;
  int line;                      /* line of fp.rule in info.file */
  char *key_path;                /* `key` as a field path, or NULL */
  int key_ref, when_ref, sev_ref, w_ref;
  int of_ref[FP_RULE_MAX_WINDOWS];   /* `of` as a function, or LUA_NOREF */
  int val_ref[FP_RULE_MAX_WINDOWS];  /* real (host-side) value table of each window */
  unsigned consecutive;
  uint64_t failures;
  fp_sandbox_label_t label;      /* for the watchdog: id, file, hash (borrowed from info) */
} rule_t;

struct fp_rules_s {
  fp_sandbox_t *sb;
  rule_t *rules;
  size_t n;
  fp_rules_limits_t lim;
  int tag;         /* 1..MREF_TAGS: stamped on this set's mention handles */
  char *strikes_dir; /* owned copy of lim.strikes_dir, or NULL */
};

/*
 * Mention handles (mref) are registry refs stamped with the rule set's tag:
 * mref = tag << MREF_BITS | ref. A handle that outlives its rule set (a reload between
 * stage 1 and the release) is then recognised and ignored instead of unref'ing a slot of
 * the new state that may hold a rule function.
 */
#define MREF_BITS 20
#define MREF_TAGS 2047
static atomic_uint rules_tag_seq;

static int mref_ref(const fp_rules_t *rs, int mref) {
  if (mref <= 0 || (mref >> MREF_BITS) != rs->tag) return LUA_NOREF;
  return mref & ((1 << MREF_BITS) - 1);
}

static char k_specs, k_windows, k_seq, k_kwmeta, k_kit; /* registry keys (addresses) */
static void lazy_kit_new(lua_State *L); /* mention tables (see "Mention tables") */

/* ========================================================================================== */
/* Severities and op vectors                                                                  */

static const char *const sev_names[] = {"none", "sev4", "sev3", "sev2", "sev1"};

const char *fp_sev_name(fp_sev_t s) {
  return (unsigned)s <= FP_SEV1 ? sev_names[s] : "none";
}

int fp_sev_parse(const char *s) {
  for (int i = 0; s && i <= FP_SEV1; i++)
    if (strcmp(s, sev_names[i]) == 0) return i;
  return -1;
}

/*
 * Op strings (window keys and members, at most 256 bytes each) live in an arena of 16 KiB
 * chunks owned by the vector: strs[0..nstrs) are the chunks, `chunk`/`used` the fill mark.
 * reset keeps the chunks, so a steady stream allocates nothing per op.
 */
#define OPVEC_CHUNK (16 * 1024)

void fp_opvec_reset(fp_opvec_t *v) {
  v->chunk = 0;
  v->used = 0;
  v->n = 0;
}

void fp_opvec_free(fp_opvec_t *v) {
  if (!v) return;
  for (size_t i = 0; i < v->nstrs; i++) free(v->strs[i]);
  free(v->ops);
  free(v->strs);
  memset(v, 0, sizeof *v);
}

/* Copies @p len bytes (+ NUL) into the arena; @returns the copy or NULL (out of memory). */
static char *opvec_strdup(fp_opvec_t *v, const char *s, size_t len) {
  size_t need = len + 1;
  if (need > OPVEC_CHUNK) return NULL; /* cannot happen: op strings are <= 256 bytes */
  if (v->chunk < v->nstrs && v->used + need > OPVEC_CHUNK) {
    v->chunk++;
    v->used = 0;
  }
  if (v->chunk == v->nstrs) {
    if (v->nstrs == v->capstrs) {
      size_t cap = v->capstrs ? v->capstrs * 2 : 8;
      char **p = realloc(v->strs, cap * sizeof *p);
      if (!p) return NULL;
      v->strs = p;
      v->capstrs = cap;
    }
    if (!(v->strs[v->nstrs] = malloc(OPVEC_CHUNK))) return NULL;
    v->nstrs++;
    v->used = 0;
  }
  char *c = v->strs[v->chunk] + v->used;
  memcpy(c, s, len);
  c[len] = '\0';
  v->used += need;
  return c;
}

static fp_win_op_t *opvec_push(fp_opvec_t *v) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    fp_win_op_t *p = realloc(v->ops, cap * sizeof *p);
    if (!p) return NULL;
    v->ops = p;
    v->cap = cap;
  }
  fp_win_op_t *op = &v->ops[v->n++];
  memset(op, 0, sizeof *op);
  return op;
}

/* ========================================================================================== */
/* Text helpers: terms, stopwords, lexicon sentiment                                          */

static int wordchar(unsigned char c) { return isalnum(c) || c >= 0x80 || c == '_'; }

static const char *const stopwords[] = {
    "about", "after", "again", "all", "also", "and", "any", "are", "because", "been", "before",
    "being", "but", "can", "could", "did", "does", "doing", "don", "down", "each", "few", "for",
    "from", "further", "get", "got", "had", "has", "have", "having", "her", "here", "hers",
    "him", "his", "how", "http", "https", "into", "its", "just", "more", "most", "much", "not",
    "now", "off", "once", "only", "other", "our", "ours", "out", "over", "own", "same", "she",
    "should", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "through", "too", "under", "until", "very", "was", "way", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "www", "you", "your", "yours", "amp", "rt", "via", "com"};

typedef struct {
  const char *w;
  int v;
} lex_t;
static const lex_t lexicon[] = {
    {"abysmal", -2}, {"amazing", 2}, {"angry", -2}, {"annoyed", -1}, {"annoying", -1},
    {"awesome", 2}, {"awful", -2}, {"bad", -1}, {"best", 2}, {"boycott", -2}, {"broke", -1},
    {"broken", -1}, {"bug", -1}, {"buggy", -1}, {"cheated", -2}, {"complaint", -1},
    {"crash", -1}, {"crashed", -1}, {"dangerous", -2}, {"dead", -2}, {"defective", -2},
    {"delay", -1}, {"delayed", -1}, {"delighted", 2}, {"disappointed", -2},
    {"disappointing", -2}, {"disaster", -2}, {"disgusting", -2}, {"down", -1}, {"excellent", 2},
    {"fail", -1}, {"failed", -1}, {"failure", -2}, {"fantastic", 2}, {"fast", 1}, {"fault", -1},
    {"fine", 1}, {"fraud", -2}, {"furious", -2}, {"glad", 1}, {"good", 1}, {"great", 2},
    {"happy", 2}, {"hate", -2}, {"hated", -2}, {"helpful", 1}, {"horrible", -2}, {"hurt", -2},
    {"ill", -1}, {"issue", -1}, {"issues", -1}, {"lawsuit", -2}, {"liar", -2}, {"lie", -1},
    {"lied", -2}, {"lies", -1}, {"like", 1}, {"love", 2}, {"loved", 2}, {"lovely", 2},
    {"mess", -1}, {"nice", 1}, {"outage", -2}, {"pathetic", -2}, {"perfect", 2},
    {"poisoning", -2}, {"poor", -1}, {"problem", -1}, {"problems", -1}, {"recall", -1},
    {"refund", -1}, {"ripoff", -2}, {"rude", -2}, {"sad", -1}, {"scam", -2}, {"shame", -1},
    {"sick", -2}, {"slow", -1}, {"smooth", 1}, {"sorry", -1}, {"stole", -2}, {"stolen", -2},
    {"stuck", -1}, {"sucks", -2}, {"super", 1}, {"terrible", -2}, {"thank", 1}, {"thanks", 1},
    {"toxic", -2}, {"unacceptable", -2}, {"unsafe", -2}, {"upset", -1}, {"useless", -2},
    {"wonderful", 2}, {"worse", -2}, {"worst", -2}, {"wow", 1}, {"wrong", -1}};
static const char *const negators[] = {"ain't", "aren't", "can't", "cannot", "didn't", "doesn't",
                                 "don't", "dont", "isn't", "isnt", "never", "no", "nor",
                                 "not", "wasn't", "without", "won't"};

/*
 * Word sets (lexicon, negators, stopwords) as open-addressing hash tables, built once per
 * process: a token is hashed while it is lower-cased, so a lookup is one probe and one
 * memcmp on a hit (the sorted arrays with bsearch/strcmp cost ~12% of the example pack).
 */
#define WSET_SLOTS 512 /* power of two, load < 0.25 */
typedef struct {
  const char *w; /* NULL: empty slot */
  uint8_t len;
  int8_t v;      /* lexicon weight; WSET_NEG for a negator */
} wslot_t;
#define WSET_NEG 100
static wslot_t lex_set[WSET_SLOTS], stop_set[WSET_SLOTS];
static size_t stop_maxlen; /* longest stopword: longer words skip the lookup */

static uint32_t whash_step(uint32_t h, unsigned char c) { return (h ^ c) * 16777619u; }
#define WHASH_INIT 2166136261u

static void wset_add(wslot_t *set, const char *w, int v) {
  uint32_t h = WHASH_INIT;
  size_t n = strlen(w);
  for (size_t i = 0; i < n; i++) h = whash_step(h, (unsigned char)w[i]);
  for (uint32_t i = h & (WSET_SLOTS - 1);; i = (i + 1) & (WSET_SLOTS - 1)) {
    if (!set[i].w) {
      set[i].w = w;
      set[i].len = (uint8_t)n;
      set[i].v = (int8_t)v;
      return;
    }
    if (set[i].len == n && memcmp(set[i].w, w, n) == 0) return;
  }
}

/* @returns the slot of @p w (@p n bytes, hash @p h), or NULL. */
static const wslot_t *wset_get(const wslot_t *set, const char *w, size_t n, uint32_t h) {
  for (uint32_t i = h & (WSET_SLOTS - 1); set[i].w; i = (i + 1) & (WSET_SLOTS - 1))
    if (set[i].len == n && memcmp(set[i].w, w, n) == 0) return &set[i];
  return NULL;
}

static json_t *empty_doc; /* stands in for a mention without a document (never freed) */

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void tables_sort(void) {
  empty_doc = json_object();
  for (size_t i = 0; i < sizeof lexicon / sizeof *lexicon; i++)
    wset_add(lex_set, lexicon[i].w, lexicon[i].v);
  for (size_t i = 0; i < sizeof negators / sizeof *negators; i++)
    wset_add(lex_set, negators[i], WSET_NEG);
  for (size_t i = 0; i < sizeof stopwords / sizeof *stopwords; i++) {
    wset_add(stop_set, stopwords[i], 0);
    if (strlen(stopwords[i]) > stop_maxlen) stop_maxlen = strlen(stopwords[i]);
  }
}

/*
 * Lexicon sentiment: tokens are runs of letters and apostrophes, lower-cased. Each lexicon
 * word adds its weight (+-1 or +-2); a negator among the 3 tokens before flips the sign.
 * score = S / sqrt(S^2 + 4), in (-1, 1); 0 when no lexicon word occurs.
 */
static double lexicon_sentiment(const char *s, size_t len) {
  double S = 0;
  int since_neg = 99;
  size_t i = 0;
  char w[32];
  while (i < len) {
    while (i < len && !(isalpha((unsigned char)s[i]) || s[i] == '\'')) i++;
    size_t n = 0;
    int too_long = 0;
    uint32_t h = WHASH_INIT;
    while (i < len && (isalpha((unsigned char)s[i]) || s[i] == '\'')) {
      if (n < sizeof w - 1) {
        unsigned char c = (unsigned char)tolower((unsigned char)s[i]);
        w[n++] = (char)c;
        h = whash_step(h, c);
      } else {
        too_long = 1;
      }
      i++;
    }
    if (!n || too_long) continue;
    since_neg++;
    const wslot_t *hit = wset_get(lex_set, w, n, h);
    if (!hit) continue;
    if (hit->v == WSET_NEG) {
      since_neg = 0;
      continue;
    }
    S += since_neg <= 3 ? -hit->v : hit->v;
  }
  return S == 0 ? 0.0 : S / sqrt(S * S + 4.0);
}

typedef struct {
  char t[MAX_TERMS][TERM_MAX + 1];
  size_t n;
} terms_t;

/* Adds @p len bytes as a member: leading '#'/'@' dropped, ASCII lower-cased, cut to 63 bytes
 * at a UTF-8 boundary, duplicates ignored. */
static void terms_add(terms_t *T, const char *s, size_t len) {
  while (len && (*s == '#' || *s == '@')) s++, len--;
  if (!len || T->n >= MAX_TERMS) return;
  if (len > TERM_MAX) {
    len = TERM_MAX;
    while (len && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
  }
  if (!fp_utf8_valid(s, len)) return; /* terms go into incident JSON */
  char *d = T->t[T->n];
  for (size_t i = 0; i < len; i++) d[i] = (char)tolower((unsigned char)s[i]);
  d[len] = '\0';
  for (size_t i = 0; i < T->n; i++)
    if (strcmp(T->t[i], d) == 0) return;
  T->n++;
}

/* Words of @p s: runs of word characters, >= 3 bytes, not stopwords, not pure digits. */
static void terms_of_text(terms_t *T, const char *s, size_t len) {
  size_t i = 0;
  while (i < len && T->n < MAX_TERMS) {
    while (i < len && !wordchar((unsigned char)s[i])) i++;
    size_t st = i;
    int alpha = 0;
    while (i < len && wordchar((unsigned char)s[i])) alpha |= !isdigit((unsigned char)s[i++]);
    size_t n = i - st;
    if (n < 3 || !alpha) continue;
    if (n <= stop_maxlen && n <= TERM_MAX) {
      char w[TERM_MAX + 1];
      uint32_t h = WHASH_INIT;
      for (size_t k = 0; k < n; k++) {
        w[k] = (char)tolower((unsigned char)s[st + k]);
        h = whash_step(h, (unsigned char)w[k]);
      }
      if (wset_get(stop_set, w, n, h)) continue;
    }
    terms_add(T, s + st, n);
  }
}

/* ========================================================================================== */
/* The Lua-facing fp API                                                                      */

static int caller_line(lua_State *L) {
  lua_Debug ar;
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar) && ar.currentline > 0)
    return ar.currentline;
  return 1;
}

#define FP_MAX_DURATION_MS (366LL * 86400 * 1000)

static int64_t arg_duration(lua_State *L, int t, const char *field, const char *fn,
                            int64_t dflt) {
  int64_t ms;
  int ty = lua_getfield(L, t, field);
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    if (dflt < 0) luaL_error(L, "%s: missing '%s'", fn, field);
    return dflt;
  }
  if (ty == LUA_TNUMBER && lua_isinteger(L, -1)) {
    ms = lua_tointeger(L, -1);
  } else if (ty == LUA_TSTRING) {
    if (fp_duration_parse(lua_tostring(L, -1), &ms) != FP_OK)
      luaL_error(L, "%s: bad duration '%s' for '%s' (use e.g. \"500ms\", \"10m\", \"7d\")", fn,
                 lua_tostring(L, -1), field);
  } else {
    return luaL_error(L, "%s: '%s' must be a duration string such as \"10m\"", fn, field);
  }
  lua_pop(L, 1);
  if (ms <= 0) luaL_error(L, "%s: '%s' must be positive", fn, field);
  if (ms > FP_MAX_DURATION_MS) luaL_error(L, "%s: '%s' is longer than a year", fn, field);
  return ms;
}

static int valid_path(const char *s) {
  if (!*s || *s == '.') return 0;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '.')) return 0;
  return s[-1] != '.';
}

static const char *const kind_names[] = {"count", "sum", "distinct", "topk", "baseline"};

/* fp.count{size=, step=} etc.; upvalue 1 = fp_win_kind_t. */
static int l_window(lua_State *L) {
  int kind = (int)lua_tointeger(L, lua_upvalueindex(1));
  char fn[32];
  snprintf(fn, sizeof fn, "fp.%s", kind_names[kind]);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (!k || (strcmp(k, "size") && strcmp(k, "step") && strcmp(k, "of")))
      return luaL_error(L, "%s: unknown field '%s' (fields: size, step%s)", fn,
                        k ? k : luaL_typename(L, -2),
                        kind == FP_WIN_COUNT || kind == FP_WIN_BASELINE ? "" : ", of");
    lua_pop(L, 1);
  }
  int64_t size = arg_duration(L, 1, "size", fn, -1);
  int64_t step = arg_duration(L, 1, "step", fn, size % 10 == 0 ? size / 10 : size);
  if (step > size || size % step)
    return luaL_error(L, "%s: size (%I ms) is not a whole multiple of step (%I ms)", fn,
                      (lua_Integer)size, (lua_Integer)step);
  if (kind == FP_WIN_BASELINE && size / step < 2)
    return luaL_error(L, "%s: a baseline needs at least 2 steps", fn);
  if (size / step > 10080)
    return luaL_error(L, "%s: too many steps (%I, limit 10080)", fn, (lua_Integer)(size / step));
  int ofty = lua_getfield(L, 1, "of");
  if (kind == FP_WIN_COUNT || kind == FP_WIN_BASELINE) {
    if (ofty != LUA_TNIL) return luaL_error(L, "%s: takes no 'of'", fn);
  } else if (ofty == LUA_TNIL) {
    return luaL_error(L, "%s: missing 'of' (a field path such as \"author.id\", or a function(m))",
                      fn);
  } else if (ofty == LUA_TSTRING) {
    if (!valid_path(lua_tostring(L, -1)))
      return luaL_error(L, "%s: bad field path '%s'", fn, lua_tostring(L, -1));
  } else if (ofty != LUA_TFUNCTION) {
    return luaL_error(L, "%s: 'of' must be a field path or a function", fn);
  }
  int of = lua_gettop(L);

  lua_createtable(L, 0, 6);
  lua_pushinteger(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, size);
  lua_setfield(L, -2, "size_ms");
  lua_pushinteger(L, step);
  lua_setfield(L, -2, "step_ms");
  lua_pushvalue(L, of);
  lua_setfield(L, -2, "of");
  lua_pushinteger(L, caller_line(L));
  lua_setfield(L, -2, "line");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &k_seq);
  lua_Integer seq = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, seq);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &k_seq);
  lua_pushinteger(L, seq);
  lua_setfield(L, -2, "seq");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &k_windows);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

static int valid_ident(const char *s, size_t maxlen, int dots) {
  size_t n = strlen(s);
  if (!n || n > maxlen) return 0;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || (dots && (*s == '.' || *s == '-'))))
      return 0;
  return 1;
}

static void opt_type(lua_State *L, int t, const char *f, int type, int required) {
  int ty = lua_getfield(L, t, f);
  if (ty == LUA_TNIL && !required) {
    lua_pop(L, 1);
    return;
  }
  if (ty == LUA_TNIL) luaL_error(L, "fp.rule: missing '%s'", f);
  if (ty != type)
    luaL_error(L, "fp.rule: '%s' must be a %s, not a %s", f, lua_typename(L, type),
               lua_typename(L, ty));
  if (ty == LUA_TSTRING) { /* it ends up in incident JSON */
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    if (!fp_utf8_valid(v, n)) luaL_error(L, "fp.rule: '%s' is not valid UTF-8", f);
  }
  lua_pop(L, 1);
}

/* fp.rule{...}: validates the contract where it is written; returns the table. */
static int l_rule(lua_State *L) {
  static const char *const fields[] = {"id", "version", "description", "owner", "key",
                                       "when", "windows", "severity", "resolve_after",
                                       "respond", "topics", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int ok = 0;
    for (size_t i = 0; k && fields[i]; i++) ok |= strcmp(k, fields[i]) == 0;
    if (!ok)
      return luaL_error(L, "fp.rule: unknown field '%s'", k ? k : luaL_typename(L, -2));
    lua_pop(L, 1);
  }
  opt_type(L, 1, "id", LUA_TSTRING, 1);
  lua_getfield(L, 1, "id");
  if (!valid_ident(lua_tostring(L, -1), 64, 1))
    return luaL_error(L, "fp.rule: bad id '%s' (1-64 of A-Z a-z 0-9 _ . -)", lua_tostring(L, -1));
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "version") != LUA_TNIL &&
      (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 1000000000))
    return luaL_error(L, "fp.rule: 'version' must be a positive integer");
  lua_pop(L, 1);
  opt_type(L, 1, "description", LUA_TSTRING, 0);
  opt_type(L, 1, "owner", LUA_TSTRING, 0);
  opt_type(L, 1, "respond", LUA_TSTRING, 0);
  opt_type(L, 1, "when", LUA_TFUNCTION, 0);
  opt_type(L, 1, "severity", LUA_TFUNCTION, 1);
  int kt = lua_getfield(L, 1, "key");
  if (kt == LUA_TNIL) return luaL_error(L, "fp.rule: missing 'key' (a field path or function(m))");
  if (kt == LUA_TSTRING && !valid_path(lua_tostring(L, -1)))
    return luaL_error(L, "fp.rule: bad key path '%s'", lua_tostring(L, -1));
  if (kt != LUA_TSTRING && kt != LUA_TFUNCTION)
    return luaL_error(L, "fp.rule: 'key' must be a field path or a function(m)");
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "resolve_after") != LUA_TNIL) {
    lua_pop(L, 1);
    arg_duration(L, 1, "resolve_after", "fp.rule", 0);
  } else {
    lua_pop(L, 1);
  }
  int wt = lua_getfield(L, 1, "windows");
  if (wt != LUA_TNIL) {
    if (wt != LUA_TTABLE) return luaL_error(L, "fp.rule: 'windows' must be a table");
    int w = lua_gettop(L), n = 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_windows);
    lua_pushnil(L);
    while (lua_next(L, w)) {
      if (lua_type(L, -2) != LUA_TSTRING || !valid_ident(lua_tostring(L, -2), 32, 0))
        return luaL_error(L, "fp.rule: window names must be identifiers of at most 32 chars");
      lua_pushvalue(L, -1);
      if (lua_rawget(L, w + 1) == LUA_TNIL)
        return luaL_error(L, "fp.rule: window '%s' is not an fp.count/sum/distinct/topk/baseline",
                          lua_tostring(L, -3));
      lua_pop(L, 2);
      if (++n > FP_RULE_MAX_WINDOWS)
        return luaL_error(L, "fp.rule: more than %d windows", FP_RULE_MAX_WINDOWS);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  int tt = lua_getfield(L, 1, "topics");
  if (tt != LUA_TNIL) {
    if (tt != LUA_TTABLE) return luaL_error(L, "fp.rule: 'topics' must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(k, "default") && (fp_sev_parse(k) <= 0))
        return luaL_error(L, "fp.rule: unknown severity '%s' in topics (default, sev1..sev4)", k);
      if (lua_type(L, -1) != LUA_TSTRING || !lua_rawlen(L, -1) || lua_rawlen(L, -1) > 249 ||
          !valid_ident(lua_tostring(L, -1), 249, 1))
        return luaL_error(L, "fp.rule: topics.%s must be a topic name (A-Z a-z 0-9 . _ -)", k);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &k_specs);
  lua_pushvalue(L, 1);
  lua_pushinteger(L, caller_line(L));
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_settop(L, 1);
  return 1;
}

/*
 * fp.sentiment(text). Memoised: upvalue 1 is the last text, upvalue 2 its score. The
 * example pack scores the same m.text in several rules, and the mention table hands out the
 * same string object each time, so the check is a pointer compare (lua_rawequal compares
 * contents for distinct long strings, so a hit is always correct).
 */
static int l_sentiment(lua_State *L) {
  size_t n;
  const char *s = luaL_optlstring(L, 1, "", &n);
  if (lua_rawequal(L, 1, lua_upvalueindex(1))) {
    lua_pushvalue(L, lua_upvalueindex(2));
    return 1;
  }
  lua_pushnumber(L, lexicon_sentiment(s, n));
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_copy(L, 1, lua_upvalueindex(1));
    lua_copy(L, -1, lua_upvalueindex(2));
  }
  return 1;
}

static int l_duration(lua_State *L) {
  int64_t ms;
  if (fp_duration_parse(luaL_checkstring(L, 1), &ms) != FP_OK)
    return luaL_error(L, "bad duration '%s'", lua_tostring(L, 1));
  lua_pushinteger(L, ms);
  return 1;
}

/* fp.terms(text): the words TOPK's of="terms" would count (array, at most 8). */
static int l_terms(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  terms_t T = {.n = 0};
  terms_of_text(&T, s, n);
  lua_createtable(L, (int)T.n, 0);
  for (size_t i = 0; i < T.n; i++) {
    lua_pushstring(L, T.t[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* ---- keyword matcher ----------------------------------------------------------------------- */

typedef struct {
  uint32_t n;
  uint8_t first[32];    /* bitmap of first bytes */
  uint16_t head[256];   /* first phrase starting with a byte, +1 (0: none) */
  uint16_t chain[1024]; /* next phrase with the same first byte, +1 (0: none) */
  uint32_t off[];       /* n+1 offsets into the phrase bytes that follow */
} kw_t;

static const char *kw_phrase(const kw_t *k, uint32_t i) {
  return (const char *)(k->off + k->n + 1) + k->off[i];
}

/* Matches phrase @p p (normalised: lower case, single spaces) at text[i]; returns the end
 * index or 0. A space matches a run of whitespace; the end must be a word boundary. */
static size_t kw_at(const char *s, size_t len, size_t i, const char *p) {
  while (*p) {
    if (i >= len) return 0;
    if (*p == ' ') {
      if (!isspace((unsigned char)s[i])) return 0;
      while (i < len && isspace((unsigned char)s[i])) i++;
      p++;
      continue;
    }
    if (tolower((unsigned char)s[i]) != (unsigned char)*p) return 0;
    i++, p++;
  }
  if (i < len && wordchar((unsigned char)s[i]) && wordchar((unsigned char)p[-1])) return 0;
  return i;
}

/* Calls back for each phrase found (each phrase reported once); stops when cb returns 1. */
static void kw_scan(const kw_t *k, const char *s, size_t len, uint8_t *seen,
                    int (*cb)(void *, uint32_t), void *ud) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)tolower((unsigned char)s[i]);
    if (!(k->first[c >> 3] & (1u << (c & 7)))) continue;
    if (i > 0 && wordchar((unsigned char)s[i - 1]) && wordchar(c)) continue;
    for (uint32_t j1 = k->head[c]; j1; j1 = k->chain[j1 - 1]) { /* phrases starting with c */
      uint32_t j = j1 - 1;
      if (seen[j >> 3] & (1u << (j & 7))) continue;
      const char *ph = kw_phrase(k, j);
      if (kw_at(s, len, i, ph)) {
        seen[j >> 3] |= (uint8_t)(1u << (j & 7));
        if (cb(ud, j)) return;
      }
    }
  }
}

static int kw_cb_first(void *ud, uint32_t j) {
  *(int64_t *)ud = j;
  return 1;
}
static int kw_cb_all(void *ud, uint32_t j) {
  (void)j;
  ++*(int64_t *)ud;
  return 0;
}

static const kw_t *kw_check(lua_State *L, size_t *len, const char **s) {
  const kw_t *k = luaL_checkudata(L, 1, "fp.keywords");
  *s = luaL_optlstring(L, 2, "", len);
  if (*len > FP_SANDBOX_MAX_SUBJECT) luaL_error(L, "keywords: text longer than 64 KiB");
  return k;
}

/* matcher:match(text) -> the first phrase found in text order, or nil. Also matcher(text). */
static int l_kw_match(lua_State *L) {
  size_t len;
  const char *s;
  const kw_t *k = kw_check(L, &len, &s);
  uint8_t seen[128] = {0};
  int64_t j = -1;
  kw_scan(k, s, len, seen, kw_cb_first, &j);
  if (j < 0) lua_pushnil(L);
  else lua_pushstring(L, kw_phrase(k, (uint32_t)j));
  return 1;
}

/* matcher:count(text) -> number of distinct phrases found. */
static int l_kw_count(lua_State *L) {
  size_t len;
  const char *s;
  const kw_t *k = kw_check(L, &len, &s);
  uint8_t seen[128] = {0};
  int64_t n = 0;
  kw_scan(k, s, len, seen, kw_cb_all, &n);
  lua_pushinteger(L, n);
  return 1;
}

/* matcher:all(text) -> array of the distinct phrases found, in list order. */
static int l_kw_all(lua_State *L) {
  size_t len;
  const char *s;
  const kw_t *k = kw_check(L, &len, &s);
  uint8_t seen[128] = {0};
  int64_t n = 0;
  kw_scan(k, s, len, seen, kw_cb_all, &n);
  lua_createtable(L, (int)n, 0);
  lua_Integer o = 1;
  for (uint32_t j = 0; j < k->n; j++)
    if (seen[j >> 3] & (1u << (j & 7))) {
      lua_pushstring(L, kw_phrase(k, j));
      lua_rawseti(L, -2, o++);
    }
  return 1;
}

/* fp.keywords{"recall", "food poisoning", ...} -> a case-insensitive, word-boundary matcher. */
static int l_keywords(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  if (n < 1 || n > 1024) return luaL_error(L, "fp.keywords: give 1 to 1024 phrases");
  size_t bytes = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING || lua_rawlen(L, -1) == 0 || lua_rawlen(L, -1) > 200)
      return luaL_error(L, "fp.keywords: phrase %d must be a non-empty string (<= 200 bytes)",
                        (int)i);
    bytes += lua_rawlen(L, -1) + 1;
    lua_pop(L, 1);
  }
  kw_t *k = lua_newuserdatauv(L, sizeof *k + (size_t)(n + 1) * sizeof(uint32_t) + bytes, 0);
  memset(k, 0, sizeof *k);
  k->n = (uint32_t)n;
  char *d = (char *)(k->off + n + 1);
  uint32_t o = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    size_t len;
    lua_rawgeti(L, 1, i);
    const char *p = lua_tolstring(L, -1, &len);
    k->off[i - 1] = o;
    size_t a = 0;
    while (a < len && isspace((unsigned char)p[a])) a++;
    int space = 0;
    for (; a < len; a++) {
      if (isspace((unsigned char)p[a])) {
        space = 1;
        continue;
      }
      if (space && o > k->off[i - 1]) d[o++] = ' ';
      space = 0;
      d[o++] = (char)tolower((unsigned char)p[a]);
    }
    if (o == k->off[i - 1]) return luaL_error(L, "fp.keywords: phrase %d is blank", (int)i);
    unsigned char c = (unsigned char)d[k->off[i - 1]];
    k->first[c >> 3] |= (uint8_t)(1u << (c & 7));
    if (!k->head[c]) { /* append to c's chain, keeping list order */
      k->head[c] = (uint16_t)i;
    } else {
      uint32_t t = k->head[c];
      while (k->chain[t - 1]) t = k->chain[t - 1];
      k->chain[t - 1] = (uint16_t)i;
    }
    d[o++] = '\0';
    lua_pop(L, 1);
  }
  k->off[n] = o;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &k_kwmeta);
  lua_setmetatable(L, -2);
  return 1;
}

/* w.<name>:per_minute() -> value per minute of window length. */
static int l_val_per_minute(lua_State *L) {
  lua_getfield(L, 1, "value");
  lua_getfield(L, 1, "size_ms");
  double v = lua_tonumber(L, -2), ms = lua_tonumber(L, -1);
  lua_pushnumber(L, ms > 0 ? v * 60000.0 / ms : 0.0);
  return 1;
}

/* Builds the fp table and the registry helpers (run under fp_sandbox_cpcall). */
static int setup_api(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &k_specs);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &k_windows);
  lua_pushinteger(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &k_seq);

  lazy_kit_new(L); /* the mention tables' parts (see "Mention tables") */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &k_kit);

  lua_createtable(L, 0, 4); /* keyword matcher metatable */
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, l_kw_match);
  lua_setfield(L, -2, "match");
  lua_pushcfunction(L, l_kw_count);
  lua_setfield(L, -2, "count");
  lua_pushcfunction(L, l_kw_all);
  lua_setfield(L, -2, "all");
  fp_sandbox_seal(L);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_kw_match);
  lua_setfield(L, -2, "__call");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
  lua_pushliteral(L, "fp.keywords");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "fp.keywords"); /* for luaL_checkudata */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &k_kwmeta);

  lua_createtable(L, 0, 12); /* fp */
  lua_pushcfunction(L, l_rule);
  lua_setfield(L, -2, "rule");
  for (int k = 0; k <= FP_WIN_BASELINE; k++) {
    lua_pushinteger(L, k);
    lua_pushcclosure(L, l_window, 1);
    lua_setfield(L, -2, kind_names[k]);
  }
  lua_pushcfunction(L, l_keywords);
  lua_setfield(L, -2, "keywords");
  lua_pushnil(L);
  lua_pushnumber(L, 0);
  lua_pushcclosure(L, l_sentiment, 2);
  lua_setfield(L, -2, "sentiment");
  lua_pushcfunction(L, l_duration);
  lua_setfield(L, -2, "duration");
  lua_pushcfunction(L, l_terms);
  lua_setfield(L, -2, "terms");
  lua_pushliteral(L, FP_VERSION_STR);
  lua_setfield(L, -2, "version");
  return 1;
}

/* ========================================================================================== */
/* Mention tables                                                                             */

/*
 * A mention reaches Lua as a lazy, read-only view of its JSON document. Building the whole
 * table tree per mention cost a third of stage 1, while rules read a handful of fields. Each
 * JSON object or array is an empty proxy table whose own metatable M (never reachable from
 * Lua: __metatable = "locked", no debug library) holds:
 *   __index     the cache C: a plain table of the fields converted so far, so a second read
 *               is one VM table lookup, no C call. C's metatable (one per state, in the kit)
 *               has __index = l_lazy_resolve, which converts the field from the document (a
 *               child object or array becomes another lazy proxy) and stores it in C;
 *   __newindex  an error (the mention is read-only, as before);
 *   __len       the array's length; __pairs iterates a converted snapshot.
 * C[&k_lazy] and M[&k_lazy] (a light-userdata key: no JSON key can collide, and Lua code
 * cannot make one) are the lazy_t userdata; M's copy lets the host recognise a proxy with
 * one lookup.
 * The document belongs to the caller and is only valid until fp_rules_release(): the release
 * clears `valid`, after which an unconverted read raises "mention table used after its
 * evaluation ended" instead of touching freed memory (a rule may keep `m` in an upvalue).
 * Seen from Lua nothing else changed: type(m) == "table", rawget/rawlen/next see an empty
 * table, and the derived fields (created_at_ms, _offset, brand and sentiment fallbacks) read
 * as before. JSON nulls read as nil; containers deeper than MAX_MENTION_DEPTH read as nil.
 *
 * Every proxy costs four objects (P, M, C, the userdata), made for each mention, so their
 * construction is the hot path of stage 1: the kit (a registry array, also upvalue 1 of
 * l_lazy_resolve) holds the metamethod names already interned and C's metatable, so a proxy
 * is filled with raw sets and no string is looked up; tables are created at their final
 * size, so the first reads do not rehash.
 */
static char k_lazy; /* key of the lazy_t userdata in C and M */

enum { /* kit slots */
  KIT_CMETA = 1, KIT_INDEX, KIT_NEWINDEX, KIT_LEN, KIT_PAIRS, KIT_METATABLE, KIT_LOCKED, KIT_N
};

/* Cache slots of the top-level table: the fields rules read (text, sentiment, author, ...)
 * plus k_lazy fit without a rehash. Nested objects get room for three fields. */
#define LAZY_TOP_SLOTS 8
#define LAZY_SLOTS 4

typedef struct mstate_s {
  int valid;                  /* 0 once released */
  const char *brand;          /* fallback when the document has no brand (borrowed) */
  int64_t created_at_ms, offset;
  double sentiment;
  int has_sentiment;
} mstate_t;

typedef struct lazy_s {
  const json_t *v;            /* the object or array (borrowed from the mention document) */
  mstate_t *ms;               /* the mention's state (kept alive by the user value) */
  int depth;                  /* 0 for the mention itself */
} lazy_t;

typedef struct {
  lazy_t l;
  mstate_t ms;
} lazy_top_t;

static int l_lazy_newindex(lua_State *L) {
  return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

/* The lazy_t behind proxy @p idx, or NULL if it is not a lazy mention table. */
static lazy_t *lazy_of(lua_State *L, int idx) {
  lazy_t *z = NULL;
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return NULL;
  if (lua_rawgetp(L, -1, &k_lazy) == LUA_TUSERDATA) z = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return z;
}

/* The lazy_t of proxy 1 (a metamethod's self); raises if it was released. */
static lazy_t *lazy_self(lua_State *L) {
  lazy_t *z = lazy_of(L, 1);
  if (!z) luaL_error(L, "not a mention table");
  if (!z->ms->valid) luaL_error(L, "mention table used after its evaluation ended");
  return z;
}

static int l_lazy_len(lua_State *L) {
  lazy_t *z = lazy_self(L);
  lua_pushinteger(L, json_is_array(z->v) ? (lua_Integer)json_array_size(z->v) : 0);
  return 1;
}

static lazy_t *lazy_push(lua_State *L, int kit, const json_t *v, mstate_t *ms, int depth,
                         int owner);

/* Converts JSON value @p v (a child of lazy @p z, whose userdata is at @p zidx) and pushes
 * it; pushes nil for null and for containers past the depth limit. */
static void lazy_value(lua_State *L, int kit, const lazy_t *z, int zidx, const json_t *v) {
  switch (v ? json_typeof(v) : JSON_NULL) {
  case JSON_OBJECT:
  case JSON_ARRAY:
    if (z->depth + 1 >= MAX_MENTION_DEPTH) lua_pushnil(L);
    else lazy_push(L, kit, v, z->ms, z->depth + 1, zidx);
    return;
  case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return;
  case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); return;
  case JSON_REAL: lua_pushnumber(L, json_real_value(v)); return;
  case JSON_TRUE: lua_pushboolean(L, 1); return;
  case JSON_FALSE: lua_pushboolean(L, 0); return;
  default: lua_pushnil(L); return;
  }
}

/* Pushes field @p k (@p n bytes) of object lazy @p z, with the mention's derived fields at
 * the top level. */
static void lazy_field(lua_State *L, int kit, const lazy_t *z, int zidx, const char *k,
                       size_t n) {
  const json_t *v = json_is_object(z->v) ? json_object_getn(z->v, k, n) : NULL;
  if (z->depth == 0) {
    const mstate_t *ms = z->ms;
    if (n == 13 && memcmp(k, "created_at_ms", 13) == 0) {
      lua_pushinteger(L, ms->created_at_ms);
      return;
    }
    if (n == 7 && memcmp(k, "_offset", 7) == 0) {
      lua_pushinteger(L, ms->offset);
      return;
    }
    if (n == 9 && memcmp(k, "sentiment", 9) == 0 && ms->has_sentiment && !json_is_number(v)) {
      lua_pushnumber(L, ms->sentiment);
      return;
    }
    if (n == 5 && memcmp(k, "brand", 5) == 0 && (!v || json_is_null(v)) && ms->brand) {
      lua_pushstring(L, ms->brand);
      return;
    }
  }
  lazy_value(L, kit, z, zidx, v);
}

/* C's __index(C, key), on a cache miss: stack 1 cache, 2 key, 3 userdata; upvalue 1 is the
 * kit. */
static int l_lazy_resolve(lua_State *L) {
  lazy_t *z;
  int kit = lua_upvalueindex(1);
  lua_settop(L, 2);
  lua_rawgetp(L, 1, &k_lazy);
  z = lua_touserdata(L, 3);
  if (!z) return 0;
  if (!z->ms->valid) return luaL_error(L, "mention table used after its evaluation ended");
  if (lua_type(L, 2) == LUA_TSTRING && json_is_object(z->v)) {
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    lazy_field(L, kit, z, 3, k, n);
  } else if (lua_isinteger(L, 2) && json_is_array(z->v)) {
    lua_Integer i = lua_tointeger(L, 2);
    if (i < 1 || (size_t)i > json_array_size(z->v)) return 0;
    lazy_value(L, kit, z, 3, json_array_get(z->v, (size_t)i - 1));
  } else {
    return 0;
  }
  if (!lua_isnil(L, -1)) { /* the next read is a plain lookup in C */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
  }
  return 1;
}

static int l_snapshot_next(lua_State *L) {
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  return 0;
}

/* __pairs(proxy): iterates a fresh snapshot (a private plain table of converted fields;
 * nested tables in it are the same read-only proxies m.<field> gives). */
static int l_lazy_pairs(lua_State *L) {
  lua_settop(L, 1);
  lazy_t *z = lazy_self(L);
  lua_newtable(L); /* 2: snapshot */
  if (json_is_object(z->v)) {
    const char *k;
    size_t klen;
    json_t *c;
    json_object_keylen_foreach((json_t *)z->v, k, klen, c) {
      lua_pushlstring(L, k, klen);
      lua_pushvalue(L, -1);
      if (lua_gettable(L, 1) == LUA_TNIL) lua_pop(L, 2); /* through __index: cached, same proxies */
      else lua_rawset(L, 2);
    }
    if (z->depth == 0) {
      static const char *const derived[] = {"created_at_ms", "_offset", "sentiment", "brand"};
      for (size_t i = 0; i < sizeof derived / sizeof *derived; i++) {
        lua_pushstring(L, derived[i]);
        lua_pushvalue(L, -1);
        if (lua_gettable(L, 1) == LUA_TNIL) lua_pop(L, 2);
        else lua_rawset(L, 2);
      }
    }
  } else if (json_is_array(z->v)) {
    for (size_t i = 0; i < json_array_size(z->v); i++) {
      if (lua_geti(L, 1, (lua_Integer)i + 1) == LUA_TNIL) lua_pop(L, 1);
      else lua_rawseti(L, 2, (lua_Integer)i + 1);
    }
  }
  lua_pushcfunction(L, l_snapshot_next);
  lua_insert(L, 2);
  lua_pushnil(L);
  return 3;
}

/* Pushes a proxy for object/array @p v of mention @p ms and @returns its lazy_t. @p kit is
 * the (absolute or upvalue) index of the kit. @p owner is the stack index of a userdata
 * that keeps @p ms alive, or 0 for the mention itself (whose userdata holds it). */
static lazy_t *lazy_push(lua_State *L, int kit, const json_t *v, mstate_t *ms, int depth,
                         int owner) {
  lazy_t *z;
  if (owner) owner = lua_absindex(L, owner);
  luaL_checkstack(L, 6, "mention table");
  lua_createtable(L, 0, 0);          /* proxy P */
  lua_createtable(L, 0, 6);          /* its metatable M: 5 metafields and k_lazy */
  lua_rawgeti(L, kit, KIT_INDEX);
  lua_createtable(L, 0, depth ? LAZY_SLOTS : LAZY_TOP_SLOTS); /* the cache C */
  lua_rawgeti(L, kit, KIT_CMETA);
  lua_setmetatable(L, -2);
  if (!owner) {
    lazy_top_t *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    t->l.ms = &t->ms;
    z = &t->l;
  } else {
    z = lua_newuserdatauv(L, sizeof *z, 1);
    lua_pushvalue(L, owner);
    lua_setiuservalue(L, -2, 1);
    z->ms = ms;
  }
  z->v = v;
  z->depth = depth;
  lua_pushvalue(L, -1);              /* P M "__index" C U U */
  lua_rawsetp(L, -3, &k_lazy);       /* C[&k_lazy] = U */
  lua_rawsetp(L, -4, &k_lazy);       /* M[&k_lazy] = U */
  lua_rawset(L, -3);                 /* M.__index = C */
  lua_rawgeti(L, kit, KIT_NEWINDEX);
  lua_pushcfunction(L, l_lazy_newindex);
  lua_rawset(L, -3);
  lua_rawgeti(L, kit, KIT_LEN);
  lua_pushcfunction(L, l_lazy_len);
  lua_rawset(L, -3);
  lua_rawgeti(L, kit, KIT_PAIRS);
  lua_pushcfunction(L, l_lazy_pairs);
  lua_rawset(L, -3);
  lua_rawgeti(L, kit, KIT_METATABLE);
  lua_rawgeti(L, kit, KIT_LOCKED);
  lua_rawset(L, -3);
  lua_setmetatable(L, -2);
  return z;
}

/* Pushes the kit: the metamethod names lazy_push sets, interned once, and C's metatable
 * {__index = l_lazy_resolve (with the kit as upvalue), __metatable = "locked"}. */
static void lazy_kit_new(lua_State *L) {
  static const char *const names[] = {
      [KIT_INDEX] = "__index", [KIT_NEWINDEX] = "__newindex", [KIT_LEN] = "__len",
      [KIT_PAIRS] = "__pairs", [KIT_METATABLE] = "__metatable", [KIT_LOCKED] = "locked"};
  lua_createtable(L, KIT_N - 1, 0);
  for (int i = KIT_INDEX; i < KIT_N; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i);
  }
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_lazy_resolve, 1);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
  lua_rawseti(L, -2, KIT_CMETA);
}

typedef struct mention_arg_s {
  const fp_mention_t *m;
  int64_t offset;
} mention_arg_t;

/* cpcall body: pushes the mention's lazy table and returns a registry ref as an integer.
 * Besides the document's fields it carries created_at_ms and `_offset`, the input offset
 * (rules may use it to check ordering; it is not part of the mention). */
static int build_mention(lua_State *L) {
  const mention_arg_t *arg = lua_touserdata(L, 1);
  const fp_mention_t *m = arg->m;
  const json_t *doc = m->doc && json_is_object(m->doc) ? m->doc : empty_doc;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &k_kit);
  lazy_top_t *t = (lazy_top_t *)lazy_push(L, lua_gettop(L), doc, NULL, 0, 0);
  t->ms.valid = 1;
  t->ms.brand = m->brand;
  t->ms.created_at_ms = m->created_at_ms;
  t->ms.offset = arg->offset;
  t->ms.sentiment = m->sentiment;
  t->ms.has_sentiment = m->has_sentiment;
  lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
  return 1;
}

/* ---- field paths on the JSON document ------------------------------------------------------ */

static json_t *json_path(const fp_mention_t *m, const char *path) {
  json_t *cur = m->doc;
  const char *p = path;
  while (cur && *p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (json_is_object(cur)) {
      cur = json_object_getn(cur, p, n);
    } else if (json_is_array(cur)) {
      int64_t idx = 0;
      for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]) || idx > 1000000) return NULL;
        idx = idx * 10 + (p[i] - '0');
      }
      cur = idx >= 1 ? json_array_get(cur, (size_t)idx - 1) : NULL;
    } else {
      return NULL;
    }
    p = dot ? dot + 1 : p + n;
  }
  return json_is_null(cur) ? NULL : cur;
}

/* Writes @p v as "%lld" would into @p buf (@p size >= 21) and @returns the length. DISTINCT
 * members and keys are often integers (ids, history steps), once per rule per mention:
 * snprintf costs more than the rest of the op. */
static size_t fmt_int(char *buf, size_t size, long long v) {
  char tmp[24];
  size_t n = 0;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) tmp[n++] = '-';
  if (n >= size) return (size_t)snprintf(buf, size, "%lld", v); /* cannot happen */
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  buf[n] = '\0';
  return n;
}

/* A path's value as text into @p buf; @returns NULL when missing or not a scalar. */
static const char *path_text(const fp_mention_t *m, const char *path, char *buf, size_t size,
                             size_t *len) {
  json_t *v = json_path(m, path);
  if (!v && strcmp(path, "brand") == 0 && m->brand) {
    *len = strlen(m->brand);
    return m->brand;
  }
  switch (v ? json_typeof(v) : JSON_NULL) {
  case JSON_STRING: *len = json_string_length(v); return json_string_value(v);
  case JSON_INTEGER: *len = fmt_int(buf, size, (long long)json_integer_value(v)); return buf;
  case JSON_REAL: *len = (size_t)snprintf(buf, size, "%.14g", json_real_value(v)); return buf;
  case JSON_TRUE: *len = 4; return "true";
  case JSON_FALSE: *len = 5; return "false";
  default: return NULL;
  }
}

static double path_number(const fp_mention_t *m, const char *path) {
  json_t *v = json_path(m, path);
  double d;
  if (!v) return 0;
  if (json_is_number(v)) return json_number_value(v);
  if (json_is_true(v)) return 1;
  if (json_is_string(v) && fp_parse_double(json_string_value(v), &d) == FP_OK && isfinite(d))
    return d;
  return 0;
}

/* Lua value at @p idx as text, without allocating in Lua; NULL for nil/false/other types. */
static const char *lua_text(lua_State *L, int idx, char *buf, size_t size, size_t *len) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: return lua_tolstring(L, idx, len);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      *len = fmt_int(buf, size, (long long)lua_tointeger(L, idx));
    else
      *len = (size_t)snprintf(buf, size, "%.14g", (double)lua_tonumber(L, idx));
    return buf;
  case LUA_TBOOLEAN:
    if (!lua_toboolean(L, idx)) return NULL;
    *len = 4;
    return "true";
  default: return NULL;
  }
}

/* ========================================================================================== */
/* Loading                                                                                    */

static void rule_free(rule_t *r) {
  free((char *)r->info.id);
  free((char *)r->info.description);
  free((char *)r->info.owner);
  free((char *)r->info.file);
  free((char *)r->info.respond);
  for (int i = 0; i < 5; i++) {
    int dup = 0;
    for (int j = 0; j < i; j++) dup |= r->info.topics[j] == r->info.topics[i];
    if (!dup) free((char *)r->info.topics[i]);
  }
  for (size_t w = 0; w < r->info.nwindows; w++) {
    free((char *)r->info.windows[w].name);
    free((char *)r->info.windows[w].of);
  }
  free(r->key_path);
}

static char *dup_field(lua_State *L, int t, const char *f) {
  char *s = NULL;
  if (lua_getfield(L, t, f) == LUA_TSTRING) s = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  return s;
}

typedef struct {
  rule_t *r;
  int ok;
} extract_t;

/* cpcall body: spec table at 1, extract_t at 2. Fills the rule; refs its functions. */
static int extract_rule(lua_State *L) {
  extract_t *x = lua_touserdata(L, 2);
  rule_t *r = x->r;
  int64_t ms;
  r->info.id = dup_field(L, 1, "id");
  r->info.description = dup_field(L, 1, "description");
  r->info.owner = dup_field(L, 1, "owner");
  r->info.respond = dup_field(L, 1, "respond");
  if (!r->info.id) return luaL_error(L, "out of memory");
  r->info.version = lua_getfield(L, 1, "version") == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : 1;
  lua_pop(L, 1);
  r->info.resolve_after_ms = 30 * 60 * 1000;
  if (lua_getfield(L, 1, "resolve_after") == LUA_TSTRING &&
      fp_duration_parse(lua_tostring(L, -1), &ms) == FP_OK)
    r->info.resolve_after_ms = ms;
  else if (lua_isinteger(L, -1))
    r->info.resolve_after_ms = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "topics") == LUA_TTABLE) {
    char *dflt = dup_field(L, 2 + 1, "default");
    for (int s = 0; s <= FP_SEV1; s++) {
      char *t = s ? dup_field(L, 3, sev_names[s]) : NULL;
      r->info.topics[s] = t ? t : dflt;
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "key") == LUA_TSTRING) {
    r->key_path = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    r->key_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (lua_getfield(L, 1, "when") == LUA_TFUNCTION) r->when_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  else lua_pop(L, 1);
  lua_getfield(L, 1, "severity");
  r->sev_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  /* windows, in declaration order (constructor sequence numbers) */
  struct { lua_Integer seq; int idx; } order[FP_RULE_MAX_WINDOWS];
  size_t n = 0;
  lua_settop(L, 2);
  if (lua_getfield(L, 1, "windows") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, 3) && n < FP_RULE_MAX_WINDOWS) {
      lua_getfield(L, -1, "seq");
      lua_Integer seq = lua_tointeger(L, -1);
      lua_pop(L, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);                 /* k k v */
      order[n].seq = seq;
      order[n].idx = lua_gettop(L) - 1;  /* keep name and window on the stack */
      n++;
      luaL_checkstack(L, 4, "windows");
      lua_pushvalue(L, -2);              /* k k v k: next key */
    }
  }
  for (size_t i = 1; i < n; i++) /* insertion sort by sequence number */
    for (size_t j = i; j > 0 && order[j - 1].seq > order[j].seq; j--) {
      __typeof__(order[0]) t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }

  lua_createtable(L, 0, (int)n); /* w (real) */
  int wt = lua_gettop(L);
  for (size_t i = 0; i < n; i++) {
    fp_rule_window_t *w = &r->info.windows[i];
    int name = order[i].idx, win = name + 1;
    r->info.nwindows = i + 1;
    w->name = strdup(lua_tostring(L, name));
    lua_getfield(L, win, "kind");
    w->spec.kind = (fp_win_kind_t)lua_tointeger(L, -1);
    lua_getfield(L, win, "size_ms");
    w->spec.size_ms = lua_tointeger(L, -1);
    lua_getfield(L, win, "step_ms");
    w->spec.step_ms = lua_tointeger(L, -1);
    lua_pop(L, 3);
    if (lua_getfield(L, win, "of") == LUA_TSTRING) {
      w->of = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    } else if (lua_isfunction(L, -1)) {
      r->of_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
      w->of = strdup("(function)");
    } else {
      lua_pop(L, 1);
    }
    if (!w->name) return luaL_error(L, "out of memory");
    lua_createtable(L, 0, 8); /* the value table the rule sees as w.<name> */
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, "value");
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, "mean");
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, "stddev");
    lua_pushinteger(L, w->spec.size_ms);
    lua_setfield(L, -2, "size_ms");
    lua_pushinteger(L, w->spec.step_ms);
    lua_setfield(L, -2, "step_ms");
    lua_pushstring(L, kind_names[w->spec.kind]);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, w->name);
    lua_setfield(L, -2, "name");
    lua_pushcfunction(L, l_val_per_minute);
    lua_setfield(L, -2, "per_minute");
    lua_pushvalue(L, -1);
    r->val_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    fp_sandbox_seal(L);
    lua_setfield(L, wt, w->name);
  }
  lua_settop(L, wt);
  fp_sandbox_seal(L);
  r->w_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  x->ok = 1;
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fp_buf_t b = {0};
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b.len + n > MAX_RULE_FILE || fp_buf_append(&b, chunk, n) != FP_OK) {
      fclose(f);
      fp_buf_free(&b);
      return -2;
    }
  }
  fclose(f);
  if (!b.data && fp_buf_append(&b, "", 0) != FP_OK) return -2;
  *buf = b.data;
  *len = b.len;
  return 0;
}

/* Loads one file into rule @p r. */
static fp_err_t load_file(fp_rules_t *rs, rule_t *r, const char *path, char *errstr,
                          size_t errstr_size) {
  lua_State *L = fp_sandbox_lua(rs->sb);
  char *src = NULL, chunk[4200], msg[512];
  size_t len;
  fp_err_t err;
  int rc = read_file(path, &src, &len);
  if (rc) return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s:1: %s", path,
                           rc == -1 ? strerror(errno) : "file larger than 1 MiB");
  uint64_t h = fp_fnv1a(FP_FNV_INIT, src, len);
  snprintf(r->info.hash, sizeof r->info.hash, "%016llx", (unsigned long long)h);
  r->info.file = strdup(path);
  snprintf(chunk, sizeof chunk, "@%s", path);
  if (rs->strikes_dir) { /* this very file hung while loading, again and again */
    const char *base = strrchr(path, '/');
    char key[300];
    base = base ? base + 1 : path;
    if (strlen(base) > sizeof key - 6) base += strlen(base) - (sizeof key - 6);
    memcpy(key, "load-", 5);
    memcpy(key + 5, base, strlen(base) + 1);
    unsigned n = fp_sandbox_strikes(rs->strikes_dir, key, r->info.hash);
    if (n >= rs->lim.strikes_quarantine) {
      free(src);
      return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD,
                       "%s:1: the watchdog stopped this file %u times while it loaded; fix it "
                       "(a changed file starts again from 0 strikes)", path, n);
    }
  }
  r->label.rule_id = NULL; /* not known until the file has run */
  r->label.file = r->info.file;
  r->label.hash = r->info.hash;
  fp_sandbox_set_label(rs->sb, &r->label);

  fp_sandbox_push_env(rs->sb);
  err = fp_sandbox_load(rs->sb, src, len, chunk, msg, sizeof msg);
  free(src);
  if (err && strncmp(msg, path, strlen(path)) == 0)
    return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s", msg);
  if (err) return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s:1: %s", path, msg);
  err = fp_sandbox_pcall(rs->sb, 0, 1, msg, sizeof msg);
  if (err) {
    if (strncmp(msg, path, strlen(path)) == 0)
      return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s", msg);
    return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s:1: %s", path, msg);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &k_specs);
  lua_pushvalue(L, -2);
  lua_rawget(L, -2);
  if (!lua_isinteger(L, -1)) {
    lua_pop(L, 3);
    return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD,
                     "%s:1: a rule file must return fp.rule{...}", path);
  }
  r->line = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  extract_t x = {r, 0};
  err = fp_sandbox_cpcall(rs->sb, extract_rule, &x, 1, 0, msg, sizeof msg);
  if (err || !x.ok)
    return fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s:%d: %s", path, r->line, msg);
  r->label.rule_id = r->info.id;
  if (rs->strikes_dir) {
    unsigned n = fp_sandbox_strikes(rs->strikes_dir, r->info.id, r->info.hash);
    if (n >= rs->lim.strikes_quarantine) {
      r->info.quarantined = 1;
      fp_log(FP_LOG_WARN, "rules", "rule %s (%s) quarantined: the watchdog stopped it %u times "
             "(strikes in %s); fix the rule (a changed file starts again from 0 strikes)",
             r->info.id, path, n, rs->strikes_dir);
    }
  }
  return FP_OK;
}

static void rule_refs_init(rule_t *r) {
  r->key_ref = r->when_ref = r->sev_ref = r->w_ref = LUA_NOREF;
  for (int i = 0; i < FP_RULE_MAX_WINDOWS; i++) r->of_ref[i] = r->val_ref[i] = LUA_NOREF;
}

fp_rules_t *fp_rules_new(const char *dir, const fp_rules_limits_t *limits, char *errstr,
                         size_t errstr_size) {
  fp_rules_t *rs = NULL;
  char **names = NULL;
  size_t nnames = 0, cap = 0;
  char path[4096], msg[512];
  DIR *d = NULL;

  pthread_once(&tables_once, tables_sort);
  if (!dir) {
    fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "no rules directory");
    return NULL;
  }
  if (!(rs = calloc(1, sizeof *rs))) goto nomem;
  rs->tag = (int)(atomic_fetch_add(&rules_tag_seq, 1) % MREF_TAGS) + 1;
  rs->lim.mem_bytes = limits && limits->mem_bytes ? limits->mem_bytes : 64u * 1024 * 1024;
  rs->lim.instructions = limits && limits->instructions ? limits->instructions : 1000000;
  rs->lim.deadline_ms = limits && limits->deadline_ms > 0 ? limits->deadline_ms : 250;
  rs->lim.quarantine_after = limits && limits->quarantine_after ? limits->quarantine_after : 5;
  rs->lim.strikes_quarantine = limits && limits->strikes_quarantine ? limits->strikes_quarantine : 3;
  if (limits && limits->strikes_dir && *limits->strikes_dir &&
      !(rs->strikes_dir = strdup(limits->strikes_dir)))
    goto nomem;
  rs->lim.strikes_dir = rs->strikes_dir;

  if (!(d = opendir(dir))) {
    fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s:1: cannot open rules directory: %s",
              dir, strerror(errno));
    goto err;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    struct stat st;
    if (n < 5 || e->d_name[0] == '.' || strcmp(e->d_name + n - 4, ".lua")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
    if (nnames == cap) {
      cap = cap ? cap * 2 : 16;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) goto nomem;
      names = p;
    }
    if (!(names[nnames] = strdup(e->d_name))) goto nomem;
    nnames++;
  }
  closedir(d);
  d = NULL;
  if (nnames) qsort(names, nnames, sizeof *names, cmp_names);

  snprintf(path, sizeof path, "%s/lib", dir);
  fp_sandbox_limits_t sl = {rs->lim.mem_bytes, rs->lim.instructions, rs->lim.deadline_ms};
  if (!(rs->sb = fp_sandbox_new(&sl, path, errstr, errstr_size))) goto err;
  if (fp_sandbox_cpcall(rs->sb, setup_api, NULL, 0, 1, msg, sizeof msg) != FP_OK) {
    fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "rules API setup: %s", msg);
    goto err;
  }
  if (fp_sandbox_add_global(rs->sb, "fp") != FP_OK) goto nomem;

  if (nnames && !(rs->rules = calloc(nnames, sizeof *rs->rules))) goto nomem;
  for (size_t i = 0; i < nnames; i++) {
    rule_t *r = &rs->rules[i];
    rule_refs_init(r);
    rs->n = i + 1;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (load_file(rs, r, path, errstr, errstr_size) != FP_OK) goto err;
    for (size_t j = 0; j < i; j++)
      if (strcmp(rs->rules[j].info.id, r->info.id) == 0) {
        fp_seterr(errstr, errstr_size, FP_ERR_RULE_LOAD, "%s:%d: duplicate rule id '%s' (also in %s:%d)",
                  path, r->line, r->info.id, rs->rules[j].info.file, rs->rules[j].line);
        goto err;
      }
  }
  for (size_t i = 0; i < nnames; i++) free(names[i]);
  free(names);
  return rs;
nomem:
  fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "out of memory loading rules");
err:
  if (d) closedir(d);
  for (size_t i = 0; i < nnames; i++) free(names[i]);
  free(names);
  fp_rules_destroy(rs);
  return NULL;
}

void fp_rules_destroy(fp_rules_t *rs) {
  if (!rs) return;
  for (size_t i = 0; i < rs->n; i++) rule_free(&rs->rules[i]);
  free(rs->rules);
  fp_sandbox_destroy(rs->sb);
  free(rs->strikes_dir);
  free(rs);
}

size_t fp_rules_count(const fp_rules_t *rs) { return rs ? rs->n : 0; }

const fp_rule_info_t *fp_rules_info(const fp_rules_t *rs, size_t i) {
  return rs && i < rs->n ? &rs->rules[i].info : NULL;
}

/* ========================================================================================== */
/* Evaluation                                                                                 */

static void rule_failed(fp_rules_t *rs, rule_t *r, fp_err_t err, const char *stage,
                        const char *msg) {
  r->failures++;
  r->consecutive++;
  r->info.failures = r->failures;
  if (r->failures == 1)
    fp_log(FP_LOG_WARN, "rules", "rule %s failed in %s (%s): %s; further failures are counted",
           r->info.id, stage, fp_err_name(err), msg);
  if (!r->info.quarantined && r->consecutive >= rs->lim.quarantine_after) {
    r->info.quarantined = 1;
    fp_log(FP_LOG_WARN, "rules", "rule %s quarantined after %u consecutive failures (last: %s)",
           r->info.id, r->consecutive, msg);
  }
}

static void rule_ok(rule_t *r) { r->consecutive = 0; }

/* Calls registry function @p ref with the mention; leaves 1 result. */
static fp_err_t call_m(fp_rules_t *rs, int ref, int mref, char *msg, size_t size) {
  lua_State *L = fp_sandbox_lua(rs->sb);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, mref_ref(rs, mref)); /* nil for a foreign handle */
  return fp_sandbox_pcall(rs->sb, 1, 1, msg, size);
}

/* Pushes the table a sealed proxy at @p idx stands for (or the table itself). */
static void push_raw_view(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getmetatable(L, idx)) {
    lua_pushliteral(L, "__index");
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 2);
  }
  lua_pushvalue(L, idx);
}

/* Appends the window ops of rule @p r for the mention; @returns FP_OK or a rule failure. */
static fp_err_t rule_ops(fp_rules_t *rs, rule_t *r, const fp_mention_t *m, int mref,
                         int64_t offset, const char *entity, fp_opvec_t *ops, char *msg,
                         size_t size) {
  lua_State *L = fp_sandbox_lua(rs->sb);
  char kbuf[512], nbuf[64];
  for (size_t w = 0; w < r->info.nwindows; w++) {
    const fp_rule_window_t *win = &r->info.windows[w];
    size_t li = strlen(r->info.id), le = strlen(entity), lw = strlen(win->name);
    memcpy(kbuf, r->info.id, li); /* id <= 64, entity <= 127, name <= 32: fits */
    kbuf[li] = '|';
    memcpy(kbuf + li + 1, entity, le);
    kbuf[li + 1 + le] = '|';
    memcpy(kbuf + li + 2 + le, win->name, lw);
    char *key = opvec_strdup(ops, kbuf, li + 2 + le + lw);
    if (!key) return fp_seterr(msg, size, FP_ERR_NOMEM, "out of memory");
    double amount = 1;
    const char *member = NULL;
    size_t mlen = 0;
    terms_t T = {.n = 0};
    int have_fn = r->of_ref[w] != LUA_NOREF;
    if (have_fn) {
      fp_err_t e = call_m(rs, r->of_ref[w], mref, msg, size);
      if (e) return e;
    }
    switch (win->spec.kind) {
    case FP_WIN_SUM:
      if (have_fn) {
        int t = lua_type(L, -1);
        amount = t == LUA_TNUMBER ? lua_tonumber(L, -1) : t == LUA_TBOOLEAN ? lua_toboolean(L, -1) : 0;
        if (t == LUA_TSTRING && fp_parse_double(lua_tostring(L, -1), &amount) != FP_OK) amount = 0;
        if (!isfinite(amount)) amount = 0;
      } else {
        amount = path_number(m, win->of);
      }
      break;
    case FP_WIN_DISTINCT:
      member = have_fn ? lua_text(L, -1, nbuf, sizeof nbuf, &mlen)
                       : path_text(m, win->of, nbuf, sizeof nbuf, &mlen);
      break;
    case FP_WIN_TOPK:
      if (have_fn) {
        if (lua_type(L, -1) == LUA_TSTRING) {
          size_t n;
          const char *s = lua_tolstring(L, -1, &n);
          terms_of_text(&T, s, n);
        } else if (lazy_of(L, -1)) { /* an array of the mention: read the JSON, run no Lua */
          const lazy_t *z = lazy_of(L, -1);
          size_t i;
          json_t *c;
          if (z->ms->valid && json_is_array(z->v))
            json_array_foreach((json_t *)z->v, i, c) {
              if (i >= 64 || T.n >= MAX_TERMS) break;
              if (json_is_string(c)) terms_add(&T, json_string_value(c), json_string_length(c));
            }
        } else if (lua_istable(L, -1)) {
          push_raw_view(L, -1); /* sealed tables: read the real table, run no Lua */
          for (lua_Integer i = 1; i <= 64 && T.n < MAX_TERMS; i++) {
            int t = lua_rawgeti(L, -1, i);
            if (t == LUA_TNIL) {
              lua_pop(L, 1);
              break;
            }
            if (t == LUA_TSTRING) {
              size_t n;
              const char *s = lua_tolstring(L, -1, &n);
              terms_add(&T, s, n);
            }
            lua_pop(L, 1);
          }
          lua_pop(L, 1);
        }
      } else if (strcmp(win->of, "terms") == 0) {
        if (m->text) terms_of_text(&T, m->text, strlen(m->text));
      } else {
        json_t *v = json_path(m, win->of);
        if (json_is_string(v)) {
          terms_of_text(&T, json_string_value(v), json_string_length(v));
        } else if (json_is_array(v)) {
          size_t i;
          json_t *c;
          json_array_foreach(v, i, c) if (json_is_string(c))
              terms_add(&T, json_string_value(c), json_string_length(c));
        }
      }
      break;
    default:
      break;
    }
    if (member) { /* copy before popping the Lua result it may point into */
      if (mlen > 255) mlen = 255;
      member = opvec_strdup(ops, member, mlen);
      if (!member) return fp_seterr(msg, size, FP_ERR_NOMEM, "out of memory");
    }
    if (have_fn) lua_pop(L, 1);
    size_t nops = win->spec.kind == FP_WIN_TOPK && T.n ? T.n : 1;
    for (size_t t = 0; t < nops; t++) {
      fp_win_op_t *op = opvec_push(ops);
      if (!op) return fp_seterr(msg, size, FP_ERR_NOMEM, "out of memory");
      op->offset = offset;
      op->key = key;
      op->spec = &win->spec;
      op->ts_ms = m->created_at_ms;
      op->amount = amount;
      op->member = member;
      if (win->spec.kind == FP_WIN_TOPK && T.n) {
        op->member = opvec_strdup(ops, T.t[t], strlen(T.t[t]));
        if (!op->member) return fp_seterr(msg, size, FP_ERR_NOMEM, "out of memory");
      }
    }
  }
  return FP_OK;
}

/* Writes the entity for a key text into @p out (hashing texts over 127 bytes). */
static void set_entity(char out[128], const char *s, size_t n) {
  /* entities go into incident JSON: long or non-UTF-8 ones are named by their hash */
  if (n < 128 && fp_utf8_valid(s, n)) {
    memcpy(out, s, n);
    out[n] = '\0';
  } else {
    snprintf(out, 128, "#%016llx", (unsigned long long)fp_fnv1a(FP_FNV_INIT, s, n));
  }
}

fp_err_t fp_rules_select(fp_rules_t *rs, const fp_mention_t *m, int64_t offset,
                         fp_rule_hit_t *hits, size_t hits_cap, size_t *nhits, fp_opvec_t *ops,
                         int *mref_out, unsigned *nerrors) {
  lua_State *L = fp_sandbox_lua(rs->sb);
  char msg[512], nbuf[64];
  *nhits = 0;
  if (nerrors) *nerrors = 0;
  *mref_out = LUA_NOREF;
  mention_arg_t marg = {m, offset};
  if (fp_sandbox_cpcall(rs->sb, build_mention, &marg, 0, 1, msg, sizeof msg) != FP_OK)
    return FP_ERR_RULE_MEMORY;
  lua_Integer ref = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (ref <= 0 || ref >= (1 << MREF_BITS)) { /* a million live mentions: refuse */
    luaL_unref(L, LUA_REGISTRYINDEX, (int)ref);
    return FP_ERR_RULE_MEMORY;
  }
  int mref = rs->tag << MREF_BITS | (int)ref;
  *mref_out = mref;

  for (size_t i = 0; i < rs->n && *nhits < hits_cap; i++) {
    rule_t *r = &rs->rules[i];
    fp_err_t e;
    if (r->info.quarantined) continue;
    fp_sandbox_set_label(rs->sb, &r->label);
    if (r->when_ref != LUA_NOREF) {
      if ((e = call_m(rs, r->when_ref, mref, msg, sizeof msg))) goto fail;
      int yes = lua_toboolean(L, -1);
      lua_pop(L, 1);
      if (!yes) {
        rule_ok(r);
        continue;
      }
    }
    fp_rule_hit_t *h = &hits[*nhits];
    size_t n = 0;
    const char *ent;
    if (r->key_path) {
      ent = path_text(m, r->key_path, nbuf, sizeof nbuf, &n);
      if (!ent || !n) {
        rule_ok(r);
        continue;
      }
      set_entity(h->entity, ent, n);
    } else {
      if ((e = call_m(rs, r->key_ref, mref, msg, sizeof msg))) goto fail;
      int t = lua_type(L, -1);
      if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) && t != LUA_TSTRING &&
          t != LUA_TNUMBER) {
        lua_pop(L, 1);
        e = fp_seterr(msg, sizeof msg, FP_ERR_RULE_RUNTIME,
                      "key must return a string, a number or nil, not a %s", lua_typename(L, t));
        goto fail;
      }
      ent = lua_text(L, -1, nbuf, sizeof nbuf, &n);
      if (!ent || !n) {
        lua_pop(L, 1);
        rule_ok(r);
        continue;
      }
      set_entity(h->entity, ent, n);
      lua_pop(L, 1);
    }
    size_t first = ops->n, mark_chunk = ops->chunk, mark_used = ops->used;
    if ((e = rule_ops(rs, r, m, mref, offset, h->entity, ops, msg, sizeof msg))) {
      ops->chunk = mark_chunk; /* drop this rule's strings and ops */
      ops->used = mark_used;
      ops->n = first;
      if (e == FP_ERR_NOMEM) return e;
      goto fail;
    }
    h->rule = i;
    h->op_first = first;
    h->op_count = ops->n - first;
    (*nhits)++; /* the streak is settled by stage 2 */
    continue;
  fail:
    if (nerrors) (*nerrors)++;
    rule_failed(rs, r, e, "select", msg);
  }
  return FP_OK;
}

fp_err_t fp_rules_severity(fp_rules_t *rs, int mref, const fp_rule_hit_t *hit,
                           const fp_win_op_t *ops, fp_sev_t *sev_out, char *errstr,
                           size_t errstr_size) {
  lua_State *L = fp_sandbox_lua(rs->sb);
  char msg[512];
  *sev_out = FP_SEV_NONE;
  if (!hit || hit->rule >= rs->n)
    return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "bad hit");
  rule_t *r = &rs->rules[hit->rule];
  if (r->info.quarantined) return FP_OK;

  size_t j = hit->op_first, end = hit->op_first + hit->op_count;
  for (size_t w = 0; w < r->info.nwindows; w++) {
    const fp_win_op_t *last = NULL;
    while (j < end && ops[j].spec == &r->info.windows[w].spec) last = &ops[j++];
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->val_ref[w]);
    lua_pushnumber(L, last ? last->out.value : 0);
    lua_setfield(L, -2, "value");
    if (r->info.windows[w].spec.kind == FP_WIN_BASELINE) { /* only baselines have these */
      lua_pushnumber(L, last ? last->out.mean : 0);
      lua_setfield(L, -2, "mean");
      lua_pushnumber(L, last ? last->out.stddev : 0);
      lua_setfield(L, -2, "stddev");
    }
    lua_pop(L, 1);
  }
  fp_sandbox_set_label(rs->sb, &r->label);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->sev_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->w_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, mref_ref(rs, mref)); /* nil for LUA_NOREF */
  fp_err_t e = fp_sandbox_pcall(rs->sb, 2, 1, msg, sizeof msg);
  if (e == FP_OK) {
    int t = lua_type(L, -1);
    if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
      *sev_out = FP_SEV_NONE;
    } else {
      int s = t == LUA_TSTRING && lua_rawlen(L, -1) < 8 ? fp_sev_parse(lua_tostring(L, -1)) : -1;
      if (s < 0) {
        size_t n = 0;
        const char *txt = t == LUA_TSTRING ? lua_tolstring(L, -1, &n) : lua_typename(L, t);
        e = fp_seterr(msg, sizeof msg, FP_ERR_RULE_RUNTIME,
                      "severity must return \"sev1\"..\"sev4\", \"none\" or nil, not '%.40s%s'",
                      txt, n > 40 ? "..." : "");
      } else {
        *sev_out = (fp_sev_t)s;
      }
    }
    lua_pop(L, 1);
  }
  if (e) {
    rule_failed(rs, r, e, "severity", msg);
    return fp_seterr(errstr, errstr_size, e, "%s", msg);
  }
  rule_ok(r);
  return FP_OK;
}

void fp_rules_release(fp_rules_t *rs, int mref) {
  int ref = rs ? mref_ref(rs, mref) : LUA_NOREF;
  if (ref == LUA_NOREF) return;
  lua_State *L = fp_sandbox_lua(rs->sb);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lazy_t *z = lazy_of(L, -1);
  lua_pop(L, 1);
  if (!z) return; /* not a mention of ours: leave the slot alone */
  z->ms->valid = 0; /* the document is about to be freed by the caller */
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* ========================================================================================== */
/* flashpoint check                                                                           */

fp_err_t fp_rules_check_dir(const char *rules_dir, FILE *out, char *errstr, size_t errstr_size) {
  fp_rules_t *rs = fp_rules_new(rules_dir, NULL, errstr, errstr_size);
  if (!rs) return FP_ERR_RULE_LOAD;
  for (size_t i = 0; out && i < rs->n; i++) {
    const fp_rule_info_t *in = &rs->rules[i].info;
    fprintf(out, "ok  %-28s v%-3d %s  %s  windows:", in->id, in->version, in->hash, in->file);
    for (size_t w = 0; w < in->nwindows; w++)
      fprintf(out, " %s=%s(%lldms/%lldms%s%s)", in->windows[w].name,
              kind_names[in->windows[w].spec.kind], (long long)in->windows[w].spec.size_ms,
              (long long)in->windows[w].spec.step_ms, in->windows[w].of ? ",of=" : "",
              in->windows[w].of ? in->windows[w].of : "");
    fputc('\n', out);
  }
  if (out) fprintf(out, "%zu rule(s) in %s\n", rs->n, rules_dir);
  fp_rules_destroy(rs);
  return FP_OK;
}
