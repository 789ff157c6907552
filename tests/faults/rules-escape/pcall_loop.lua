-- Fault suite row L2 (tests/faults): an infinite loop wrapped in pcall, retried forever, so
-- that a budget error swallowed by pcall would just start the next loop. The budget hook
-- must keep firing (sticky) until the call is abandoned.
return fp.rule {
  id = "bad.pcall-loop",
  description = "pcall-wrapped infinite loop in the filter",
  owner = "tests",
  key = "brand",
  when = function(m)
    while true do
      pcall(function() while true do end end)
    end
  end,
  severity = function(w, m) return nil end,
}
