-- Fixture for tests/kafka/test_determinism.c: like rules-core/alarm.lua, but incidents
-- resolve after 2 minutes without an ALARM mention of their brand, so the bursts of
-- enginelib.c open, escalate, resolve and reopen incidents, and resolutions are found by
-- the engine's sweeps as well as by the next signal.
return fp.rule {
  id = "core.alarm",
  version = 1,
  description = "ALARM mentions per brand, resolving after 2 quiet minutes",
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
  resolve_after = "2m",
  respond = "page the brand owner",
}
