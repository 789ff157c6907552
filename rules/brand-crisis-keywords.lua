-- brand.crisis-keywords: mentions of a brand with crisis vocabulary (recall, lawsuit,
-- boycott, food poisoning, data breach, ...) reaching a volume from many people, and unusual
-- for the brand: the severity is the lower of a volume ladder and a z-score ladder against the
-- brand's own keyword baseline (people say "scam" every day). Until the baseline holds 2 hours
-- of history, volume alone can only open a sev4.
local v = require "virality"

return fp.rule {
  id = "brand.crisis-keywords",
  version = 2,
  description = "Crisis vocabulary around a brand, with volume",
  owner = "comms-oncall",
  key = "brand",
  when = function(m) return v.crisis:match(m.text) ~= nil end,
  windows = {
    hits    = fp.count    { size = "30m", step = "1m" },
    authors = fp.distinct { size = "30m", step = "1m", of = "author.id" },
    terms   = fp.topk     { size = "30m", step = "1m", of = "terms" },
    base    = fp.baseline { size = "7d",  step = "10m" },
    seen    = fp.distinct { size = "7d",  step = "1h", of = v.history_step("10m") },
  },
  severity = function(w)
    local sev = v.ladder(w.hits.value, { sev4 = 5, sev3 = 20, sev2 = 50, sev1 = 150 })
    local base = v.warm(w.base, w.seen.value, 12)
    if not base then
      sev = v.cap(sev, "sev4")                              -- no history yet: watch only
    else
      local z = v.zscore(w.hits.value, w.hits.size_ms, base, 2)
      sev = v.cap(sev, v.ladder(z, { sev4 = 3, sev3 = 5, sev2 = 8, sev1 = 12 }))
      sev = v.surge_guard(sev, w.authors.value, w.hits.value, base.mean * w.hits.size_ms / base.step_ms)
    end
    return v.author_guard(sev, w.authors.value, w.hits.value)
  end,
  resolve_after = "1h",
  respond = "loop in legal and the product owner; do not speculate publicly",
  topics = { default = "incidents", sev1 = "incidents.pager", sev2 = "incidents.pager" },
}
