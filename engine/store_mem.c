/*
 * store_mem.c - the in-process backend of the store: the same server-side scripts as Redis
 * (store_windows.lua), run in a private Lua 5.4 state against a tiny emulation of the
 * redis.call commands they use. One definition of the window semantics, two hosts: the
 * Redis and in-process stores cannot drift apart.
 *
 * How it works: the emulation (EMU below) keeps every key in a Lua table as a string, a
 * hash, a sorted set, or an exact set standing in for a HyperLogLog (so DISTINCT is exact here). It
 * answers like Redis's Lua bridge (missing value -> false, integers as numbers) and raises
 * WRONGTYPE the same way. Expiry is by wall-clock as in Redis: lazily on access and by a
 * full sweep whenever the key count has doubled since the last sweep or a minute passed
 * (amortised O(1) per write). Time is frozen for the duration of one script call, as in
 * Redis. The window script itself deletes buckets that fall behind a window's head, so
 * memory is bounded by event time too.
 *
 * Invariant: single-threaded; a reply borrows strings left on the Lua stack, which stay
 * there until the next call.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

static const char EMU[] =
    "local D, E = {}, {}\n"                 /* key -> {t='s'|'h'|'p'|'z', ...}; key -> expiry ms */
    "local T, nkeys, swept_n, swept_t = 0, 0, 64, 0\n"
    "local function del(k) if D[k] then D[k] = nil; E[k] = nil; nkeys = nkeys - 1 end end\n"
    "local function get(k)\n"
    "  local e = E[k]\n"
    "  if e and e <= T then del(k) end\n"
    "  return D[k]\n"
    "end\n"
    "local function wrong() error({err = 'WRONGTYPE Operation against a key holding the wrong kind of value'}) end\n"
    "local function typed(k, t, create)\n"
    "  local o = get(k)\n"
    "  if o then if o.t ~= t then wrong() end return o end\n"
    "  if not create then return nil end\n"
    "  o = {t = t, f = {}, n = 0}\n"
    "  D[k] = o; nkeys = nkeys + 1\n"
    "  return o\n"
    "end\n"
    "local function s(x) if type(x) == 'number' then return string.format('%.17g', x) end return x end\n"
    "local C = {}\n"
    "function C.GET(k) local o = typed(k, 's') return o and o.v or false end\n"
    "function C.SET(k, v, px, ms)\n"
    "  del(k); local o = typed(k, 's', true); o.v = s(v)\n"
    "  if px then E[k] = T + tonumber(ms) end\n"
    "  return {ok = 'OK'}\n"
    "end\n"
    "function C.HGET(k, f) local o = typed(k, 'h') if not o then return false end return o.f[s(f)] or false end\n"
    "function C.HMGET(k, ...)\n"
    "  local o, r, a = typed(k, 'h'), {}, {...}\n"
    "  for i = 1, #a do r[i] = o and o.f[s(a[i])] or false end\n"
    "  return r\n"
    "end\n"
    "function C.HSET(k, ...)\n"
    "  local o, a, c = typed(k, 'h', true), {...}, 0\n"
    "  for i = 1, #a, 2 do local f = s(a[i]) if o.f[f] == nil then c = c + 1; o.n = o.n + 1 end o.f[f] = s(a[i + 1]) end\n"
    "  return c\n"
    "end\n"
    "function C.HDEL(k, ...)\n"
    "  local o, a, c = typed(k, 'h'), {...}, 0\n"
    "  if not o then return 0 end\n"
    "  for i = 1, #a do local f = s(a[i]) if o.f[f] ~= nil then o.f[f] = nil; o.n = o.n - 1; c = c + 1 end end\n"
    "  if o.n == 0 then del(k) end\n"
    "  return c\n"
    "end\n"
    "function C.HINCRBY(k, f, by)\n"
    "  local o = typed(k, 'h', true); f = s(f)\n"
    "  local v = math.tointeger(tonumber(o.f[f] or '0')) + math.tointeger(tonumber(by))\n"
    "  if o.f[f] == nil then o.n = o.n + 1 end\n"
    "  o.f[f] = string.format('%d', v)\n"
    "  return v\n"
    "end\n"
    "function C.HGETALL(k)\n"
    "  local o, r = typed(k, 'h'), {}\n"
    "  if o then for f, v in pairs(o.f) do r[#r + 1] = f; r[#r + 1] = v end end\n"
    "  return r\n"
    "end\n"
    "function C.HKEYS(k)\n"
    "  local o, r = typed(k, 'h'), {}\n"
    "  if o then for f in pairs(o.f) do r[#r + 1] = f end end\n"
    "  return r\n"
    "end\n"
    "function C.PFADD(k, ...)\n"
    "  local existed = get(k) ~= nil\n"
    "  local o, a, c = typed(k, 'p', true), {...}, existed and 0 or 1\n"
    "  for i = 1, #a do local m = s(a[i]) if not o.f[m] then o.f[m] = true; o.n = o.n + 1; c = 1 end end\n"
    "  return c\n"
    "end\n"
    "function C.PFCOUNT(...)\n"
    "  local a = {...}\n"
    "  if #a == 1 then local o = typed(a[1], 'p') return o and o.n or 0 end\n"
    "  local u, c = {}, 0\n"
    "  for i = 1, #a do local o = typed(a[i], 'p')\n"
    "    if o then for m in pairs(o.f) do if not u[m] then u[m] = true; c = c + 1 end end end end\n"
    "  return c\n"
    "end\n"
    "function C.PFMERGE(d, ...)\n"
    "  local o, a = typed(d, 'p', true), {...}\n"
    "  for i = 1, #a do local x = typed(a[i], 'p')\n"
    "    if x then for m in pairs(x.f) do if not o.f[m] then o.f[m] = true; o.n = o.n + 1 end end end end\n"
    "  return {ok = 'OK'}\n"
    "end\n"
    "local function zbound(x) if x == '-inf' then return -math.huge elseif x == '+inf' then return math.huge end return tonumber(x) end\n"
    "function C.ZADD(k, ...)\n"                 /* ZADD k [GT] score member [score member ...] */
    "  local a, i, added = {...}, 1, 0\n"
    "  local gt = a[1] == 'GT'\n"
    "  if gt then i = 2 end\n"
    "  local o = typed(k, 'z', true)\n"
    "  while i <= #a do\n"
    "    local sc = tonumber(a[i])\n"
    "    if not sc then error({err = 'ERR value is not a valid float'}) end\n"
    "    local m = s(a[i + 1])\n"
    "    local old = o.f[m]\n"
    "    if old == nil then o.n = o.n + 1; o.f[m] = sc; added = added + 1\n"
    "    elseif not gt or sc > old then o.f[m] = sc end\n"
    "    i = i + 2\n"
    "  end\n"
    "  return added\n"
    "end\n"
    "function C.ZMSCORE(k, ...)\n"
    "  local o, a, r = typed(k, 'z'), {...}, {}\n"
    "  for i = 1, #a do local sc = o and o.f[s(a[i])] r[i] = sc ~= nil and s(sc) or false end\n"
    "  return r\n"
    "end\n"
    "function C.ZCARD(k) local o = typed(k, 'z') return o and o.n or 0 end\n"
    "function C.ZREM(k, ...)\n"
    "  local o, a, c = typed(k, 'z'), {...}, 0\n"
    "  if not o then return 0 end\n"
    "  for i = 1, #a do local m = s(a[i]) if o.f[m] ~= nil then o.f[m] = nil; o.n = o.n - 1; c = c + 1 end end\n"
    "  if o.n == 0 then del(k) end\n"
    "  return c\n"
    "end\n"
    /* members by (score, member); a linear scan and a sort of the matches: the in-process
     * store holds one engine's incidents, and the scripts ask only for the due end */
    "local function zrange(k, lo, hi, sorted)\n"
    "  local o, r = typed(k, 'z'), {}\n"
    "  if not o then return r end\n"
    "  lo, hi = zbound(lo), zbound(hi)\n"
    "  for m, sc in pairs(o.f) do if sc >= lo and sc <= hi then r[#r + 1] = m end end\n"
    "  if sorted then table.sort(r, function(x, y) if o.f[x] ~= o.f[y] then return o.f[x] < o.f[y] end return x < y end) end\n"
    "  return r\n"
    "end\n"
    "function C.ZCOUNT(k, lo, hi) return #zrange(k, lo, hi, false) end\n"
    "function C.ZREMRANGEBYSCORE(k, lo, hi)\n"
    "  local o, c = typed(k, 'z'), 0\n"
    "  if not o then return 0 end\n"
    "  lo, hi = zbound(lo), zbound(hi)\n"
    "  for m, sc in pairs(o.f) do if sc >= lo and sc <= hi then o.f[m] = nil; o.n = o.n - 1; c = c + 1 end end\n"
    "  if o.n == 0 then del(k) end\n"
    "  return c\n"
    "end\n"
    "function C.ZRANGEBYSCORE(k, lo, hi, limit, off, count)\n"
    "  local r = zrange(k, lo, hi, true)\n"
    "  if not limit then return r end\n"
    "  local out, o, c = {}, tonumber(off), tonumber(count)\n"
    "  for i = o + 1, #r do if c >= 0 and #out >= c then break end out[#out + 1] = r[i] end\n"
    "  return out\n"
    "end\n"
    "function C.PEXPIRE(k, ms) if get(k) == nil then return 0 end E[k] = T + tonumber(ms) return 1 end\n"
    "function C.TIME() return {string.format('%d', T // 1000), string.format('%d', T % 1000 * 1000)} end\n"
    "function C.PTTL(k) if get(k) == nil then return -2 end local e = E[k] if not e then return -1 end return e - T end\n"
    "function C.EXISTS(k) return get(k) ~= nil and 1 or 0 end\n"
    "function C.DEL(...) local a, c = {...}, 0 for i = 1, #a do if get(a[i]) then del(a[i]); c = c + 1 end end return c end\n"
    "function C.DBSIZE() local c = 0 for k in pairs(D) do if get(k) then c = c + 1 end end return c end\n"
    "redis = {}\n"
    "function redis.call(cmd, ...)\n"
    "  local f = C[string.upper(cmd)]\n"
    "  if not f then error({err = 'ERR unknown command ' .. tostring(cmd)}) end\n"
    "  return f(...)\n"
    "end\n"
    "function redis.error_reply(m) error({err = m}) end\n"
    "function __fp_begin(now)\n"
    "  T = now\n"
    "  if nkeys > 2 * swept_n or now - swept_t > 60000 then\n"
    "    for k, _ in pairs(E) do get(k) end\n"
    "    swept_n, swept_t = math.max(64, nkeys), now\n"
    "  end\n"
    "end\n"
    "function __fp_err(e) if type(e) == 'table' and e.err then return e.err end return debug and debug.traceback(tostring(e)) or tostring(e) end\n";

