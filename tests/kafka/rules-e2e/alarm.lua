-- Fixture for tests/kafka/test_e2e.c: a rule whose incidents are known in advance.
-- Mentions of a brand whose text contains "ALARM" are counted in a 1-hour window;
-- 50 of them open a sev3 incident, 200 escalate it to sev2.
return fp.rule {
  id = "test.alarm",
  version = 1,
  description = "ALARM mentions per brand",
  owner = "tests",
  key = "brand",
  when = function(m) return string.find(m.text, "ALARM", 1, true) ~= nil end,
  windows = { hits = fp.count { size = "1h", step = "1m" } },
  severity = function(w, m)
    if w.hits.value >= 200 then return "sev2" end
    if w.hits.value >= 50 then return "sev3" end
    return nil
  end,
  resolve_after = "30m",
  respond = "page the brand owner",
}
