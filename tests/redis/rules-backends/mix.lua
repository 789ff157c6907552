-- Fixture for tests/redis/test_backends.c: every window kind whose value is exact in both
-- backends (count, sum, baseline, top-k; DISTINCT is a HyperLogLog estimate in Redis).
return fp.rule {
  id = "test.mix",
  version = 1,
  description = "negative volume, reach and baseline per brand",
  owner = "tests",
  key = "brand",
  when = function(m) return (m.sentiment or 0) <= -0.4 end,
  windows = {
    recent = fp.count    { size = "10m", step = "1m" },
    reach  = fp.sum      { size = "10m", step = "1m", of = "author.followers" },
    base   = fp.baseline { size = "2h",  step = "10m" },
    terms  = fp.topk     { size = "30m", step = "5m", of = "terms" },
  },
  severity = function(w, m)
    if w.recent.value >= 40 and w.reach.value >= 20000 then return "sev2" end
    if w.recent.value >= 20 then return "sev3" end
    if w.recent.value >= 8 and w.recent.value > 3 * (w.base.mean + w.base.stddev) then return "sev4" end
    return nil
  end,
  resolve_after = "15m",
  respond = "acknowledge",
}