typedef struct fp_store_mem_s {
  fp_store_t base; /* first: the store is cast from and to this */
  lua_State *L;
  const char **rstr;
  size_t *rlen, rcap;
} fp_store_mem_t;

/* Pushes the compiled function of @p script, compiling it on first use (cached by address). */
static int push_script(lua_State *L, const fp_store_script_t *script, char *errstr,
                       size_t errstr_size) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, script);
  if (lua_isfunction(L, -1)) return 0;
  lua_pop(L, 1);
  if (luaL_loadbufferx(L, script->text, script->len, script->name, "t") != LUA_OK) {
    fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: %s: %s", script->name,
              lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, script);
  return 0;
}

static fp_err_t mem_eval(fp_store_t *st, const fp_store_script_t *script, size_t argc,
                         const char **argv, const size_t *argvlen, fp_store_reply_t *out,
                         char *errstr, size_t errstr_size) {
  fp_store_mem_t *m = (fp_store_mem_t *)st;
  lua_State *L = m->L;

  lua_settop(L, 0); /* releases the previous reply */
  st->roundtrips++;
  lua_getglobal(L, "__fp_begin");
  lua_pushinteger(L, fp_now_ms());
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: emulation: %s",
                     lua_tostring(L, -1));

  lua_createtable(L, (int)argc, 0);
  for (size_t i = 0; i < argc; i++) {
    lua_pushlstring(L, argv[i], argvlen[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setglobal(L, "ARGV");

  lua_getglobal(L, "__fp_err");
  if (push_script(L, script, errstr, errstr_size)) return FP_ERR_FATAL;
  if (lua_pcall(L, 0, 1, 1) != LUA_OK) {
    fp_err_t e = FP_ERR_FATAL;
    const char *msg = lua_tostring(L, -1);
    if (msg && strncmp(msg, "WRONGTYPE", 9) == 0) e = FP_ERR_REDIS_FATAL;
    if (msg && strncmp(msg, "FPLOST", 6) == 0) e = FP_ERR_STORE_LOST;
    return fp_seterr(errstr, errstr_size, e, "store (in-process): %s: %s", script->name,
                     msg ? msg : "error");
  }
  /* stack: 1 = handler, 2 = reply table */
  if (!lua_istable(L, 2))
    return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: %s: reply is not a table",
                     script->name);
  size_t n = (size_t)lua_rawlen(L, 2);
  if (n > m->rcap) {
    size_t c = m->rcap ? m->rcap : 64;
    while (c < n) c *= 2;
    const char **a = realloc(m->rstr, c * sizeof(*a));
    if (!a) return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
    m->rstr = a;
    size_t *b = realloc(m->rlen, c * sizeof(*b));
    if (!b) return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
    m->rlen = b;
    m->rcap = c;
  }
  if (!lua_checkstack(L, (int)n + 4))
    return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: reply too large");
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 2, (lua_Integer)i + 1); /* left on the stack: the string stays alive */
    if (lua_type(L, -1) == LUA_TSTRING) {
      m->rstr[i] = lua_tolstring(L, -1, &m->rlen[i]);
    } else {
      m->rstr[i] = NULL;
      m->rlen[i] = 0;
    }
  }
  out->n = n;
  out->str = m->rstr;
  out->len = m->rlen;
  return FP_OK;
}

