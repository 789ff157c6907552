-- Fails whenever the text says "fail".
return fp.rule {
  id = "q",
  key = "brand",
  severity = function(w, m)
    if m.text == "fail" then error("asked to fail") end
    if m.text == "loop" then while true do end end
    return "sev4"
  end,
}
