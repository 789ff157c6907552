-- bench.trivial: the smallest rule the contract allows (one count window, never fires).
-- Run by `fpbench stages` next to the example pack: its cost is the fixed per-rule price of
-- the sandbox and the rule contract (mention table, key, when, severity), not of any logic.
return fp.rule {
  id = "bench.trivial",
  description = "fixed cost of one rule",
  owner = "bench",
  key = "brand",
  windows = { n = fp.count { size = "10m", step = "1m" } },
  severity = function(w) return nil end,
  resolve_after = "30m",
}
