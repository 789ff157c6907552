-- Fault suite row L3 (tests/faults): memory bombs. Odd mentions ask for a 1 GiB string, the
-- others grow a table without bound (kept in an upvalue between calls); the capped allocator
-- must fail each call with "not enough memory" and leave the counting rules exact.
local hoard = {}

return fp.rule {
  id = "bad.membomb",
  description = "string.rep of 1 GiB and unbounded table growth in the filter",
  owner = "tests",
  key = "brand",
  when = function(m)
    if (m.author.followers or 0) % 2 == 1 then
      local s = string.rep("x", 1 << 30)
      return #s > 0
    end
    local i = #hoard
    while true do
      i = i + 1
      hoard[i] = { i, tostring(i) }
    end
  end,
  severity = function(w, m) return nil end,
}
