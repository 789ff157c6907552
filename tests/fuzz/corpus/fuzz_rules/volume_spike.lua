-- brand.volume-spike: all mentions of a brand (any sentiment) far above the usual rate.
local v = require "virality"

return fp.rule {
  id = "brand.volume-spike",
  description = "Mention volume of a brand far above its baseline",
  owner = "social-team",
  key = "brand",
  windows = {
    recent  = fp.count    { size = "10m", step = "1m" },
    base    = fp.baseline { size = "7d",  step = "10m" },
    authors = fp.distinct { size = "10m", step = "1m", of = "author.id" },
    tags    = fp.topk     { size = "1h",  step = "5m", of = "hashtags" },
  },
  severity = function(w)
    if w.recent.value < 50 then return nil end
    local z = v.zscore(w.recent.value, w.recent.size_ms, w.base, 3)
    local sev = v.ladder(z, { sev4 = 4, sev3 = 6, sev2 = 10 })   -- volume alone never pages
    return v.author_guard(sev, w.authors.value, w.recent.value)
  end,
  resolve_after = "1h",
  respond = "check what is trending (top hashtags) before reacting",
}
