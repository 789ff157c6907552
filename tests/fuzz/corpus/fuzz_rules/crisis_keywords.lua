-- brand.crisis-keywords: mentions of a brand with crisis vocabulary (recall, lawsuit,
-- boycott, food poisoning, data breach, ...) reaching a volume from many people.
local v = require "virality"

return fp.rule {
  id = "brand.crisis-keywords",
  description = "Crisis vocabulary around a brand, with volume",
  owner = "comms-oncall",
  key = "brand",
  when = function(m) return v.crisis:match(m.text) ~= nil end,
  windows = {
    hits    = fp.count    { size = "30m", step = "1m" },
    authors = fp.distinct { size = "30m", step = "1m", of = "author.id" },
    terms   = fp.topk     { size = "30m", step = "1m", of = "terms" },
  },
  severity = function(w)
    local sev = v.ladder(w.hits.value, { sev4 = 5, sev3 = 20, sev2 = 50, sev1 = 150 })
    return v.author_guard(sev, w.authors.value, w.hits.value)
  end,
  resolve_after = "1h",
  respond = "loop in legal and the product owner; do not speculate publicly",
  topics = { default = "incidents", sev1 = "incidents.pager", sev2 = "incidents.pager" },
}
