local r = {}
for _, n in ipairs { "os", "io", "load", "dofile", "loadfile", "debug", "package", "collectgarbage", "print" } do
  r[#r + 1] = tostring(rawget(_ENV, n))
end
pcall(require, "../../etc/passwd")
pcall(load or function() end, string.dump and string.dump(function() end) or "")
pcall(setmetatable, {}, { __gc = function() end })
local t = {} pcall(function() for i = 1, 1e9 do t[i] = ("x"):rep(1000) end end)
pcall(string.rep, "x", 1 << 30)
local function rec(n) return rec(n + 1) + 1 end pcall(rec, 1)
return fp.rule {
  id = "hostile.escape", version = 3, key = "author.id",
  windows = { d = fp.distinct { size = "1h", step = "5m", of = "author.id" }, b = fp.baseline { size = "7d", step = "1h" } },
  severity = function(w, m) return w.d.value > 0 and "sev4" or "none" end,
}
