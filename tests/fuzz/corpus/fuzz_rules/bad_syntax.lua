return fp.rule {
  id = "x"
  key = "brand",
}
