-- Fixture for the core kafka tests: the same ALARM bursts as alarm.lua, but incidents resolve
-- after 2 quiet minutes of event time and reopen on the next burst, so the incident streams
-- compared against reference runs include resolutions found by the engine's sweeps (which
-- run on wall-clock timers, at whichever batch is current) as well as by the next signal.
return fp.rule {
  id = "core.resolve",
  version = 1,
  description = "ALARM mentions per brand, resolving after 2 quiet minutes",
  owner = "tests",
  key = "brand",
  when = function(m) return string.find(m.text, "ALARM", 1, true) ~= nil end,
  windows = { hits = fp.count { size = "10m", step = "1m" } },
  severity = function(w, m)
    if w.hits.value >= 30 then return "sev3" end
    if w.hits.value >= 3 then return "sev4" end
    return nil
  end,
  resolve_after = "2m",
}
