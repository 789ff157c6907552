--[[
store_windows.lua - the one definition of Flashpoint's event-time windows, fence and memo.

Runs unchanged in two places: inside Redis (EVALSHA, Lua 5.1, redis.call) for the shared
store, and in a private Lua 5.4 state of the in-process store (store_mem.c), where `redis.call`
is a small emulation of the commands used below. Keep it to the common subset of Lua 5.1 and
5.4: no `//`, no goto, no integer-only library calls; every number that goes into a key or a
reply is formatted with string.format so integer/float subtypes cannot leak into text.

Trusted engine code only (never rule code). Key layout (P = prefix, K = window key, b = bucket
index = floor(ts_ms / step_ms), computed by the caller in C):

  P:w:K            hash, one per window: h = head (highest bucket applied), lo = lowest bucket
                   that may hold data, t (and q for BASELINE) = running totals for the head,
                   x = when the window's keys expire (server clock, ms), k = the newest bucket
                   whose key (P:wb) was made, and one field per bucket "<b>" = count or sum
                   (COUNT, SUM, TOPK, BASELINE). DISTINCT keeps only h, lo, u, x, k here.
  P:wb:K:<b>       DISTINCT: HyperLogLog of bucket b; TOPK: hash term -> count of bucket b.
  P:wz:K           DISTINCT in exact mode (hash field z = "1"; every new window starts in
                   it): sorted set member -> the newest bucket it was added to, holding the
                   members of buckets h-n+1..h, so the head's count is ZCARD, exact. A head
                   move removes the members that left with one ZREMRANGEBYSCORE. When it
                   would hold more than E members (the call's distinct_exact; 0: never), the
                   window drops it for good and goes to HyperLogLog mode, until its head
                   jumps n buckets or more (the window is empty again).
  P:wu:K           DISTINCT in HyperLogLog mode: HyperLogLog of the union of buckets
                   h-n+1..h, valid while the hash field u equals h (rebuilt with PFMERGE
                   when the head has moved), so the head's distinct count is one PFCOUNT of
                   one key, which Redis caches until a PFADD changes it, instead of a union
                   of n keys per op. Same registers as the multi-key PFCOUNT, so the same
                   estimate. Why not always: Redis rebuilds a sparse HyperLogLog register by
                   register, each a scan of the sparse string, so a PFMERGE costs the union's
                   size squared (1.8 ms at ~3,000 members, once a minute per window of a busy
                   brand), and a PFCOUNT after each PFADD re-reads it; ZADD and ZCARD cost
                   the same at any size. The cap bounds the memory (~110 bytes a member).
  P:fence:S        string: highest offset applied for source S.
  P:memo:S         hash: one record per apply call, "<first>-<last>" (its offsets) -> the
                   caller's index of its ops ("d.k,..." in sending order: offset - first, and
                   position among that offset's ops), '|', their results ';'-separated in the
                   same order. Records wholly below the commit point are dropped on every call.

Running totals: for COUNT/SUM/TOPK, t = sum of buckets h-n+1..h; for BASELINE, t and q = sum
and sum of squares of buckets h-n..h-1. Moving the head from h to b touches only the buckets
that enter or leave, so an op at the head costs O(1) and each bucket is added and removed once.
Retention: buckets below h-n-L (L = lateness in buckets) are deleted when the head moves, so a
window's memory is bounded by event time, not only by TTL. An op older than h-L is "too late":
it is not applied, its value is computed read-only and it is counted.

Within one call every window's state and every bucket read is cached (W), writes are buffered
and flushed with one HSET/HDEL per window at the end, and late-op window sums and baseline
statistics are memoised per (window, bucket) and patched on later writes.

Expiry: every key of a window gets the TTL (n + 2 + L) * step, but not on every call. A key
made in a call gets it at once; the rest are refreshed together (hash, union, every bucket key
the window can still read) only once half of the TTL has passed, by the server's clock (x).
So no bucket key ever expires before its window's hash, and a bucket key is known to exist
when its bucket is k while the hash exists. At high rates a window is flushed many times a
minute and its TTL is minutes to days: the PEXPIRE of every key on every call was a third of
the script's commands.

Protocol (all ARGV, no KEYS; every reply element is a string):
  apply P S committed memo_ttl fence_ttl lateness_ms losscheck nwin first last index exact
        then nwin x (key kind n step count runs): the windows this call touches, each
             once, kind in c s d t b, how many ops each has, and in how many runs they come
        then the ops window by window (a window's ops in offset order; windows are
             independent, so this order gives the same values as offset order): each is
             the bucket, then the amount for SUM or the member for DISTINCT and TOPK; a
             window with runs < count (COUNT, BASELINE, DISTINCT only) sends its
             consecutive ops of one bucket (and member) as one run instead: bucket, k for
             COUNT and BASELINE, bucket, member, k for DISTINCT. At high rates most ops of a
             window in a call share a bucket, and a run costs what one op did. A TOPK window
             with runs < count sends consecutive ops of one bucket that all have a term as
             bucket, k, nterms, then each term once with how many of the run's ops name it
             (an op without a term: bucket, 1, 0).
        Every window's parameters come once per call, not once per op: building ARGV
        strings and converting them is a large part of a call's cost in Redis.
        first, last: the call's lowest and highest offsets; index: the memo index (P:memo:S);
        exact: E, the most members a DISTINCT window counts exactly (0: HyperLogLog only)
        losscheck "1": no fence while committed > 0 means the store lost data: nothing is
        applied and the reply is the error "FPLOST ..." (the engine rebuilds first)
     -> { "A", too_late, "r1;r2;...;rn" } results in sending order: a number, or for BASELINE
        "count,sum,sumsq" of the steps before (the caller computes mean and deviation); a
        run's one result carries "*k" (k ops; this is the last one's, each op before it had
        a count one lower) or "@k" (k ops, all with this value)
     -> { "R", fence, record, value, ... } when the first offset is at or below the fence:
        nothing applied; the caller takes the replayed offsets' results from the memo
        records (peek for those without one) and sends the rest again
  peek  (same arguments as apply) -> { "P", 0, "r1;...;rn" }: values as of each op's bucket,
        nothing written
  fence P S                 -> { offset or "-1" }
  topk  P m (K n step bucket k)*m
                            -> for each of the m windows: { c, term, count, ... (c pairs) }
                               candidates only (every term whose count reaches the k-th
                               largest); the caller sorts. One call for every event of a
                               run that carries top terms: a crisis opens many at once.
]]

