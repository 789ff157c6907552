/*
 * sandbox.c - owns every contact with the Lua VM that concerns safety: the state, its
 * allocator, its libraries, its hook and the protected call. rules.c builds the rule API on
 * top and never calls lua_pcall itself.
 *
 * How it holds (see /work/shared/notes/lua-sandbox.md for the threat catalogue):
 *  - memory: lua_newstate with a capped allocator. Lua 5.4 passes a type tag in osize when
 *    ptr is NULL, so accounting is used += nsize - (ptr ? osize : 0). A refusal during a call
 *    sets a host flag, so a rule that catches "not enough memory" with pcall still fails.
 *    Small freed blocks are recycled per size class (see "Allocator"); the cap counts what
 *    Lua holds, never the recycled blocks.
 *  - CPU: a count hook every FP_SANDBOX_HOOK_EVERY instructions charges the budget and checks
 *    the wall-clock deadline. Once either is exceeded it re-arms itself at count 1 (sticky),
 *    so every further instruction raises again and pcall cannot swallow it; the host flag is
 *    the truth. C functions cannot be preempted, hence the pattern guard: find/match/gmatch/
 *    gsub refuse subjects over 64 KiB and patterns whose estimated cost is too high.
 *  - reach: only base/table/string/math/utf8 are opened (luaL_requiref, never
 *    luaL_openlibs). Rules see an allow-listed, sealed globals table through the __index of
 *    their private _ENV; no load/dofile/loadfile/collectgarbage/debug/os/io/package/
 *    string.dump/print. rawset refuses sealed tables; setmetatable refuses __gc (a finaliser
 *    would run inside another rule's call). The shared string metatable is locked and its
 *    __index is a sealed private copy of string. Chunks load in text mode only.
 *  - require: resolves lib_dir/<name>.lua only ([A-Za-z0-9_]+), loaded once per state in its
 *    own env, in text mode, with the caller's budget; its result is sealed and cached.
 * Invariant kept by callers: the state is used by one thread, and rule code is only entered
 * through fp_sandbox_pcall (no nesting).
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Allocator pool (see "Allocator"): classes of SB_POOL_GRAIN bytes up to SB_POOL_MAX. */
#define SB_POOL_GRAIN 16
#define SB_POOL_MAX 256
#define SB_POOL_CLASSES (SB_POOL_MAX / SB_POOL_GRAIN)
#define SB_POOL_KEEP (4u << 20) /* bytes kept on the free lists at most */

typedef struct sb_block_s {
  struct sb_block_s *next;
} sb_block_t;

struct fp_sandbox_s {
  lua_State *L;
  size_t used, cap;
  sb_block_t *pool[SB_POOL_CLASSES]; /* free blocks per size class (owning thread only) */
  size_t pool_kept;                  /* bytes on those lists */
  int mem_hit;        /* the allocator refused during the current call */
  uint64_t budget, spent;
  int64_t deadline_ms, deadline_ns; /* deadline_ns: 0 until the call's first hook */
  int64_t start_coarse, coarse_res;  /* the call's start (fp_mono_coarse_ns) and its resolution */
  int over;           /* 0, 1 = instruction budget, 2 = deadline: sticky for the call */
  int in_call;
  int globals_ref;    /* the real allow-listed globals table (never reachable from Lua) */
  int env_mt_ref;     /* metatable shared by every rule env: {__index = globals proxy} */
  int loaded_ref;     /* require cache: name -> sealed result */
  char *lib_dir;
  /* watchdog (see "Watchdog"): written by the owning thread, read by the watchdog thread */
  _Atomic unsigned wd_seq;            /* odd while inside fp_sandbox_pcall */
  _Atomic int64_t wd_start_ns;        /* when the current call started */
  _Atomic(const fp_sandbox_label_t *) wd_label;
  int64_t wd_hard_ms;                 /* max(10 x deadline, FP_WATCHDOG_MIN_MS) */
  struct fp_sandbox_s *wd_next, *wd_prev; /* the process's sandboxes (wd_mu) */
};

static const char locked[] = "locked";

/* ---------------------------------------------------------------------------------------- */
/* Allocator                                                                                 */

