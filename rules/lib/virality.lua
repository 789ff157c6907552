-- virality.lua: virality and crisis signals for Flashpoint rules (require "virality").
-- Every function is pure: numbers in, number (or severity) out. Formulas are repeated in
-- docs/rules.md; tests/unit/test_rules.c checks each against hand-computed values.
local M = {}

local sqrt, max, min, log = math.sqrt, math.max, math.min, math.log

-- zscore(recent, recent_ms, base, floor)
--   How unusual `recent` mentions in the last `recent_ms` are against a BASELINE window
--   `base` (per-step mean and population stddev over base.step_ms steps).
--   k  = recent_ms / base.step_ms            (recent window length in baseline steps)
--   mu = base.mean * k                       (expected count)
--   sd = max(base.stddev * sqrt(k), floor)   (counts add, so variances add: sd grows as sqrt(k);
--                                             the floor, default 1, guards stddev = 0)
--   z  = (recent - mu) / sd
function M.zscore(recent, recent_ms, base, floor)
  local k = recent_ms / base.step_ms
  local mu = base.mean * k
  local sd = max(base.stddev * sqrt(k), floor or 1)
  return (recent - mu) / sd
end

-- surge_ratio(short, short_ms, long, long_ms)
--   Smoothed ratio of the short-window rate to the long-window rate (an EWMA crossover
--   approximated with two windows): expected = long * short_ms / long_ms,
--   ratio = (short + 1) / (expected + 1). 1 means "as usual"; the +1 keeps tiny counts sane.
function M.surge_ratio(short, short_ms, long, long_ms)
  local expected = long * short_ms / long_ms
  return (short + 1) / (expected + 1)
end

-- negative_share(negative, total, min_volume)
--   negative / total, or 0 while total < min_volume (default 20): a share needs volume.
function M.negative_share(negative, total, min_volume)
  if total < (min_volume or 20) or total <= 0 then return 0 end
  return negative / total
end

-- velocity(count, window_ms): events per minute over the window (reshares/min of one post).
function M.velocity(count, window_ms)
  return count * 60000 / window_ms
end

-- reach(sum_followers): log10(1 + total followers) of the authors in a window, so that
-- 1k, 100k and 10M followers read 3, 5 and 7.
function M.reach(sum_followers)
  return log(1 + max(sum_followers, 0), 10)
end

-- is_influencer(m, min_followers): verified author, or at least min_followers (default 100k).
function M.is_influencer(m, min_followers)
  local a = m.author
  if not a then return false end
  return a.verified == true or (tonumber(a.followers) or 0) >= (min_followers or 100000)
end

-- sentiment(m): the mention's own score in [-1, 1], else fp.sentiment(m.text) (lexicon).
function M.sentiment(m)
  local s = m.sentiment
  if type(s) == "number" then return max(-1, min(1, s)) end
  return fp.sentiment(m.text or "")
end

-- is_negative(m, threshold): sentiment(m) <= threshold (default -0.25).
function M.is_negative(m, threshold)
  return M.sentiment(m) <= (threshold or -0.25)
end

local order = { none = 0, sev4 = 1, sev3 = 2, sev2 = 3, sev1 = 4 }
local names = { [0] = nil, "sev4", "sev3", "sev2", "sev1" }

-- ladder(x, thresholds): the highest severity whose threshold x reaches, else nil.
--   ladder(7, {sev4 = 3, sev3 = 5, sev2 = 8, sev1 = 12}) == "sev3"
function M.ladder(x, t)
  for level = 4, 1, -1 do
    local name = names[level]
    if t[name] and x >= t[name] then return name end
  end
  return nil
end

-- cap(sev, at): the lower of two severities (nil is lowest).
function M.cap(sev, at)
  if sev == nil or at == nil then return nil end
  return order[sev] <= order[at] and sev or at
end

-- author_guard(sev, authors, volume, opts)
--   Caps `sev` at opts.cap (default "sev4") when the distinct authors are too few to be a
--   real crowd: authors < opts.min_authors (default 5) or authors / volume < opts.min_ratio
--   (default 0.3). One account, or a bot ring posting many times, cannot open a sev1.
function M.author_guard(sev, authors, volume, opts)
  opts = opts or {}
  if sev == nil then return nil end
  local few = authors < (opts.min_authors or 5)
  local ratio = volume > 0 and authors / volume or 1
  if few or ratio < (opts.min_ratio or 0.3) then return M.cap(sev, opts.cap or "sev4") end
  return sev
end

-- Crisis vocabulary: case-insensitive, word-boundary phrase matcher (C-backed).
M.crisis_terms = {
  "recall", "recalled", "lawsuit", "sued", "class action", "boycott", "food poisoning",
  "data breach", "breach", "hacked", "leak", "leaked", "outage", "scam", "fraud",
  "contamination", "contaminated", "injured", "injury", "explode", "exploded", "fire",
  "unsafe", "toxic", "refund", "discrimination", "racist", "harassment", "layoffs",
}
M.crisis = fp.keywords(M.crisis_terms)

return M
