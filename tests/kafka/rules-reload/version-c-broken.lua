-- Fixture for tests/kafka/test_reload.c, version C: does not compile (line 4). Reloading it
-- must fail with an ERROR naming this file and line, and keep version B running.
return fp.rule {
  id = "test.version", version = 3, key = "id" severity = function() return "sev4" end,
}