static void mem_destroy(fp_store_t *st) {
  fp_store_mem_t *m = (fp_store_mem_t *)st;
  if (m->L) lua_close(m->L);
  free(m->rstr);
  free(m->rlen);
  free(m);
}

static const fp_store_backend_t mem_backend = {"mem", mem_eval, mem_destroy, NULL, NULL};

fp_store_t *fp_store_mem_new(char *errstr, size_t errstr_size) {
  fp_store_mem_t *m = calloc(1, sizeof(*m));
  if (!m) goto nomem;
  if (fp_store_init_common(&m->base, &mem_backend, "fp")) goto nomem;
  if (!(m->L = luaL_newstate())) goto nomem;
  /* Trusted engine code only; still, open just what the scripts use. */
  luaL_requiref(m->L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(m->L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(m->L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(m->L, LUA_MATHLIBNAME, luaopen_math, 1);
  lua_settop(m->L, 0);
  if (luaL_loadbufferx(m->L, EMU, sizeof(EMU) - 1, "store_mem_emu", "t") != LUA_OK ||
      lua_pcall(m->L, 0, 0, 0) != LUA_OK) {
    fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: emulation: %s", lua_tostring(m->L, -1));
    goto err;
  }
  lua_newtable(m->L);
  lua_setglobal(m->L, "KEYS");
  if (push_script(m->L, &fp_store_windows_script, errstr, errstr_size)) goto err;
  lua_settop(m->L, 0);
  return &m->base;
nomem:
  fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
err:
  if (m) fp_store_destroy(&m->base);
  return NULL;
}

long long fp_store_mem_debug_cmd(fp_store_t *st, const char *cmd, const char *arg) {
  fp_store_mem_t *m = (fp_store_mem_t *)st;
  lua_State *L = m->L;
  long long v = -3;
  lua_settop(L, 0);
  lua_getglobal(L, "__fp_begin");
  lua_pushinteger(L, fp_now_ms());
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_settop(L, 0);
    return v;
  }
  lua_getglobal(L, "redis");
  lua_getfield(L, -1, "call");
  lua_pushstring(L, cmd);
  int nargs = 1;
  if (arg) {
    lua_pushstring(L, arg);
    nargs++;
  }
  if (lua_pcall(L, nargs, 1, 0) == LUA_OK && lua_isinteger(L, -1)) v = lua_tointeger(L, -1);
  lua_settop(L, 0);
  return v;
}
