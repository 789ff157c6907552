local s = string.rep("a", 3000)
return fp.rule {
  id = "hostile.patterns",
  key = function(m) return m.text:sub(1, 4) .. "\xff" end,
  when = function(m)
    pcall(string.find, s, ".-.-.-.-y")
    pcall(string.find, ("a"):rep(26), ("a-"):rep(25) .. "b")
    pcall(string.gsub, m.text, "(%w+)%s*(%w+)", "%2 %1")
    return m.text:find("fire", 1, true) ~= nil
  end,
  windows = { t = fp.topk { size = "10m", step = "1m", of = function(m) return { "\xc3", "#tag", m.text } end } },
  severity = function(w, m) return ("sev"):rep(1) .. tostring(#w.t.value % 4 + 1) end,
  resolve_after = math.maxinteger,
  respond = "\xff\xfe not utf-8",
}
