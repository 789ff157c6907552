-- brand.volume-spike: all mentions of a brand (any sentiment) far above the usual rate, once
-- the baseline holds 2 hours of history, from a crowd (also behind the excess: v.surge_guard).
local v = require "virality"

return fp.rule {
  id = "brand.volume-spike",
  version = 2,
  description = "Mention volume of a brand far above its baseline",
  owner = "social-team",
  key = "brand",
  windows = {
    recent  = fp.count    { size = "10m", step = "1m" },
    base    = fp.baseline { size = "7d",  step = "10m" },
    authors = fp.distinct { size = "10m", step = "1m", of = "author.id" },
    tags    = fp.topk     { size = "1h",  step = "5m", of = "hashtags" },
    seen    = fp.distinct { size = "7d",  step = "1h", of = v.history_step("10m") },
  },
  severity = function(w)
    if w.recent.value < 50 then return nil end
    local base = v.warm(w.base, w.seen.value, 12)
    if not base then return nil end
    local z = v.zscore(w.recent.value, w.recent.size_ms, base, 3)
    local sev = v.ladder(z, { sev4 = 4, sev3 = 6, sev2 = 10 })   -- volume alone never pages
    sev = v.surge_guard(sev, w.authors.value, w.recent.value, base.mean * w.recent.size_ms / base.step_ms)
    return v.author_guard(sev, w.authors.value, w.recent.value)
  end,
  resolve_after = "1h",
  respond = "check what is trending (top hashtags) before reacting",
}