/*
 * Small blocks are recycled. Every mention makes a dozen small objects (its lazy tables, their
 * node arrays, userdata, strings) that the collector frees in bursts, which overflow libc's
 * per-thread cache and fall through to its locked, consolidating paths. So freed blocks of up
 * to SB_POOL_MAX bytes go to per-size-class free lists (16-byte classes) and are handed out
 * again LIFO, still warm in cache; at most SB_POOL_KEEP bytes are kept, the rest goes back to
 * libc, and fp_sandbox_destroy returns them all. The cap accounting is unchanged: `used`
 * counts the sizes Lua asked for, pooled or not, so the cap refuses exactly what it refused
 * before. Lua passes a block's true size as osize on free and resize, which is what makes
 * the class of a block known without a header.
 */
static size_t pool_class(size_t n) { return (n - 1) / SB_POOL_GRAIN; }

static void *pool_get(fp_sandbox_t *sb, size_t n) {
  size_t c = pool_class(n);
  sb_block_t *b = sb->pool[c];
  if (b) {
    sb->pool[c] = b->next;
    sb->pool_kept -= (c + 1) * SB_POOL_GRAIN;
    return b;
  }
  return malloc((c + 1) * SB_POOL_GRAIN);
}

static void pool_put(fp_sandbox_t *sb, void *p, size_t n) {
  size_t c = pool_class(n), size = (c + 1) * SB_POOL_GRAIN;
  if (sb->pool_kept + size > SB_POOL_KEEP) {
    free(p);
    return;
  }
  sb_block_t *b = p;
  b->next = sb->pool[c];
  sb->pool[c] = b;
  sb->pool_kept += size;
}

static void pool_drain(fp_sandbox_t *sb) {
  for (size_t c = 0; c < SB_POOL_CLASSES; c++)
    while (sb->pool[c]) {
      sb_block_t *b = sb->pool[c];
      sb->pool[c] = b->next;
      free(b);
    }
  sb->pool_kept = 0;
}

/* realloc for blocks of either kind: @p old is the block's size (0: none). */
static void *sb_resize(fp_sandbox_t *sb, void *ptr, size_t old, size_t nsize) {
  int small_old = old && old <= SB_POOL_MAX, small_new = nsize <= SB_POOL_MAX;
  if (!ptr) return small_new ? pool_get(sb, nsize) : malloc(nsize);
  if (!small_old && !small_new) return realloc(ptr, nsize);
  if (small_old && small_new && pool_class(old) == pool_class(nsize)) return ptr;
  void *p = small_new ? pool_get(sb, nsize) : malloc(nsize);
  if (!p) return NULL; /* the old block stays valid, as with realloc */
  memcpy(p, ptr, old < nsize ? old : nsize);
  if (small_old) pool_put(sb, ptr, old);
  else free(ptr);
  return p;
}

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  fp_sandbox_t *sb = ud;
  size_t old = ptr ? osize : 0; /* 5.4: osize is a type tag when ptr == NULL */
  if (nsize == 0) {
    if (ptr) {
      if (old && old <= SB_POOL_MAX) pool_put(sb, ptr, old);
      else free(ptr);
    }
    sb->used -= old;
    return NULL;
  }
  if (nsize > old && (nsize - old > sb->cap || sb->used + (nsize - old) > sb->cap)) {
    if (sb->in_call) sb->mem_hit = 1;
    return NULL;
  }
  void *p = sb_resize(sb, ptr, old, nsize);
  if (!p) {
    if (sb->in_call) sb->mem_hit = 1;
    return NULL;
  }
  sb->used = sb->used - old + nsize;
  return p;
}

/* ---------------------------------------------------------------------------------------- */
/* Hook and protected call                                                                   */

static fp_sandbox_t *sb_of(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return ud;
}

static void sb_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  fp_sandbox_t *sb = sb_of(L);
  if (!sb->over) {
    sb->spent += FP_SANDBOX_HOOK_EVERY;
    if (sb->spent > sb->budget) {
      sb->over = 1;
    } else {
      int64_t now = fp_mono_ns();
      if (!sb->deadline_ns) {
        /* the call began in [start_coarse, start_coarse + resolution] and before now */
        int64_t began = sb->start_coarse + sb->coarse_res;
        if (now < began) began = now;
        sb->deadline_ns = began + sb->deadline_ms * 1000000LL;
      }
      if (now <= sb->deadline_ns) return;
      sb->over = 2;
    }
    lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1); /* sticky: every instruction from now on */
  }
  luaL_error(L, sb->over == 1 ? "instruction budget exceeded" : "wall-clock deadline exceeded");
}

static int sb_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Copies the first line of a message (the traceback follows a newline) into errstr. */
static void copy_msg(char *errstr, size_t size, const char *msg) {
  if (!errstr || !size) return;
  size_t n = strcspn(msg, "\n");
  if (n >= size) n = size - 1;
  memcpy(errstr, msg, n);
  errstr[n] = '\0';
}

