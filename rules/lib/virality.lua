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

-- history_step(step): an `of` function for a DISTINCT window that counts the baseline steps
--   in which the entity was seen (the member is the step index of the mention's event time):
--     seen = fp.distinct { size = "7d", step = "1h", of = v.history_step("10m") }
--   Pair it with a BASELINE window of the same size and step, and read it with warm().
function M.history_step(step)
  local ms = fp.duration(step)
  return function(m) return m.created_at_ms // ms end
end

-- warm(base, seen, min_steps)
--   A BASELINE window averages over all of its n = size/step steps, also those before the
--   entity was first seen: a young baseline looks nearly empty and every mention a spike.
--   `seen` (history_step window) counts the steps with mentions, the current one included, so
--   h = min(seen - 1, n) earlier steps hold history. Returns nil while h < min_steps (default
--   12: not enough history to judge), else the baseline rescaled to those h steps:
--     mean' = mean * n / h;  var' = q / h - mean'^2  with  q = n * (stddev^2 + mean^2)
--   (the sum of squares over the n steps). Quiet steps inside the history count as missing,
--   which errs towards a higher baseline (fewer alerts). seen == 0 cannot come from the engine
--   (the current mention is always counted): it means no history was read, e.g. window values
--   set by hand in a test, and the baseline is used as it is.
function M.warm(base, seen, min_steps)
  if not seen or seen == 0 then return base end
  local n = base.size_ms / base.step_ms
  local h = min(seen - 1, n)
  if h < (min_steps or 12) then return nil end
  local mean = base.mean * n / h
  local q = n * (base.stddev * base.stddev + base.mean * base.mean)
  local var = q / h - mean * mean
  return { value = base.value, mean = mean, stddev = sqrt(max(var, 0)), step_ms = base.step_ms,
           size_ms = base.size_ms, history_steps = h }
end

-- surge_guard(sev, authors, volume, expected, opts)
--   author_guard applied to the surge alone: the mentions above the expected count must come
--   from new people. A bot ring joining ordinary traffic keeps the overall author ratio high
--   (the usual crowd is still there), so the ratio is taken over the excess:
--     surge = volume - expected,  crowd = authors - expected
--   (at most one distinct author per expected mention, so crowd is a lower bound of the
--   authors behind the surge), then author_guard(sev, crowd, surge, opts).
function M.surge_guard(sev, authors, volume, expected, opts)
  local e = max(expected or 0, 0)
  return M.author_guard(sev, max(authors - e, 0), max(volume - e, 0), opts)
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
