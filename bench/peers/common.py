"""Shared semantics of the peers: what the example pack computes, in plain Python.

Per mention (key = brand): the windows of brand.volume-spike and brand.negative-surge
(count 10m/1m, distinct authors 10m/1m, baseline 7d/10m; the negative ones only for
mentions with sentiment <= -0.25), and one severity decision per rule with the same
formulas as rules/lib/virality.lua (z-score against the baseline, severity ladder, author
guard). An incident event is emitted when a (rule, brand)'s severity changes.
"""
import json
import math

MIN = 60_000
STEP = 600_000          # baseline step (10 min)
RECENT = 600_000        # recent window (10 min)
BASE_SPAN = 7 * 86_400_000

RULES = {
    # rule id: (negative only, min volume, z floor, ladder)
    "brand.volume-spike": (False, 50, 3, [("sev2", 10), ("sev3", 6), ("sev4", 4)]),
    "brand.negative-surge": (True, 10, 2, [("sev1", 12), ("sev2", 8), ("sev3", 5), ("sev4", 3)]),
}
ORDER = {None: 0, "sev4": 1, "sev3": 2, "sev2": 3, "sev1": 4}


class BadMention(Exception):
    pass


def decode(raw):
    """Decodes and validates like docs/mention.md (the required fields)."""
    try:
        m = json.loads(raw)
    except Exception as e:  # noqa: BLE001
        raise BadMention(f"decode: {e}")
    if not isinstance(m, dict):
        raise BadMention("schema: not an object")
    if not isinstance(m.get("id"), str) or not m["id"]:
        raise BadMention("schema: id")
    brand = m.get("brand") or (m.get("entities") or [None])[0]
    if not isinstance(brand, str):
        raise BadMention("schema: brand")
    a = m.get("author")
    if not isinstance(a, dict) or not isinstance(a.get("id"), str):
        raise BadMention("schema: author.id")
    if not isinstance(m.get("text"), str):
        raise BadMention("schema: text")
    ts = m.get("created_at")
    if not isinstance(ts, int):
        raise BadMention("schema: created_at")
    if ts < 100_000_000_000:
        ts *= 1000
    m["_brand"], m["_ts"] = brand, ts
    s = m.get("sentiment")
    m["_neg"] = isinstance(s, (int, float)) and s <= -0.25
    return m


def baseline(steps, ts):
    """mean and population stddev of per-step counts over 7 days, current step excluded."""
    cur = ts // STEP
    first = cur - BASE_SPAN // STEP
    vals = [c for s, c in steps.items() if first <= s < cur]
    nsteps = BASE_SPAN // STEP
    # steps with no mention count as 0, but only since the first step seen (a young window)
    seen = [s for s in steps if s < cur]
    if not seen:
        return 0.0, 0.0
    span = min(nsteps, cur - max(first, min(seen)))
    if span <= 0:
        return 0.0, 0.0
    mean = sum(vals) / span
    var = sum((v - mean) ** 2 for v in vals) / span + (span - len(vals)) * mean * mean / span
    return mean, math.sqrt(max(var, 0.0))


def severity(rule, recent, authors, mean, sd):
    neg_only, min_vol, floor, ladder = RULES[rule]
    if recent < min_vol:
        return None
    k = RECENT / STEP
    z = (recent - mean * k) / max(sd * math.sqrt(k), floor)
    sev = None
    for name, thr in ladder:
        if z >= thr:
            sev = name
            break
    if sev is None:
        return None
    ratio = authors / recent if recent > 0 else 1
    if authors < 5 or ratio < 0.3:
        sev = sev if ORDER[sev] <= ORDER["sev4"] else "sev4"
    return sev


def iso(ms):
    import datetime
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def incident(rule, brand, prev, sev, m, recent, authors, mean, sd):
    return json.dumps({
        "schema_version": 1, "rule": {"id": rule}, "entity": brand,
        "status": "opened" if prev is None else "escalated" if ORDER[sev] > ORDER[prev] else "deescalated",
        "severity": sev, "previous_severity": prev, "event_time": iso(m["_ts"]),
        "signals": {"recent": {"value": recent}, "authors": {"value": authors},
                    "base": {"value": 0, "mean": mean, "stddev": sd}},
        "samples": [{"id": m["id"], "author": m["author"]["id"], "text": m["text"][:200]}],
    }, sort_keys=True, separators=(",", ":"))