fp_err_t fp_sandbox_pcall(fp_sandbox_t *sb, int nargs, int nresults, char *errstr,
                          size_t errstr_size) {
  lua_State *L = sb->L;
  int base = lua_gettop(L) - nargs; /* the function */
  fp_err_t err = FP_OK;

  lua_pushcfunction(L, sb_msgh);
  lua_insert(L, base);
  /* wd_seq has one writer, this thread: a plain load and a release store advance it as the
   * locked read-modify-write did, for the same ordering, without the bus lock per call. */
  unsigned seq = atomic_load_explicit(&sb->wd_seq, memory_order_relaxed);
  /* no clock read per call: most calls end before the count hook first fires, which reads
   * the clock and fixes the deadline (sb_hook); the watchdog's hard limit is seconds, far
   * above the coarse clock's few ms */
  int64_t start = fp_mono_coarse_ns(&sb->coarse_res);
  sb->spent = 0;
  sb->over = 0;
  sb->mem_hit = 0;
  sb->start_coarse = start;
  sb->deadline_ns = 0;
  sb->in_call = 1;
  atomic_store_explicit(&sb->wd_start_ns, start, memory_order_relaxed);
  atomic_store_explicit(&sb->wd_seq, seq + 1, memory_order_release); /* odd: in a call */
  lua_sethook(L, sb_hook, LUA_MASKCOUNT, FP_SANDBOX_HOOK_EVERY);
  int rc = lua_pcall(L, nargs, nresults, base);
  lua_sethook(L, NULL, 0, 0);
  atomic_store_explicit(&sb->wd_seq, seq + 2, memory_order_release); /* even: out */
  sb->in_call = 0;
  lua_remove(L, base);

  if (sb->over) err = FP_ERR_RULE_BUDGET;
  else if (sb->mem_hit || rc == LUA_ERRMEM) err = FP_ERR_RULE_MEMORY;
  else if (rc != LUA_OK) err = FP_ERR_RULE_RUNTIME;
  if (err == FP_OK) return FP_OK;

  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (err == FP_ERR_RULE_MEMORY && (!msg || !strstr(msg, "memory")))
      fp_seterr(errstr, errstr_size, err, "not enough memory (%s)", msg ? msg : "?");
    else
      copy_msg(errstr, errstr_size, msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  } else {
    lua_pop(L, nresults); /* the rule swallowed the error: the flag still wins */
    fp_seterr(errstr, errstr_size, err, "%s (caught by the rule, still fatal for the call)",
              err == FP_ERR_RULE_BUDGET
                  ? (sb->over == 1 ? "instruction budget exceeded" : "wall-clock deadline exceeded")
                  : "not enough memory");
  }
  if (err == FP_ERR_RULE_MEMORY) lua_gc(L, LUA_GCCOLLECT);
  return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Read-only proxies                                                                         */

static int ro_newindex(lua_State *L) {
  return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

/* The real table behind proxy @p idx: its metatable's __index. Pushes it. */
static void ro_push_real(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) {
    lua_pushnil(L);
    return;
  }
  lua_getfield(L, -1, "__index");
  lua_remove(L, -2);
}

static int ro_len(lua_State *L) {
  ro_push_real(L, 1);
  lua_pushinteger(L, lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0);
  return 1;
}

static int ro_next(lua_State *L) {
  ro_push_real(L, 1);
  if (!lua_istable(L, -1)) return 0;
  lua_pushvalue(L, 2);
  if (lua_next(L, -2)) return 2;
  lua_pushnil(L);
  return 1;
}

static int ro_pairs(lua_State *L) {
  lua_pushcfunction(L, ro_next);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

void fp_sandbox_seal(lua_State *L) {
  lua_createtable(L, 0, 5); /* mt */
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ro_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, ro_len);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, ro_pairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushstring(L, locked);
  lua_setfield(L, -2, "__metatable");
  lua_createtable(L, 0, 0); /* proxy */
  lua_insert(L, -2);
  lua_setmetatable(L, -2);
  lua_remove(L, -2); /* the real table */
}

/* Seals the table on top and, first, every table reachable from it (depth-limited). */
static void seal_deep(lua_State *L, int depth) {
  if (depth > 8 || !lua_istable(L, -1)) return;
  if (lua_getmetatable(L, -1)) { /* already sealed (or foreign): leave it */
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_istable(L, -1)) {
      lua_pushvalue(L, -2); /* key */
      lua_insert(L, -2);    /* t k k v */
      seal_deep(L, depth + 1);
      lua_rawset(L, -4); /* t[k] = sealed v; updating an existing key during next is allowed */
    } else {
      lua_pop(L, 1);
    }
  }
  fp_sandbox_seal(L);
}

