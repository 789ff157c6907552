--[[
store_lifecycle.lua - the incident-lifecycle half of the store: versioned state per
(rule, entity), a fence and a memo per source, and the index of open incidents.

Runs unchanged in Redis (EVALSHA) and in the in-process store's emulation (store_mem.c),
like store_windows.lua; keep to the common subset of Lua 5.1 and 5.4 and to the commands
the emulation has (GET SET HGET HMGET HSET HDEL HGETALL HKEYS DEL PEXPIRE EXISTS ZADD ZREM
ZRANGEBYSCORE ZCOUNT).

Key layout (P = prefix, S = source "topic:partition", K = "rule|entity"):
  P:lc:K          string "<version> <state JSON>", expires state_ttl after its last write
  P:lcf:S         string: highest offset whose lifecycle steps are applied (the fence)
  P:lcm:S         hash "<offset>" -> JSON array of the records that offset produced; fields
                  below the committed offset are dropped at every commit
  P:lcz           sorted set: member K, score = due time (ms, event time) of an open
                  incident: it resolves if no signal arrives by then. Load and commit read
                  only the due end (ZRANGEBYSCORE, ZCOUNT), so a run's cost does not grow with
                  the number of open incidents. (Earlier versions kept the hash P:lco and
                  read it whole twice a run: 159 us a call in Redis with 206 incidents
                  open. A load moves a leftover P:lco into P:lcz.)
  P:silence       hash K -> "<until wall ms> <reason>": a silence mutes paging for K until
                  then (events are still recorded on the default topic, marked silenced)
  P:lcw           hash S -> "<watermark>:<wall ms>": each source's event-time watermark and
                  when it last moved. Sweeps only resolve what is due by the LOW watermark,
                  the minimum over the sources that moved in the last idle_ms (an entity whose
                  mentions come from several partitions is quiet only when all of them say
                  so; a source idle longer than idle_ms no longer holds the others back).

Protocol (ARGV only, replies are arrays of strings):
  load   P S wm now idle max n K1..Kn
                                 -> { fence or "-1", low watermark or "-", state1 or false, ...,
                                      stateN, silence1 or false, ..., silenceN,
                                      Kd1, stated1, Kd2, stated2, ... }  (state = "<v> <json>")
                                 wm is S's watermark ("-" = no sweeps); the Kd are up to `max`
                                 open incidents due by the low watermark that are not among
                                 K1..Kn (sweeps)
  memo   P S n O1..On            -> { text1 or false, ... }
  register P S now state_ttl     -> { "ok" }  a source just assigned: it holds the low
                                 watermark back (from its last known watermark, or from the
                                 start of time) until it reports, or goes idle
  commit P S fence committed memo_ttl state_ttl wm now idle n (K v state due)*n m (O text)*m
                                 -> { "ok", number of open incidents due by the low watermark
                                      after this commit } or { "conflict", K }
]]

local call = redis.call
local unpack = unpack or table.unpack
local op = ARGV[1]
local P = ARGV[2]

local function fint(x) return string.format('%d', x) end

-- The low watermark: the minimum over the sources that moved in the last idle ms, starting
-- from source S's own watermark wm.
local function low_watermark(S, wm, now, idle)
  local low = wm
  local all = call('HGETALL', P .. ':lcw')
  for i = 1, #all, 2 do
    if all[i] ~= S then
      local w, t = string.match(all[i + 1], '^(-?%d+):(%d+)$')
      if w and now - tonumber(t) <= idle and tonumber(w) < low then low = tonumber(w) end
    end
  end
  return low
end

-- A P:lco hash left by an older version (rolling upgrade): its entries move into P:lcz,
-- at every load and commit while older instances may still write it. An entry an older
-- instance deletes from P:lco after the move stays in P:lcz and is dropped when swept (its
-- state is closed, or gone). Going back to an older version needs the reverse move.
local function migrate_index()
  local old = P .. ':lco'
  if call('EXISTS', old) == 0 then return end
  local all = call('HGETALL', old)
  for i = 1, #all, 2 do call('ZADD', P .. ':lcz', all[i + 1], all[i]) end
  call('DEL', old) -- the next commit gives P:lcz its expiry
end

