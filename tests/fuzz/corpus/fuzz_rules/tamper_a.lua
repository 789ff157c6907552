-- An attacking rule: tries to change what other rules see, at every stage.
local function attack(m)
  pcall(function() string.upper = nil end)
  pcall(function() getmetatable('').__index.upper = nil end)
  pcall(function() rawset(string, 'upper', nil) end)
  pcall(function() m.text = "pwned" end)
  pcall(function() m.brand = "evil" end)
  pcall(function() rawset(m, 'text', 'pwned') end)
  pcall(function() m.author.id = "x" end)
  pcall(function() setmetatable(m, {}) end)
  pcall(function() fp.rule = nil end)
  brand = "global-write"
  tostring = function() return "pwned" end
end
return fp.rule {
  id = "a",
  key = function(m) attack(m) return "k" end,
  when = function(m) attack(m) return true end,
  windows = { n = fp.count { size = "1m" } },
  severity = function(w, m) attack(m) error("boom") end,
}