/* ---------------------------------------------------------------------------------------- */
/* Guarded base functions                                                                    */

static int sb_rawset(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  if (lua_getmetatable(L, 1)) {
    if (lua_getfield(L, -1, "__metatable") != LUA_TNIL)
      return luaL_error(L, "rawset on a protected table is not allowed");
    lua_pop(L, 2);
  }
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
}

static int sb_setmetatable(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_istable(L, 2) && lua_getfield(L, 2, "__gc") != LUA_TNIL)
    return luaL_error(L, "__gc metamethods are not allowed in rules");
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Pattern guard                                                                             */

/* Skips one single-character class at p[i] (a literal, '.', %x, or a [set]). */
static size_t skip_class(const char *p, size_t n, size_t i) {
  if (p[i] == '%') return i + 2 <= n ? i + 2 : n;
  if (p[i] == '[') {
    i++;
    if (i < n && p[i] == '^') i++;
    do { /* the first ']' of a set is a literal */
      if (i >= n) return n;
      if (p[i] == '%') i++;
      i++;
    } while (i < n && p[i] != ']');
    return i < n ? i + 1 : n;
  }
  return i + 1;
}

/*
 * Estimated worst-case steps of matching @p p against a subject of @p len bytes. Lua's
 * matcher backtracks: with q items quantified by *, + or -, the worst case grows like
 * len^q (the `.-.-.-y` and `a-a-a-...b` bombs). One quantified item is linear per start
 * position and is always allowed; an anchor ('^') saves one factor of len.
 */
static double pattern_cost(const char *p, size_t n, size_t len, int can_anchor) {
  size_t i = 0;
  int anchored = 0, q = 0;
  if (can_anchor && n && p[0] == '^') {
    anchored = 1;
    i = 1;
  }
  while (i < n) {
    char c = p[i];
    if (c == '(' || c == ')') {
      i++;
      continue;
    }
    if (c == '%' && i + 1 < n && p[i + 1] == 'b') {
      i += 4;
      continue;
    }
    if (c == '%' && i + 1 < n && p[i + 1] == 'f') {
      i = skip_class(p, n, i + 2);
      continue;
    }
    if (c == '$' && i + 1 == n) break;
    i = skip_class(p, n, i);
    if (i < n && (p[i] == '*' || p[i] == '+' || p[i] == '-')) {
      q++;
      i++;
    } else if (i < n && p[i] == '?') {
      i++;
    }
  }
  if (q <= 1) return 1.0;
  double e = (double)q - (anchored ? 1.0 : 0.0);
  return pow((double)(len < 2 ? 2 : len), e);
}

static void pattern_check(lua_State *L, int is_find, int can_anchor) {
  size_t len, plen;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *p = luaL_checklstring(L, 2, &plen);
  (void)s;
  if (is_find && lua_toboolean(L, 4)) return; /* plain find: linear, always allowed */
  if (len > FP_SANDBOX_MAX_SUBJECT)
    luaL_error(L, "pattern subject too long (%d bytes, limit %d; use a plain find)", (int)len,
               FP_SANDBOX_MAX_SUBJECT);
  if (pattern_cost(p, plen, len, can_anchor) > FP_SANDBOX_MAX_PATTERN_COST)
    luaL_error(L, "pattern too complex for a %d-byte subject: '%s'", (int)len, p);
}