if op == 'load' then
  local S, wm, now, idle = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  local max, n = tonumber(ARGV[7]), tonumber(ARGV[8])
  local res, asked = { call('GET', P .. ':lcf:' .. S) or '-1', '-' }, {}
  for i = 1, n do
    local K = ARGV[8 + i]
    asked[K] = true
    res[i + 2] = call('GET', P .. ':lc:' .. K)
  end
  for i = 1, n do res[n + i + 2] = call('HGET', P .. ':silence', ARGV[8 + i]) end
  migrate_index()
  if wm ~= '-' and max > 0 then
    -- the low watermark over the sources that moved recently (this one included)
    local low = low_watermark(S, tonumber(wm), now, idle)
    res[2] = fint(low)
    -- the incidents due by then, earliest first, a page at a time (asked keys and expired
    -- states do not count towards max)
    local found, off, page, lows = 0, 0, max + n, fint(low)
    while found < max do
      local due = call('ZRANGEBYSCORE', P .. ':lcz', '-inf', lows, 'LIMIT', fint(off), fint(page))
      local gone = 0
      for i = 1, #due do
        local K = due[i]
        if found < max and not asked[K] then
          local st = call('GET', P .. ':lc:' .. K)
          if st then
            res[#res + 1] = K
            res[#res + 1] = st
            found = found + 1
          else
            call('ZREM', P .. ':lcz', K) -- the state expired: nothing left to resolve
            gone = gone + 1
          end
        end
      end
      if #due < page then break end
      off = off + page - gone
    end
  end
  return res
end

if op == 'memo' then
  local S, n = ARGV[3], tonumber(ARGV[4])
  local res = {}
  for i = 1, n do res[i] = call('HGET', P .. ':lcm:' .. S, ARGV[4 + i]) end
  return res
end

if op == 'commit' then
  local S = ARGV[3]
  local fence, committed = tonumber(ARGV[4]), tonumber(ARGV[5])
  local memo_ttl, state_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
  local wm, now, idle = ARGV[8], ARGV[9], tonumber(ARGV[10])
  local n = tonumber(ARGV[11])
  local base = 11
  migrate_index() -- before this commit's own index writes, which are newer
  -- check every version first: all or nothing
  for i = 0, n - 1 do
    local K, v = ARGV[base + 1 + i * 4], tonumber(ARGV[base + 2 + i * 4])
    local cur = call('GET', P .. ':lc:' .. K)
    local curv = 0
    if cur then curv = tonumber(string.match(cur, '^(%d+)')) end
    if curv ~= v then return { 'conflict', K } end
  end
  for i = 0, n - 1 do
    local K, v, state, due = ARGV[base + 1 + i * 4], tonumber(ARGV[base + 2 + i * 4]),
                             ARGV[base + 3 + i * 4], tonumber(ARGV[base + 4 + i * 4])
    call('SET', P .. ':lc:' .. K, fint(v + 1) .. ' ' .. state, 'PX', fint(state_ttl))
    if due >= 0 then call('ZADD', P .. ':lcz', fint(due), K)
    else call('ZREM', P .. ':lcz', K) end
  end
  -- the index outlives every state it names (each was written at most state_ttl ago)
  call('PEXPIRE', P .. ':lcz', fint(state_ttl))
  local mbase = base + n * 4
  local m = tonumber(ARGV[mbase + 1])
  local memo = P .. ':lcm:' .. S
  for i = 0, m - 1 do
    call('HSET', memo, ARGV[mbase + 2 + i * 2], ARGV[mbase + 3 + i * 2])
  end
  -- prune memo entries below the committed offset. The hash holds only the offsets that
  -- produced records since the commit before (a handful: incidents are rare), so its fields
  -- are read; walking every offset from the last prune cost one HDEL per input mention.
  -- ("_lo", the walk's position in earlier versions, goes too.)
  local old = {}
  for _, f in ipairs(call('HKEYS', memo)) do
    local o = tonumber(f)
    if not o or o < committed then old[#old + 1] = f end
  end
  local i = 1
  while i <= #old do
    local j = math.min(i + 3999, #old)
    call('HDEL', memo, unpack(old, i, j))
    i = j + 1
  end
  call('PEXPIRE', memo, fint(memo_ttl))
  local fkey = P .. ':lcf:' .. S
  local cur = tonumber(call('GET', fkey) or '-1')
  if fence > cur then cur = fence end
  call('SET', fkey, fint(cur), 'PX', fint(state_ttl))
  local due_now = 0
  if wm ~= '-' then
    call('HSET', P .. ':lcw', S, wm .. ':' .. now)
    call('PEXPIRE', P .. ':lcw', fint(state_ttl))
    -- another source may have moved the low watermark since our load: say whether open
    -- incidents are due now, so the caller sweeps again instead of leaving them open
    local low = low_watermark(S, tonumber(wm), tonumber(now), idle)
    due_now = call('ZCOUNT', P .. ':lcz', '-inf', fint(low))
  end
  return { 'ok', fint(due_now) }
end

if op == 'silence' then -- silence P K until reason: until 0 lifts it
  local K, untilms, reason = ARGV[3], ARGV[4], ARGV[5]
  if tonumber(untilms) <= 0 then call('HDEL', P .. ':silence', K)
  else call('HSET', P .. ':silence', K, untilms .. ' ' .. reason) end
  return { 'ok' }
end

if op == 'register' then
  local S, now, ttl = ARGV[3], ARGV[4], ARGV[5]
  local cur = call('HGET', P .. ':lcw', S)
  local w = cur and string.match(cur, '^(-?%d+):') or '0'
  call('HSET', P .. ':lcw', S, w .. ':' .. now)
  call('PEXPIRE', P .. ':lcw', ttl)
  return { 'ok' }
end

return redis.error_reply('store_lifecycle.lua: unknown operation ' .. tostring(op))
