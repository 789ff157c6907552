-- Fixture for the core kafka tests: every valid mention is counted once per brand in a
-- window longer than the test streams (1 day in 1-hour buckets, so the buckets of
-- P:w:core.count|<brand>|all sum to the number of mentions evaluated). Never fires.
return fp.rule {
  id = "core.count",
  version = 1,
  description = "every mention, per brand",
  owner = "tests",
  key = "brand",
  windows = { all = fp.count { size = "1d", step = "1h" } },
  severity = function(w, m) return nil end,
}