static int call_original(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

static int g_find(lua_State *L) { pattern_check(L, 1, 1); return call_original(L); }
static int g_match(lua_State *L) { pattern_check(L, 0, 1); return call_original(L); }
static int g_gmatch(lua_State *L) { pattern_check(L, 0, 0); return call_original(L); }
static int g_gsub(lua_State *L) { pattern_check(L, 0, 1); return call_original(L); }

/* ---------------------------------------------------------------------------------------- */
/* require                                                                                   */

static int sb_require(lua_State *L) {
  fp_sandbox_t *sb = sb_of(L);
  size_t n;
  const char *name = luaL_checklstring(L, 1, &n);
  if (!sb->lib_dir) return luaL_error(L, "require is not available here");
  if (n == 0 || n > 64) return luaL_error(L, "module '%s' not found", name);
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return luaL_error(L, "module '%s' not found (only rules/lib/<name>.lua can be required)", name);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, sb->loaded_ref);
  int cache = lua_gettop(L);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, cache) != LUA_TNIL) {
    if (lua_islightuserdata(L, -1)) return luaL_error(L, "require cycle through '%s'", name);
    return 1;
  }
  lua_pop(L, 1);

  char path[4096];
  snprintf(path, sizeof path, "%s/%s.lua", sb->lib_dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return luaL_error(L, "module '%s' not found (no %s)", name, path);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t got;
  char chunk[4096];
  size_t total = 0;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    total += got;
    if (total > 1024 * 1024) {
      fclose(f);
      return luaL_error(L, "module '%s' is larger than 1 MiB", name);
    }
    luaL_addlstring(&b, chunk, got);
  }
  fclose(f);
  luaL_pushresult(&b);
  size_t srclen;
  const char *src = lua_tolstring(L, -1, &srclen);

  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, (void *)sb); /* "loading" marker, catches cycles */
  lua_rawset(L, cache);

  char chunkname[4200];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  if (luaL_loadbufferx(L, src, srclen, chunkname, "t") != LUA_OK) {
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, cache);
    return lua_error(L);
  }
  fp_sandbox_push_env(sb);
  if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1); /* errors propagate to the caller's protected call */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  seal_deep(L, 0);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, cache);
  return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Watchdog                                                                                  */
/*
 * The count hook stops Lua code; it cannot stop a C function (a pattern match the guard let
 * through, a huge table.concat or sort), and nothing can interrupt C code safely from
 * outside: longjmp out of it from another thread is undefined, and the worker holds no lock
 * we could break. So past a hard limit the watchdog does the one reliable thing, abort(),
 * after saying which rule it was and recording a strike, so that the restart (which replays
 * the same mentions from the committed offsets) quarantines the rule after a few strikes
 * instead of hanging again forever. The alternative "mark the rule quarantined and drop the
 * result when the call returns" was rejected: a call that never returns still stalls its
 * partition (and, past max.poll.interval.ms, the whole consumer).
 *
 * Reading a sandbox from the watchdog thread: wd_seq is odd while a call runs; the watchdog
 * reads seq, start and label, then seq again, and acts only if both reads agree (the same
 * call) and it is still odd. The label points into the rule set, which cannot be destroyed
 * while its owning thread is stuck inside the call.
 */
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv = PTHREAD_COND_INITIALIZER;
static fp_sandbox_t *wd_list;
static pthread_t wd_thread;
static int wd_running, wd_stop;
static int64_t wd_conf_hard_ms;
static char wd_strikes_dir[1024];

static void wd_register(fp_sandbox_t *sb) {
  pthread_mutex_lock(&wd_mu);
  sb->wd_prev = NULL;
  sb->wd_next = wd_list;
  if (wd_list) wd_list->wd_prev = sb;
  wd_list = sb;
  pthread_mutex_unlock(&wd_mu);
}

static void wd_unregister(fp_sandbox_t *sb) {
  pthread_mutex_lock(&wd_mu);
  if (sb->wd_prev) sb->wd_prev->wd_next = sb->wd_next;
  else if (wd_list == sb) wd_list = sb->wd_next;
  if (sb->wd_next) sb->wd_next->wd_prev = sb->wd_prev;
  sb->wd_next = sb->wd_prev = NULL;
  pthread_mutex_unlock(&wd_mu);
}

void fp_sandbox_set_label(fp_sandbox_t *sb, const fp_sandbox_label_t *label) {
  atomic_store_explicit(&sb->wd_label, label, memory_order_relaxed);
}

/* The strike file of a rule: <dir>/<id>@<hash>.strikes; a file that hung while loading (no
 * id yet) is keyed "load-<basename>". Ids are [A-Za-z0-9_.-] (fp.rule checks). */
static void strike_path(char *out, size_t size, const char *dir, const char *rule_id,
                        const char *file, const char *hash) {
  if (rule_id) {
    snprintf(out, size, "%s/%s@%s.strikes", dir, rule_id, hash ? hash : "0");
  } else {
    const char *base = file ? strrchr(file, '/') : NULL;
    base = base ? base + 1 : file ? file : "unknown";
    snprintf(out, size, "%s/load-%s@%s.strikes", dir, base, hash ? hash : "0");
  }
}

static unsigned strikes_read(const char *path) {
  unsigned n = 0;
  FILE *f = fopen(path, "r");
  if (f) {
    if (fscanf(f, "%u", &n) != 1) n = 0;
    fclose(f);
  }
  return n;
}

