--[[
store_lifecycle.lua - the incident-lifecycle half of the store: versioned state per
(rule, entity), a fence and a memo per source, and the index of open incidents.

Runs unchanged in Redis (EVALSHA) and in the in-process store's emulation (store_mem.c),
like store_windows.lua; keep to the common subset of Lua 5.1 and 5.4 and to the commands
the emulation has (GET SET HGET HMGET HSET HDEL HGETALL DEL PEXPIRE).

Key layout (P = prefix, S = source "topic:partition", K = "rule|entity"):
  P:lc:K          string "<version> <state JSON>", expires state_ttl after its last write
  P:lcf:S         string: highest offset whose lifecycle steps are applied (the fence)
  P:lcm:S         hash "<offset>" -> JSON array of the records that offset produced;
                  "_lo" = lowest offset that may still have a field
  P:lco           hash K -> due time (ms, event time) of an open incident: it resolves if
                  no signal arrives by then. Small: one field per open incident.

Protocol (ARGV only, replies are arrays of strings):
  load   P S due_by max n K1..Kn -> { fence or "-1", state1 or false, ..., stateN,
                                    Kd1, stated1, Kd2, stated2, ... }  (state = "<v> <json>")
                                 the Kd are up to `max` open incidents due at or before
                                 due_by that are not among K1..Kn (sweeps); due_by "-" = none
  memo   P S n O1..On            -> { text1 or false, ... }
  commit P S fence committed memo_ttl state_ttl n (K v state due)*n m (O text)*m
                                 -> { "ok" } or { "conflict", K }
]]

local call = redis.call
local op = ARGV[1]
local P = ARGV[2]

local function fint(x) return string.format('%d', x) end

if op == 'load' then
  local S, due_by, max, n = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  local res, asked = { call('GET', P .. ':lcf:' .. S) or '-1' }, {}
  for i = 1, n do
    local K = ARGV[6 + i]
    asked[K] = true
    res[i + 1] = call('GET', P .. ':lc:' .. K)
  end
  if due_by ~= '-' and max > 0 then
    local now, found = tonumber(due_by), 0
    local all = call('HGETALL', P .. ':lco')
    for i = 1, #all, 2 do
      if found >= max then break end
      local K = all[i]
      if not asked[K] and tonumber(all[i + 1]) <= now then
        local st = call('GET', P .. ':lc:' .. K)
        if st then
          res[#res + 1] = K
          res[#res + 1] = st
          found = found + 1
        else
          call('HDEL', P .. ':lco', K) -- the state expired: nothing left to resolve
        end
      end
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
  local n = tonumber(ARGV[8])
  local base = 8
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
    if due >= 0 then call('HSET', P .. ':lco', K, fint(due))
    else call('HDEL', P .. ':lco', K) end
  end
  local mbase = base + n * 4
  local m = tonumber(ARGV[mbase + 1])
  local memo = P .. ':lcm:' .. S
  for i = 0, m - 1 do
    call('HSET', memo, ARGV[mbase + 2 + i * 2], ARGV[mbase + 3 + i * 2])
  end
  -- prune memo entries below the committed offset (each offset is examined once)
  local lo = tonumber(call('HGET', memo, '_lo') or '-1')
  if lo < 0 and m > 0 then lo = tonumber(ARGV[mbase + 2]) end
  if lo >= 0 and committed > lo then
    local stop = committed
    if stop - lo > 20000 then stop = lo + 20000 end
    for o = lo, stop - 1 do call('HDEL', memo, fint(o)) end
    lo = stop
  end
  if lo >= 0 then call('HSET', memo, '_lo', fint(lo)) end
  call('PEXPIRE', memo, fint(memo_ttl))
  local fkey = P .. ':lcf:' .. S
  local cur = tonumber(call('GET', fkey) or '-1')
  if fence > cur then cur = fence end
  call('SET', fkey, fint(cur), 'PX', fint(state_ttl))
  return { 'ok' }
end

return redis.error_reply('store_lifecycle.lua: unknown operation ' .. tostring(op))
