-- Fixture for tests/kafka/test_reload.c: present, unchanged, in every version of the rule
-- set. Counts the mentions of each brand (one per partition), so each window total must equal
-- that partition's input exactly across reloads (nothing lost, nothing counted twice). Never fires.
return fp.rule {
  id = "test.count",
  version = 1,
  key = "brand",
  windows = { n = fp.count { size = "1h", step = "1m" } },
  severity = function(w) return nil end,
}