unsigned fp_sandbox_strikes(const char *dir, const char *rule_id, const char *hash) {
  char path[1400];
  if (!dir || !*dir || !rule_id) return 0;
  strike_path(path, sizeof path, dir, rule_id, NULL, hash);
  return strikes_read(path);
}

/* Adds one strike (write aside, fsync, rename: a crash leaves the old count or the new).
 * @returns the new count, or 0 if it could not be written. */
static unsigned strike_add(const fp_sandbox_label_t *lab) {
  char path[1400], tmp[1500];
  if (!wd_strikes_dir[0]) return 0;
  strike_path(path, sizeof path, wd_strikes_dir, lab->rule_id, lab->file, lab->hash);
  unsigned n = strikes_read(path) + 1;
  snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return 0;
  char buf[64];
  int len = snprintf(buf, sizeof buf, "%u\n", n);
  int ok = write(fd, buf, (size_t)len) == len && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return 0;
  }
  if ((fd = open(wd_strikes_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
    fsync(fd);
    close(fd);
  }
  return n;
}

static void wd_fire(const fp_sandbox_label_t *lab, int64_t elapsed_ms, int64_t hard_ms) {
  static const fp_sandbox_label_t none = {NULL, "(unknown)", NULL};
  if (!lab) lab = &none;
  fp_log(FP_LOG_ERROR, "rules",
         "watchdog: rule %s (%s) has been inside one call for %lld ms, past the hard limit of "
         "%lld ms: a C call the instruction hook cannot stop (a pattern match, a huge "
         "concat or sort). Aborting so the process restarts and replays from the committed "
         "offsets", lab->rule_id ? lab->rule_id : "(loading)", lab->file ? lab->file : "?",
         (long long)elapsed_ms, (long long)hard_ms);
  unsigned n = strike_add(lab);
  if (n)
    fp_log(FP_LOG_ERROR, "rules", "watchdog: strike %u recorded for %s in %s", n,
           lab->rule_id ? lab->rule_id : lab->file, wd_strikes_dir);
  else if (wd_strikes_dir[0])
    fp_log(FP_LOG_ERROR, "rules", "watchdog: could not record a strike in %s: %s",
           wd_strikes_dir, strerror(errno));
  abort();
}

static void *wd_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&wd_mu);
  while (!wd_stop) {
    int64_t now = fp_mono_ns(), min_hard = INT64_MAX;
    for (fp_sandbox_t *sb = wd_list; sb; sb = sb->wd_next) {
      int64_t hard = wd_conf_hard_ms > 0 ? wd_conf_hard_ms : sb->wd_hard_ms;
      if (hard < min_hard) min_hard = hard;
      unsigned s1 = atomic_load_explicit(&sb->wd_seq, memory_order_acquire);
      if (!(s1 & 1)) continue;
      int64_t start = atomic_load_explicit(&sb->wd_start_ns, memory_order_relaxed);
      const fp_sandbox_label_t *lab = atomic_load_explicit(&sb->wd_label, memory_order_relaxed);
      atomic_thread_fence(memory_order_acquire);
      if (atomic_load_explicit(&sb->wd_seq, memory_order_relaxed) != s1) continue;
      if (now - start > hard * 1000000LL) wd_fire(lab, (now - start) / 1000000, hard);
    }
    /* wake about ten times per (smallest) hard limit, at most every 200 ms */
    int64_t period_ms = min_hard == INT64_MAX ? 200 : min_hard / 10;
    if (period_ms > 200) period_ms = 200;
    if (period_ms < 10) period_ms = 10;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(period_ms % 1000) * 1000000L;
    ts.tv_sec += (time_t)(period_ms / 1000) + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&wd_cv, &wd_mu, &ts);
  }
  pthread_mutex_unlock(&wd_mu);
  return NULL;
}

fp_err_t fp_sandbox_watchdog_start(const fp_watchdog_conf_t *conf, char *errstr,
                                   size_t errstr_size) {
  pthread_mutex_lock(&wd_mu);
  wd_conf_hard_ms = conf ? conf->hard_ms : 0;
  snprintf(wd_strikes_dir, sizeof wd_strikes_dir, "%s",
           conf && conf->strikes_dir ? conf->strikes_dir : "");
  if (!wd_running) {
    wd_stop = 0;
    if (pthread_create(&wd_thread, NULL, wd_main, NULL) != 0) {
      pthread_mutex_unlock(&wd_mu);
      return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "cannot start the rules watchdog thread");
    }
    wd_running = 1;
  }
  pthread_cond_broadcast(&wd_cv);
  pthread_mutex_unlock(&wd_mu);
  return FP_OK;
}

