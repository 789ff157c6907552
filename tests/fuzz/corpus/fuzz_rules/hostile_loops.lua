local function spin() while true do pcall(function() while true do end end) end end
return fp.rule {
  id = "hostile.loops", key = "brand",
  when = function(m) local co = coroutine and coroutine.wrap(spin); return true end,
  windows = { n = fp.count { size = "1m" }, s = fp.sum { size = "1m", of = function(m) return 1e308 end } },
  severity = function(w, m) spin() end,
}
