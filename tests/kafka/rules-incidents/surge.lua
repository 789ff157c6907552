-- Fixture for tests/kafka/test_incident_stream.c: negative mentions of a brand counted in a
-- 10-minute window; 25 / 60 / 100 of them mean sev4 / sev3 / sev2.
return fp.rule {
  id = "test.surge",
  version = 3,
  description = "negative mentions per brand in 10 minutes",
  owner = "tests",
  key = "brand",
  when = function(m) return (m.sentiment or 0) <= -0.4 end,
  windows = { negative = fp.count { size = "10m", step = "1m" } },
  severity = function(w, m)
    local n = w.negative.value
    if n >= 100 then return "sev2" end
    if n >= 60 then return "sev3" end
    if n >= 25 then return "sev4" end
    return nil
  end,
  resolve_after = "10m",
  respond = "acknowledge and gather facts",
}