void fp_sandbox_watchdog_stop(void) {
  pthread_mutex_lock(&wd_mu);
  if (!wd_running) {
    pthread_mutex_unlock(&wd_mu);
    return;
  }
  wd_stop = 1;
  pthread_cond_broadcast(&wd_cv);
  pthread_mutex_unlock(&wd_mu);
  pthread_join(wd_thread, NULL);
  pthread_mutex_lock(&wd_mu);
  wd_running = 0;
  pthread_mutex_unlock(&wd_mu);
}

/* ---------------------------------------------------------------------------------------- */
/* Construction                                                                              */

/* Opens @p fn as library @p name without making it global; leaves the module on the stack. */
static void open_lib(lua_State *L, const char *name, lua_CFunction fn) {
  luaL_requiref(L, name, fn, 0);
}

/* Copies the fields of the table on top into a new table, except those in @p skip. */
static void copy_table(lua_State *L, const char *const *skip) {
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    int drop = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (size_t i = 0; skip && skip[i]; i++)
        if (strcmp(lua_tostring(L, -2), skip[i]) == 0) drop = 1;
    if (drop) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

static int sb_setup(lua_State *L) {
  fp_sandbox_t *sb = lua_touserdata(L, 1);
  static const char *const base_allowed[] = {
      "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "rawequal", "rawget",
      "rawlen", "select", "tonumber", "tostring", "type", "getmetatable", "_VERSION", NULL};
  static const char *const string_skip[] = {"dump", NULL};

  lua_newtable(L); /* globals (real) */
  int g = lua_gettop(L);

  luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
  for (size_t i = 0; base_allowed[i]; i++) {
    lua_getfield(L, -1, base_allowed[i]);
    lua_setfield(L, g, base_allowed[i]);
  }
  lua_pushcfunction(L, sb_rawset);
  lua_setfield(L, g, "rawset");
  lua_getfield(L, -1, "setmetatable");
  lua_pushcclosure(L, sb_setmetatable, 1);
  lua_setfield(L, g, "setmetatable");
  lua_pop(L, 1);
  lua_pushcfunction(L, sb_require);
  lua_setfield(L, g, "require");

  /* string: a private copy, guarded, without dump; behind the shared string metatable. */
  open_lib(L, LUA_STRLIBNAME, luaopen_string);
  copy_table(L, string_skip);
  static const struct { const char *name; lua_CFunction fn; } guarded[] = {
      {"find", g_find}, {"match", g_match}, {"gmatch", g_gmatch}, {"gsub", g_gsub}};
  for (size_t i = 0; i < sizeof guarded / sizeof guarded[0]; i++) {
    lua_getfield(L, -1, guarded[i].name);
    lua_pushcclosure(L, guarded[i].fn, 1);
    lua_setfield(L, -2, guarded[i].name);
  }
  fp_sandbox_seal(L);
  lua_pushliteral(L, "");
  if (!lua_getmetatable(L, -1)) return luaL_error(L, "no string metatable");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, locked);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 2);
  lua_setfield(L, g, "string");

  open_lib(L, LUA_TABLIBNAME, luaopen_table);
  copy_table(L, NULL);
  fp_sandbox_seal(L);
  lua_setfield(L, g, "table");
  open_lib(L, LUA_MATHLIBNAME, luaopen_math);
  copy_table(L, NULL);
  fp_sandbox_seal(L);
  lua_setfield(L, g, "math");
  open_lib(L, LUA_UTF8LIBNAME, luaopen_utf8);
  copy_table(L, NULL);
  fp_sandbox_seal(L);
  lua_setfield(L, g, "utf8");

  lua_pushvalue(L, g);
  sb->globals_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_createtable(L, 0, 2); /* env metatable */
  lua_pushvalue(L, g);
  fp_sandbox_seal(L);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, locked);
  lua_setfield(L, -2, "__metatable");
  sb->env_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);
  sb->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

