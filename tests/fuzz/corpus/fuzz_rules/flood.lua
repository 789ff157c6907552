-- Output flood: a 1 MiB entity and a 4 MB severity string.
return fp.rule {
  id = "flood",
  key = function(m) return ("x"):rep(1 << 20) end,
  severity = function(w, m) return ("sev1"):rep(1000000) end,
}
