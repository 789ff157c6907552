-- Fixture for tests/kafka/test_reload.c, version B (rule version 2): keyed on the mention id,
-- so every mention opens its own incident, which carries rule.version: the test reads which
-- rule set evaluated each mention.
return fp.rule {
  id = "test.version",
  version = 2,
  key = "id",
  windows = { n = fp.count { size = "1m", step = "1m" } },
  severity = function(w, m) return "sev4" end,
  resolve_after = "1d",
}
