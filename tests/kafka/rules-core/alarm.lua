-- Fixture for the core kafka tests: incidents that depend on the order of a brand's
-- mentions (enginelib.c gives a few brands bursts of ALARM mentions). A 30-minute count of
-- ALARM mentions per brand opens, escalates and de-escalates incidents; resolve_after is
-- longer than the streams so no incident resolves by the passing of time (no sweeps).
return fp.rule {
  id = "core.alarm",
  version = 1,
  description = "ALARM mentions per brand",
  owner = "tests",
  key = "brand",
  when = function(m) return string.find(m.text, "ALARM", 1, true) ~= nil end,
  windows = { hits = fp.count { size = "30m", step = "1m" } },
  severity = function(w, m)
    local v = w.hits.value
    if v >= 40 then return "sev2" end
    if v >= 20 then return "sev3" end
    if v >= 5 then return "sev4" end
    return nil
  end,
  resolve_after = "1d",
  respond = "page the brand owner",
}