local unpack = unpack or table.unpack
local call = redis.call
local ceil, sqrt, min, max = math.ceil, math.sqrt, math.min, math.max
local CHUNK = 4000 -- variadic arguments per redis.call (Lua 5.1's C stack allows 8000)
local MEMO_PRUNE_BUDGET = 20000 -- memo offsets examined per call at most

-- Integers as text, remembered for the call: bucket numbers recur across every window of a
-- step, and formatting is a large part of a call's own time.
local FI = {}
local function fint(x)
  local s = FI[x]
  if not s then s = string.format('%d', x); FI[x] = s end
  return s
end

-- Shortest of %.15g/%.17g that reads back as the same double; integral values (counts,
-- nearly every result) take the cheaper memoised '%d' of fint: Lua 5.1 prints a number with
-- "%.14g", which glibc formats with multi-precision arithmetic (a quarter of a microsecond a
-- number in Redis, and a call prints tens of thousands).
local floor = math.floor
local toint = math.tointeger -- nil in Lua 5.1
local function fnum_slow(x)
  local s = string.format('%.15g', x)
  if tonumber(s) ~= x then s = string.format('%.17g', x) end
  return s
end
local fnum
if toint then
  fnum = function(x)
    local i = toint(x)
    if i and i > -1e14 and i < 1e14 and (i ~= 0 or 1 / x > 0) then return fint(i) end
    return fnum_slow(x)
  end
else
  fnum = function(x)
    if x == floor(x) and x > -1e14 and x < 1e14 and (x ~= 0 or 1 / x > 0) then return fint(x) end
    return fnum_slow(x)
  end
end

-- Numbers of the request, remembered for the call: the buckets (and run lengths) of a call's
-- ops are a few values repeated thousands of times, and a table lookup costs a third of a
-- tonumber (strtod) in Redis.
local BN = {}
local function bnum(s)
  local v = BN[s]
  if v == nil then
    v = tonumber(s)
    if v ~= nil then BN[s] = v end
  end
  return v
end

-- The server's clock in ms (TIME), read once per call when a flush first needs it.
local NOW
local function now_ms()
  if not NOW then
    local t = call('TIME')
    NOW = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

local function num(s)
  if not s then return 0 end
  return tonumber(s)
end

-- Variadic command over a long argument list, in chunks (an even CHUNK keeps pairs whole).
local function callv(cmd, key, args)
  local i, n = 1, #args
  while i <= n do
    local j = min(i + CHUNK - 1, n)
    call(cmd, key, unpack(args, i, j))
    i = j + 1
  end
end

local function hmget(key, fields)
  local res, i, n = {}, 1, #fields
  while i <= n do
    local j = min(i + CHUNK - 1, n)
    local r = call('HMGET', key, unpack(fields, i, j))
    for k = 1, j - i + 1 do res[i + k - 1] = r[k] end
    i = j + 1
  end
  return res
end

local P = ARGV[2]
local EXACT = tonumber(ARGV[13]) or 0 -- apply, peek: the most members a window counts exactly

------------------------------------------------------------------------------------------
-- Window state, cached for the duration of one call.

local W, WL = {}, {} -- key -> state; states in first-touch order
local too_late = 0

local function win(key, kind, n, step, lb)
  local w = W[key]
  if w then return w end
  -- ws, bs, dc (memoised sums, statistics, distinct counts), del, delk (pruned fields and
  -- keys), made (bucket keys this call may have made), bkc (bucket key names) are made when
  -- first needed: a call touches hundreds of windows, most with a few ops
  w = { hk = P .. ':w:' .. key, kind = kind, n = n,
        step = step, lb = lb, v = {}, dirty = {}, t = 0, q = 0, changed = false }
  if kind == 'd' then
    w.pm, w.bk, w.uk, w.zk = {}, P .. ':wb:' .. key .. ':', P .. ':wu:' .. key, P .. ':wz:' .. key
  elseif kind == 't' then
    w.ti, w.tib, w.bk = {}, {}, P .. ':wb:' .. key .. ':'
  end
  local r = call('HMGET', w.hk, 'h', 'lo', 't', 'q', 'u', 'x', 'k', 'z')
  if r[1] then
    w.h, w.lo, w.t, w.q = tonumber(r[1]), tonumber(r[2]), num(r[3]), num(r[4])
    w.uh = r[5] and tonumber(r[5]) -- DISTINCT: the head the union key was built for
    w.x, w.kb = r[6] and tonumber(r[6]), r[7] and tonumber(r[7])
    w.slo, w.shi = w.lo, w.h -- stored buckets not yet cached lie in [slo, shi]
    w.ex = r[8] == '1' -- DISTINCT: exact mode (P:wz:K counts the head)
  elseif kind == 'd' and EXACT > 0 then
    w.ex, w.fresh = true, true -- a new window: P:wz:K may be a leftover, emptied at first use
  end
  W[key] = w
  WL[#WL + 1] = w
  return w
end

-- Makes sure buckets from..to that may be stored are in the cache (one HMGET).
local function fetch(w, from, to)
  if not w.slo then return end
  local a, z = max(from, w.slo), min(to, w.shi)
  local fields, idx = {}, {}
  for b = a, z do
    if w.v[b] == nil then
      fields[#fields + 1] = fint(b)
      idx[#idx + 1] = b
    end
  end
  if #fields == 0 then return end
  local r = hmget(w.hk, fields)
  for i = 1, #idx do w.v[idx[i]] = num(r[i]) end
end

local function get(w, b)
  local x = w.v[b]
  if x ~= nil then return x end
  if not w.slo or b < w.slo or b > w.shi then return 0 end
  fetch(w, b, b)
  return w.v[b]
end

local function set(w, b, x)
  w.v[b] = x
  w.dirty[b] = true
  if b < w.lo then w.lo = b end
end

-- The key of bucket b's HyperLogLog (DISTINCT) or term hash (TOPK), made once per call.
local function bkey(w, b)
  local c = w.bkc
  if not c then c = {}; w.bkc = c end
  local k = c[b]
  if not k then k = w.bk .. fint(b); c[b] = k end
  return k
end

-- Notes that this call may have made bucket b's key (DISTINCT, TOPK): it gets its expiry at
-- flush, unless it certainly existed (bucket k of a window whose hash exists).
local function made(w, b)
  if b == w.kb then return end
  local m = w.made
  if not m then m = {}; w.made = m end
  m[b] = true
end

-- Deletes buckets that no op within the lateness can need any more.
local function prune(w, oldh)
  local kf = w.h - w.n - w.lb
  if w.lo >= kf then return end
  local keys, fields = (w.kind == 'd' or w.kind == 't'), (w.kind ~= 'd')
  w.del, w.delk = w.del or {}, w.delk or {}
  for b = w.lo, min(kf - 1, oldh) do
    w.v[b], w.dirty[b] = nil, nil
    if w.made then w.made[b] = nil end
    if w.pm then w.pm[b] = nil end
    if w.ti then w.ti[b] = nil end
    if w.pend then w.pend[b] = nil end
    if keys then w.delk[#w.delk + 1] = w.bk .. fint(b) end
    if fields then w.del[#w.del + 1] = fint(b) end
  end
  w.lo = kf
  if w.slo and w.slo < kf then w.slo = kf end
  w.ws, w.bs, w.dc = nil, nil, nil
end

-- DISTINCT, exact mode: the number of members of buckets h-n+1..h (ZCARD once per call).
local function zcard(w)
  local c = w.zc
  if c == nil then
    if w.fresh then
      call('DEL', w.zk) -- a leftover of an expired window would count members it never had
      w.fresh, c = nil, 0
    else
      c = call('ZCARD', w.zk)
    end
    w.zc = c
  end
  return c
end

-- DISTINCT, exact mode: what this call knows of the set, so that a window's adds cost one
-- ZMSCORE and one ZADD per call instead of a ZADD per op. w.zm: member -> its bucket in the
-- set (false: not in it), for the members of the window's ops in this call (zprefetch), or
-- for any member while w.zempty (the set is known to be empty: new window, or just exact).
-- w.zp: the adds not yet written ("GT": a member's bucket only moves forward), written by
-- zwrite before anything reads or trims the set in Redis, and at flush.
local function zprefetch(w, a, count, stride)
  if not w.ex or w.zempty then return end
  if w.fresh then -- a new window: its set is emptied at first use, nothing to look up
    w.zm, w.zempty = w.zm or {}, true
    return
  end
  local zm, list = w.zm or {}, {}
  w.zm = zm
  for i = 0, count - 1 do
    local m = ARGV[a + 1 + i * stride]
    if m ~= '' and zm[m] == nil then zm[m] = false; list[#list + 1] = m end
  end
  local i = 1
  while i <= #list do
    local j = min(i + CHUNK - 1, #list)
    local r = call('ZMSCORE', w.zk, unpack(list, i, j))
    for k = 1, j - i + 1 do
      local sc = r[k]
      if sc then zm[list[i + k - 1]] = tonumber(sc) end
    end
    i = j + 1
  end
end

local function zwrite(w)
  local zp = w.zp
  if not zp then return end
  w.zp = nil
  local i, n = 1, #zp
  while i <= n do
    local j = min(i + CHUNK - 1, n)
    call('ZADD', w.zk, 'GT', unpack(zp, i, j))
    i = j + 1
  end
end

-- DISTINCT: exact mode -> HyperLogLog mode (the set would pass the cap). The union is built
-- from the bucket keys, which have every member, at the next head count.
local function to_hll(w)
  call('DEL', w.zk)
  w.ex, w.zc, w.uh, w.modechg = false, nil, nil, true
  w.zm, w.zp, w.zempty = nil, nil, nil
end

-- DISTINCT: HyperLogLog mode -> exact mode, when every bucket of the window has left it.
local function to_exact(w)
  if w.uh then call('DEL', w.uk) end
  call('DEL', w.zk)
  w.ex, w.zc, w.uh, w.modechg = true, 0, nil, true
  w.zm, w.zp, w.zempty = {}, nil, true
end

local function advance(w, b)
  local n, oh = w.n, w.h
  if w.kind == 'b' then
    if b - oh > n then
      w.t, w.q = 0, 0
    else
      -- only the buckets that enter (oh..b-1) and leave (oh-n..b-n-1): not the n between
      fetch(w, oh, b - 1)
      fetch(w, oh - n, b - n - 1)
      for j = oh, b - 1 do local x = get(w, j); w.t = w.t + x; w.q = w.q + x * x end
      for j = oh - n, b - n - 1 do local x = get(w, j); w.t = w.t - x; w.q = w.q - x * x end
    end
  elseif w.kind == 'd' then
    if w.ex then -- the members whose newest bucket leaves the window
      if w.fresh then zcard(w) end -- a new window's leftover set goes first
      zwrite(w)
      local gone = call('ZREMRANGEBYSCORE', w.zk, '-inf', fint(b - n))
      if w.zc then w.zc = w.zc - gone end
      if w.zm then -- what left the set in Redis left it here too
        for m, sc in pairs(w.zm) do
          if sc and sc <= b - n then w.zm[m] = false end
        end
      end
    elseif b - oh >= n and EXACT > 0 then
      to_exact(w)
    end
  else
    if b - oh >= n then
      w.t = 0
    else
      fetch(w, oh - n + 1, b - n)
      for j = oh - n + 1, b - n do w.t = w.t - get(w, j) end
    end
  end
  w.h = b
  prune(w, oh)
end

-- Sum of buckets b-n+1..b, memoised per call (kept exact by add_range).
local function rsum(w, b)
  if w.h ~= nil and b == w.h then return w.t end
  local ws = w.ws
  if not ws then ws = {}; w.ws = ws end
  local s = ws[b]
  if s then return s end
  s = 0
  fetch(w, b - w.n + 1, b)
  for j = b - w.n + 1, b do s = s + get(w, j) end
  ws[b] = s
  return s
end

-- Count, sum and sum of squares of buckets b-n..b-1, memoised per call.
local function bstats(w, b)
  if w.h ~= nil and b == w.h then return w.t, w.q end
  local bs = w.bs
  if not bs then bs = {}; w.bs = bs end
  local e = bs[b]
  if not e then
    local t, q = 0, 0
    fetch(w, b - w.n, b - 1)
    for j = b - w.n, b - 1 do local x = get(w, j); t = t + x; q = q + x * x end
    e = { t, q }
    bs[b] = e
  end
  return e[1], e[2]
end

-- Makes the union key hold buckets h-n+1..h (DISTINCT), if it was built for another head.
-- DISTINCT: members this call added to a bucket are PFADDed to the bucket's key in one
-- variadic call per bucket (w.pend[b]), here, before anything reads the bucket keys (a union
-- rebuild, a late op's count) and at flush. The head's count reads the union key, which each
-- new member goes to at once, so values are those of adding one member at a time.
local function sync(w)
  local pend = w.pend
  if not pend then return end
  w.pend = nil
  for b, list in pairs(pend) do
    local i, n, changed = 1, #list, false
    while i <= n do
      local j = min(i + CHUNK - 1, n)
      if call('PFADD', bkey(w, b), unpack(list, i, j)) == 1 then changed = true end
      i = j + 1
    end
    if changed then made(w, b) end -- 0: the key was there (and has its expiry)
  end
end

local function union(w)
  if w.uh == w.h then return end
  sync(w)
  local keys = {}
  for j = max(w.h - w.n + 1, w.lo), w.h do keys[#keys + 1] = w.bk .. fint(j) end
  call('DEL', w.uk)
  w.uk_new = true -- a new key: its expiry is set at flush
  local i = 1
  repeat -- PFMERGE with no source creates an empty HyperLogLog
    local j = min(i + CHUNK - 1, #keys)
    call('PFMERGE', w.uk, unpack(keys, i, j))
    i = j + 1
  until i > #keys
  w.uh, w.changed = w.h, true -- flush writes u and gives the union the window's expiry
end

local function dcount(w, b)
  if w.ex and w.h ~= nil and b == w.h then return zcard(w) end
  local dc = w.dc
  if not dc then dc = {}; w.dc = dc end
  local c = dc[b]
  if c then return c end
  c = 0
  if w.h ~= nil and b == w.h then
    union(w)
    c = call('PFCOUNT', w.uk)
  elseif w.h ~= nil then
    sync(w)
    local keys = {}
    for j = max(b - w.n + 1, w.lo), min(b, w.h) do keys[#keys + 1] = w.bk .. fint(j) end
    if #keys > 0 then c = call('PFCOUNT', unpack(keys)) end
  end
  dc[b] = c
  return c
end

-- A BASELINE result: the step's count, and the sum and sum of squares of the n steps before
-- it, from which the caller computes mean and standard deviation (all three are integers:
-- printing them is cheap and exact, where mean and deviation would need %.17g here).
local function baseline_out(v, t, q)
  return fnum(v) .. ',' .. fnum(t) .. ',' .. fnum(q)
end

-- Value as of bucket b without changing anything.
local function peek(w, b)
  if w.kind == 'b' then
    if w.h == nil then return baseline_out(0, 0, 0) end
    local t, q = bstats(w, b)
    return baseline_out(get(w, b), t, q)
  elseif w.kind == 'd' then
    return dcount(w, b)
  end
  if w.h == nil then return 0 end
  return rsum(w, b)
end

-- Adds a to bucket b of a COUNT/SUM/TOPK window, keeping t and the memoised sums exact.
local function add_range(w, b, a)
  set(w, b, get(w, b) + a)
  if b > w.h - w.n then w.t = w.t + a end
  local ws = w.ws
  if ws then
    for k, s in pairs(ws) do
      if k >= b and k < b + w.n then ws[k] = s + a end
    end
  end
end

-- Moves the head to an op at bucket b (the window's first op sets it); an op older than the
-- lateness allows is too late: counted (k ops) and not applied. Returns true then.
local function enter(w, b, k)
  if w.h == nil then
    w.h, w.lo = b, b
  elseif b > w.h then
    advance(w, b)
  elseif b < w.h - w.lb then
    too_late = too_late + k
    return true
  end
  return false
end

-- TOPK: c more of term at bucket b. Term counts are summed here and written once per (bucket,
-- term) at flush: nothing in this call reads them (values come from the window hash), the
-- topk mode reads them in later calls.
local function count_term(w, b, term, c)
  local ti = w.ti[b]
  if not ti then ti = {}; w.ti[b] = ti; w.tib[#w.tib + 1] = b end
  ti[term] = (ti[term] or 0) + c
end

local function apply(w, b, amount, member)
  if enter(w, b, 1) then return peek(w, b) end
  local kind = w.kind
  if kind == 'c' or kind == 's' then
    w.changed = true
    add_range(w, b, kind == 'c' and 1 or amount)
    return rsum(w, b)
  elseif kind == 'b' then
    w.changed = true
    local c = get(w, b) + 1
    set(w, b, c)
    if b < w.h and b >= w.h - w.n then w.t = w.t + 1; w.q = w.q + 2 * c - 1 end
    if w.bs then
      for k, e in pairs(w.bs) do
        if k > b and k <= b + w.n then e[1] = e[1] + 1; e[2] = e[2] + 2 * c - 1 end
      end
    end
    local t, q = bstats(w, b)
    return baseline_out(c, t, q)
  elseif kind == 'd' then
    w.changed = true
    local pm = w.pm[b]
    if not pm then pm = {}; w.pm[b] = pm end
    -- a member this call already added to bucket b cannot change it: not added again
    if member ~= '' and not pm[member] then
      pm[member] = true
      local pend = w.pend
      if not pend then pend = {}; w.pend = pend end
      local l = pend[b]
      if not l then l = {}; pend[b] = l end
      l[#l + 1] = member
      if b < w.lo then w.lo = b end
      local hc = w.dc and w.h ~= nil and w.dc[w.h]
      w.dc = nil -- a count over b may change
      if w.ex then
        -- the head's set: the member with its newest bucket (GT: an older bucket does not
        -- move it back); a new member of the head's buckets is one more
        if b > w.h - w.n then
          local c = zcard(w)
          local zm = w.zm
          local cur = zm and zm[member]
          if cur == nil and w.zempty then cur = false end
          local added
          if cur == nil then -- not looked up (a caller that did not prefetch): ask Redis
            zwrite(w)
            added = call('ZADD', w.zk, 'GT', fint(b), member) == 1
          elseif cur == false or b > cur then
            added = cur == false
            zm[member] = b
            local zp = w.zp
            if not zp then zp = {}; w.zp = zp end
            zp[#zp + 1] = fint(b); zp[#zp + 1] = member
          end
          if added then
            if c == 0 then w.znew = true end -- a new key: its expiry is set at flush
            w.zc = c + 1
            if w.zc > EXACT then to_hll(w) end
          end
        end
      -- keep the head's union current (it is rebuilt anyway if built for another head); if
      -- it already had the member, the head's count stands
      elseif w.uh == w.h and b > w.h - w.n then
        if call('PFADD', w.uk, member) == 0 and hc then w.dc = { [w.h] = hc } end
      end
    end
    return dcount(w, b)
  else -- 't'
    w.changed = true
    if member ~= '' then
      count_term(w, b, member, 1)
      add_range(w, b, 1)
    end
    return rsum(w, b)
  end
end

-- A run of k ops of one COUNT, BASELINE or TOPK window at bucket b, applied at once: the same
-- state as k single ops (integer arithmetic, exact), and the value after the last; the values
-- before it follow from it (the count went up by one per op). TOPK: ARGV[at..] holds nt pairs
-- of a term and how many of the run's ops name it (k = the sum of the counts, or k = 1 and
-- nt = 0 for an op without a term). Returns the value and whether the run was too late (then
-- nothing changed and every op has that value).
local function apply_run(w, b, k, at, nt)
  if enter(w, b, k) then return peek(w, b), true end
  w.changed = true
  if w.kind == 't' then
    local add = 0
    for j = at, at + 2 * nt - 2, 2 do
      local c = tonumber(ARGV[j + 1])
      count_term(w, b, ARGV[j], c)
      add = add + c
    end
    if add > 0 then add_range(w, b, add) end
    return rsum(w, b), false
  end
  if w.kind == 'c' then
    add_range(w, b, k)
    return rsum(w, b), false
  end
  local c0 = get(w, b)
  local c = c0 + k
  set(w, b, c)
  local dq = c * c - c0 * c0 -- the sum of 2x - 1 for x = c0 + 1 .. c
  if b < w.h and b >= w.h - w.n then w.t = w.t + k; w.q = w.q + dq end
  if w.bs then
    for kk, e in pairs(w.bs) do
      if kk > b and kk <= b + w.n then e[1] = e[1] + k; e[2] = e[2] + dq end
    end
  end
  local t, q = bstats(w, b)
  return baseline_out(c, t, q), false
end

-- Writes one window's buffered state back; every key written gets its expiry.
local function flush(w)
  if not w.changed then return end
  sync(w)
  zwrite(w)
  local ttl = (w.n + 2 + w.lb) * w.step
  for _, b in ipairs(w.tib or {}) do
    local ti = w.ti[b] -- nil if the bucket was pruned in this call after its increments
    if ti then
      local bk = bkey(w, b)
      for term, c in pairs(ti) do
        if call('HINCRBY', bk, term, c) == c then made(w, b) end -- a new term: maybe a new key
      end
    end
  end
  local now = now_ms()
  local refresh = not w.x or w.x - now < ttl / 2
  local args = { 'h', fint(w.h), 'lo', fint(w.lo) }
  if w.kind ~= 'd' then
    args[#args + 1] = 't'; args[#args + 1] = fnum(w.t)
  end
  if w.kind == 'b' then
    args[#args + 1] = 'q'; args[#args + 1] = fnum(w.q)
  end
  if w.kind == 'd' and w.uh then
    args[#args + 1] = 'u'; args[#args + 1] = fint(w.uh)
  end
  if w.ex then
    args[#args + 1] = 'z'; args[#args + 1] = '1'
  end
  if w.modechg then -- the other mode's field goes
    w.del = w.del or {}
    w.del[#w.del + 1] = w.ex and 'u' or 'z'
  end
  if refresh then
    args[#args + 1] = 'x'; args[#args + 1] = fint(now + ttl)
  end
  local kb = w.kb
  if w.made then
    for b in pairs(w.made) do if not kb or b > kb then kb = b end end
    if kb ~= w.kb then args[#args + 1] = 'k'; args[#args + 1] = fint(kb) end
  end
  for b in pairs(w.dirty) do
    args[#args + 1] = fint(b); args[#args + 1] = fnum(w.v[b])
  end
  callv('HSET', w.hk, args)
  if w.del and #w.del > 0 then callv('HDEL', w.hk, w.del) end
  local i = 1
  while w.delk and i <= #w.delk do
    local j = min(i + CHUNK - 1, #w.delk)
    call('DEL', unpack(w.delk, i, j))
    i = j + 1
  end
  if refresh then
    -- the hash, the union (same expiry as the hash that says it is valid) and every bucket
    -- key the window can still read (made ones among them), all at once
    call('PEXPIRE', w.hk, ttl)
    if w.uh then call('PEXPIRE', w.uk, ttl) end
    if w.ex and (w.zc or 1) > 0 then call('PEXPIRE', w.zk, ttl) end
    if w.bk then
      for b = max(w.lo, w.h - w.n - w.lb), w.h do call('PEXPIRE', bkey(w, b), ttl) end
    end
  else
    if w.uk_new and w.uh then call('PEXPIRE', w.uk, ttl) end
    if w.znew and w.ex and (w.zc or 1) > 0 then call('PEXPIRE', w.zk, ttl) end
    if w.made then
      for b in pairs(w.made) do call('PEXPIRE', bkey(w, b), ttl) end
    end
  end
  return ttl
end

-- A result as the reply and the memo carry it: its exact text (fnum: integral values, nearly
-- all, as memoised digits).
local function result(x)
  if type(x) ~= 'number' then return x end
  return fnum(x)
end

------------------------------------------------------------------------------------------
-- Modes.

-- The ops of an apply or peek call, window by window: calls fn(w, bucket, amount, member)
-- for each op in the order sent and stores what it returns in outs[base + i]. A window sent
-- in runs (ng < cnt: COUNT and BASELINE as bucket, k; DISTINCT as bucket, member, k, for k
-- consecutive ops of the same bucket and member; TOPK as bucket, k, its terms counted) gets
-- one result per run: "v*k" (the value after the run's last op; the ops before it had one
-- less each), or "v@k" (every op of the run has v: a DISTINCT member already added, or a run
-- too late). Returns the last index written (one per result, not per op).
local function each_op(nwin, lateness, outs, base, fn, peeking)
  local wbase = 14
  local a = wbase + nwin * 6 -- the next op's first argument
  local i = base
  for wi = 0, nwin - 1 do
    local p = wbase + wi * 6
    local step, cnt, ng = tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5])
    local w = win(ARGV[p], ARGV[p + 1], tonumber(ARGV[p + 2]), step, ceil(lateness / step))
    local kind = w.kind
    if ng < cnt and kind == 'd' then
      if not peeking then zprefetch(w, a, ng, 3) end
      for _ = 1, ng do
        local ks = ARGV[a + 2]
        local k = bnum(ks)
        local tl = too_late
        local v = result(fn(w, bnum(ARGV[a]), 1, ARGV[a + 1]))
        if too_late > tl then too_late = too_late + k - 1 end
        i = i + 1
        outs[i] = k == 1 and v or (v .. '@' .. ks)
        a = a + 3
      end
    elseif ng < cnt then -- COUNT, BASELINE: bucket, k; TOPK: bucket, k, nterms, (term, count)...
      local topk = kind == 't'
      for _ = 1, ng do
        local ks = ARGV[a + 1]
        local b, k = bnum(ARGV[a]), bnum(ks)
        local nt = topk and tonumber(ARGV[a + 2]) or 0
        i = i + 1
        if peeking then
          local v = result(fn(w, b))
          outs[i] = k == 1 and v or (v .. '@' .. ks)
        elseif k == 1 and not topk then
          outs[i] = result(fn(w, b, 1, ''))
        else
          local v, late = apply_run(w, b, k, a + 3, nt)
          outs[i] = k == 1 and result(v) or (result(v) .. (late and '@' or '*') .. ks)
        end
        a = a + (topk and 3 + 2 * nt or 2)
      end
    elseif kind == 'c' or kind == 'b' then
      for _ = 1, cnt do
        i = i + 1
        outs[i] = result(fn(w, bnum(ARGV[a]), 1, ''))
        a = a + 1
      end
    elseif kind == 's' then
      for _ = 1, cnt do
        i = i + 1
        outs[i] = result(fn(w, bnum(ARGV[a]), tonumber(ARGV[a + 1]), ''))
        a = a + 2
      end
    else
      if kind == 'd' and not peeking then zprefetch(w, a, cnt, 2) end
      for _ = 1, cnt do
        i = i + 1
        outs[i] = result(fn(w, bnum(ARGV[a]), 1, ARGV[a + 1]))
        a = a + 2
      end
    end
  end
  return i
end

-- Whether memo record "first-last" lies wholly below the commit point (no replay needs it).
local function below(rec, committed)
  local l = tonumber(string.match(rec, '%-(%d+)$'))
  return l == nil or l < committed -- no dash: a per-offset field of an older version
end

local function do_apply()
  local src = ARGV[3]
  local committed = tonumber(ARGV[4])
  local memo_ttl, fence_ttl, lateness = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local losscheck, nwin = ARGV[8] == '1', tonumber(ARGV[9])
  local first_s, last_s = ARGV[10], ARGV[11]
  local first, last = tonumber(first_s), tonumber(last_s)
  local fk, mk = P .. ':fence:' .. src, P .. ':memo:' .. src
  local fence = tonumber(call('GET', fk) or '-1')
  if losscheck and fence < 0 and committed > 0 then
    return redis.error_reply('FPLOST source ' .. src .. ' has committed offsets but no fence')
  end
  if first <= fence then
    -- a replay: nothing is applied; the caller answers the replayed offsets from these
    -- records (or a peek) and sends the rest again
    local out, old = { 'R', fint(fence) }, {}
    local kv = call('HGETALL', mk)
    for j = 1, #kv, 2 do
      if below(kv[j], committed) then
        old[#old + 1] = kv[j]
      else
        out[#out + 1] = kv[j]; out[#out + 1] = kv[j + 1]
      end
    end
    if #old > 0 then callv('HDEL', mk, old) end
    return out
  end

  local outs = {}
  local n = each_op(nwin, lateness, outs, 0, apply)
  local maxttl = fence_ttl
  for _, w in ipairs(WL) do
    local ttl = flush(w)
    if ttl and ttl > maxttl then maxttl = ttl end
  end
  local res = table.concat(outs, ';', 1, n)
  -- the memo: one record per call, "first-last" -> the caller's op index, '|', the results
  local rec = first_s .. '-' .. last_s
  call('HSET', mk, rec, ARGV[12] .. '|' .. res)
  call('PEXPIRE', mk, memo_ttl)
  call('SET', fk, last_s, 'PX', maxttl)
  -- drop the records wholly below the commit point (a handful: the calls since the last commit)
  local old = {}
  for _, f in ipairs(call('HKEYS', mk)) do
    if below(f, committed) then old[#old + 1] = f end
  end
  if #old > 0 then callv('HDEL', mk, old) end
  return { 'A', fint(too_late), res }
end

-- Values as of each op's bucket, nothing written (replayed offsets whose memo is gone).
local function do_peek()
  local outs = {}
  local n = each_op(tonumber(ARGV[9]), tonumber(ARGV[7]), outs, 0,
                    function(w, b) return peek(w, b) end, true)
  return { 'P', fint(too_late), table.concat(outs, ';', 1, n) }
end

local function do_fence()
  local f = call('GET', P .. ':fence:' .. ARGV[3])
  return { f or '-1' }
end

-- The candidates of one TOPK window (see topk in the protocol), appended to out.
local function topk_of(out, key, n, b, k)
  local r = call('HMGET', P .. ':w:' .. key, 'h', 'lo')
  if not r[1] then return end
  local h, lo = tonumber(r[1]), tonumber(r[2])
  local acc, terms = {}, {}
  for j = max(b - n + 1, lo), min(b, h) do
    local kv = call('HGETALL', P .. ':wb:' .. key .. ':' .. fint(j))
    for i = 1, #kv, 2 do
      local t = kv[i]
      if acc[t] == nil then terms[#terms + 1] = t; acc[t] = 0 end
      acc[t] = acc[t] + tonumber(kv[i + 1])
    end
  end
  local counts = {}
  for i = 1, #terms do counts[i] = acc[terms[i]] end
  table.sort(counts, function(x, y) return x > y end)
  local th = counts[k] or -1
  for i = 1, #terms do
    local t = terms[i]
    if acc[t] >= th then out[#out + 1] = t; out[#out + 1] = fint(acc[t]) end
  end
end

-- Several TOPK windows in one call: each one's candidates, preceded by how many there are.
local function do_topk()
  local out, m = {}, tonumber(ARGV[3])
  for i = 0, m - 1 do
    local a = 4 + i * 5
    local at = #out + 1
    out[at] = '0'
    topk_of(out, ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]))
    out[at] = fint((#out - at) / 2)
  end
  return out
end

local mode = ARGV[1]
if mode == 'apply' then return do_apply()
elseif mode == 'peek' then return do_peek()
elseif mode == 'fence' then return do_fence()
elseif mode == 'topk' then return do_topk()
end
return redis.error_reply('ERR flashpoint store script: unknown mode')
