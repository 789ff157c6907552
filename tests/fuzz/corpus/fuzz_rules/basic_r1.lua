-- Every window kind, keyed on a field path; selected only for English mentions.
return fp.rule {
  id = "r1",
  version = 3,
  key = "brand",
  when = function(m) return m.lang == "en" end,
  windows = {
    c = fp.count    { size = "10m", step = "1m" },
    s = fp.sum      { size = "10m", step = "1m", of = "author.followers" },
    d = fp.distinct { size = "10m", step = "1m", of = "author.id" },
    t = fp.topk     { size = "1h",  step = "5m", of = "hashtags" },
    b = fp.baseline { size = "1d",  step = "1h" },
  },
  severity = function(w, m)
    if w.c.value >= 10 and w.b.mean == 2 and w.s:per_minute() == 100 then return "sev2" end
    return nil
  end,
  resolve_after = "45m",
  respond = "look",
  topics = { default = "inc", sev1 = "pager" },
}
