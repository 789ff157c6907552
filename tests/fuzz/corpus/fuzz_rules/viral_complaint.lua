-- post.viral-complaint: one negative post is being reshared fast (keyed on the root post).
local v = require "virality"

return fp.rule {
  id = "post.viral-complaint",
  description = "A negative post reshared at high velocity",
  owner = "care-team",
  key = "reshare_of",                                     -- only reshares have it
  when = function(m) return v.is_negative(m, -0.2) end,
  windows = {
    reshares = fp.count    { size = "10m", step = "1m" },
    reach    = fp.sum      { size = "10m", step = "1m", of = "author.followers" },
    authors  = fp.distinct { size = "10m", step = "1m", of = "author.id" },
  },
  severity = function(w)
    local per_min = v.velocity(w.reshares.value, w.reshares.size_ms)
    local sev = v.ladder(per_min, { sev4 = 2, sev3 = 5, sev2 = 20, sev1 = 60 })
    if sev and v.reach(w.reach.value) >= 6 then           -- a million+ followers saw it
      sev = v.ladder(per_min, { sev3 = 2, sev2 = 5, sev1 = 20 }) or sev
    end
    return v.author_guard(sev, w.authors.value, w.reshares.value, { min_authors = 3 })
  end,
  resolve_after = "30m",
  respond = "reply to the original poster, offer a direct channel",
  topics = { sev1 = "incidents.pager" },
}
