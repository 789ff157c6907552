-- Fault suite row L1 (tests/faults): a rule that never returns. Its filter spins forever on
-- every mention; the sandbox must abort each call at the instruction budget, count the
-- failure, quarantine the rule, and leave the counting rules beside it exact.
return fp.rule {
  id = "bad.loop",
  description = "while true do end in the filter",
  owner = "tests",
  key = "brand",
  when = function(m)
    while true do end
  end,
  severity = function(w, m) return nil end,
}
