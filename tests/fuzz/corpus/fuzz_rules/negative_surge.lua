-- brand.negative-surge: negative mentions of a brand spike against their own weekly baseline,
-- and enough distinct people are behind them to be a real crowd.
local v = require "virality"

return fp.rule {
  id = "brand.negative-surge",
  version = 1,
  description = "Negative mentions of a brand well above their baseline",
  owner = "comms-oncall",
  key = "brand",
  when = function(m) return v.is_negative(m) end,
  windows = {
    recent  = fp.count    { size = "10m", step = "1m" },
    base    = fp.baseline { size = "7d",  step = "10m" },
    authors = fp.distinct { size = "10m", step = "1m", of = "author.id" },
  },
  severity = function(w, m)
    if w.recent.value < 10 then return nil end             -- too few to mean anything
    local z = v.zscore(w.recent.value, w.recent.size_ms, w.base, 2)
    local sev = v.ladder(z, { sev4 = 3, sev3 = 5, sev2 = 8, sev1 = 12 })
    return v.author_guard(sev, w.authors.value, w.recent.value)
  end,
  resolve_after = "30m",
  respond = "acknowledge publicly, gather facts, brief the brand owner",
  topics = { default = "incidents", sev1 = "incidents.pager", sev2 = "incidents.pager" },
}
