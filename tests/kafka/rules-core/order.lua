-- Fixture for tests/kafka/test_order_and_accounting.c (and the other core tests): a rule
-- that fires only when a brand's mentions are evaluated out of input order. The chunk's
-- locals live as long as the worker's Lua state, so `last` remembers, per brand, the input
-- offset of the last mention this worker evaluated. A brand is the message key, so all of
-- its mentions are in one partition, and one worker evaluates them in offset order:
-- an offset not greater than the last one seen is a violation and opens an incident.
local last = {}

return fp.rule {
  id = "order.violation",
  version = 1,
  description = "a brand's mentions evaluated out of offset order",
  owner = "tests",
  key = "brand",
  when = function(m)
    local prev = last[m.brand]
    if prev ~= nil and m._offset <= prev then return true end
    last[m.brand] = m._offset
    return false
  end,
  severity = function(w, m) return "sev1" end,
  resolve_after = "1d",
}
