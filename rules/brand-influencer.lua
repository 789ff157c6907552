-- brand.influencer: verified or high-follower authors post negatively about a brand.
local v = require "virality"

return fp.rule {
  id = "brand.influencer",
  description = "Influential authors joining a negative conversation",
  owner = "comms-oncall",
  key = "brand",
  when = function(m) return v.is_influencer(m, 100000) and v.is_negative(m) end,
  windows = {
    influencers = fp.distinct { size = "1h", step = "5m", of = "author.id" },
    reach       = fp.sum      { size = "1h", step = "5m", of = "author.followers" },
  },
  severity = function(w)
    local r = v.reach(w.reach.value)                      -- log10 of followers reached
    if w.influencers.value >= 5 or r >= 7.5 then return "sev2" end
    if w.influencers.value >= 2 or r >= 6.5 then return "sev3" end
    return "sev4"
  end,
  resolve_after = "2h",
  respond = "brief the account owner; consider reaching out to the authors",
}