fp_sandbox_t *fp_sandbox_new(const fp_sandbox_limits_t *limits, const char *lib_dir,
                             char *errstr, size_t errstr_size) {
  fp_sandbox_t *sb = calloc(1, sizeof *sb);
  if (!sb) goto nomem;
  sb->cap = limits && limits->mem_bytes ? limits->mem_bytes : 64u * 1024 * 1024;
  sb->budget = limits && limits->instructions ? limits->instructions : 1000000;
  sb->deadline_ms = limits && limits->deadline_ms > 0 ? limits->deadline_ms : 250;
  if (lib_dir && !(sb->lib_dir = strdup(lib_dir))) goto nomem;
  sb->wd_hard_ms = sb->deadline_ms * 10 > FP_WATCHDOG_MIN_MS ? sb->deadline_ms * 10 : FP_WATCHDOG_MIN_MS;
  sb->L = lua_newstate(sb_alloc, sb);
  if (!sb->L) goto nomem;
  /* Generational GC: rule evaluation makes mostly short-lived garbage (mention views,
   * threshold tables built per call), which a young collection frees cheaply. */
  lua_gc(sb->L, LUA_GCGEN, 0, 0);
  lua_pushcfunction(sb->L, sb_setup);
  lua_pushlightuserdata(sb->L, sb);
  if (lua_pcall(sb->L, 1, 0, 0) != LUA_OK) {
    fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "lua sandbox setup failed: %s",
              lua_tostring(sb->L, -1));
    fp_sandbox_destroy(sb);
    return NULL;
  }
  wd_register(sb);
  return sb;
nomem:
  fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "out of memory creating the Lua sandbox");
  fp_sandbox_destroy(sb);
  return NULL;
}

void fp_sandbox_destroy(fp_sandbox_t *sb) {
  if (!sb) return;
  wd_unregister(sb);
  if (sb->L) lua_close(sb->L);
  pool_drain(sb); /* after lua_close, which returned every block to the pool */
  free(sb->lib_dir);
  free(sb);
}

lua_State *fp_sandbox_lua(fp_sandbox_t *sb) { return sb->L; }

size_t fp_sandbox_mem_used(const fp_sandbox_t *sb) { return sb->used; }

static int add_global_fn(lua_State *L) { /* value, name (light), sb (light) */
  fp_sandbox_t *sb = lua_touserdata(L, 3);
  const char *name = lua_touserdata(L, 2);
  lua_settop(L, 1);
  seal_deep(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, sb->globals_ref);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, name);
  return 0;
}

fp_err_t fp_sandbox_add_global(fp_sandbox_t *sb, const char *name) {
  lua_pushlightuserdata(sb->L, (void *)name);
  return fp_sandbox_cpcall(sb, add_global_fn, sb, 2, 0, NULL, 0);
}

void fp_sandbox_push_env(fp_sandbox_t *sb) {
  lua_State *L = sb->L;
  lua_createtable(L, 0, 4);
  lua_rawgeti(L, LUA_REGISTRYINDEX, sb->env_mt_ref);
  lua_setmetatable(L, -2);
}

fp_err_t fp_sandbox_load(fp_sandbox_t *sb, const char *buf, size_t len, const char *chunkname,
                         char *errstr, size_t errstr_size) {
  lua_State *L = sb->L;
  sb->in_call = 1;
  sb->mem_hit = 0;
  int rc = luaL_loadbufferx(L, buf, len, chunkname, "t");
  sb->in_call = 0;
  if (rc != LUA_OK) {
    copy_msg(errstr, errstr_size, lua_tostring(L, -1) ? lua_tostring(L, -1) : "load failed");
    lua_pop(L, 2); /* message and env */
    return rc == LUA_ERRMEM ? FP_ERR_RULE_MEMORY : FP_ERR_RULE_LOAD;
  }
  lua_insert(L, -2); /* fn env */
  if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  return FP_OK;
}

fp_err_t fp_sandbox_cpcall(fp_sandbox_t *sb, lua_CFunction fn, void *ud, int nargs,
                           int nresults, char *errstr, size_t errstr_size) {
  lua_State *L = sb->L;
  if (!lua_checkstack(L, 4)) return fp_seterr(errstr, errstr_size, FP_ERR_RULE_MEMORY, "lua stack");
  lua_pushcfunction(L, fn);
  lua_insert(L, -(nargs + 1));
  lua_pushlightuserdata(L, ud);
  int rc = lua_pcall(L, nargs + 1, nresults, 0);
  if (rc == LUA_OK) return FP_OK;
  copy_msg(errstr, errstr_size, lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
  lua_pop(L, 1);
  if (rc == LUA_ERRMEM) {
    lua_gc(L, LUA_GCCOLLECT);
    return FP_ERR_RULE_MEMORY;
  }
  return FP_ERR_RULE_RUNTIME;
}
