"""Peer 2: the same rules written for Quix Streams as its users would: a StreamingDataFrame
with a stateful apply (Quix's own state store: RocksDB with a changelog topic in Kafka,
partitioned by the message key = brand), at-least-once processing (commit every second),
incidents sent with to_topic. Windows are kept in Quix state instead of Redis (that is
how a Quix application keeps windows; Redis would be an extra hop per message since Quix
processes one message at a time): per brand and kind, minute buckets of counts and exact
author sets (one state key per minute, union of the last 10) and 10-minute step counts (7 days).

  quix_app.py BOOTSTRAP GROUP TOPIC OUT_TOPIC STATE_DIR
"""
import sys

from quixstreams import Application

from common import MIN, STEP, RULES, BadMention, baseline, decode, incident, severity

bootstrap, group, topic, out_topic, state_dir = sys.argv[1:6]

app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                  processing_guarantee="at-least-once", commit_interval=1.0, state_dir=state_dir,
                  loglevel="WARNING", use_changelog_topics=True)
src = app.topic(topic, value_deserializer="bytes", key_deserializer="str")
dst = app.topic(out_topic, value_serializer="str", key_serializer="str")


def process(raw, state):
    try:
        m = decode(raw)
    except BadMention:
        return None
    ts, b = m["_ts"], m["_brand"]
    minute, step = ts // MIN, ts // STEP
    out = []
    for kind in (("all", "neg") if m["_neg"] else ("all",)):
        w = state.get(kind) or {"c": {}, "b": {}}
        c, bs = w["c"], w["b"]
        mk, sk = str(minute), str(step)
        c[mk] = c.get(mk, 0) + 1
        bs[sk] = bs.get(sk, 0) + 1
        for k in [k for k in c if int(k) <= minute - 10]:
            del c[k]
        for k in [k for k in bs if int(k) < step - 7 * 144]:
            del bs[k]
        state.set(kind, w)
        # distinct authors: one small set per minute under its own key, union of the last 10
        ak = f"a:{kind}:{minute}"
        cur = state.get(ak) or []
        if m["author"]["id"] not in cur:
            cur.append(m["author"]["id"])
            state.set(ak, cur)
        state.delete(f"a:{kind}:{minute - 10}")
        seen = set(cur)
        for i in range(1, 10):
            seen.update(state.get(f"a:{kind}:{minute - i}") or ())
        recent, authors = sum(c.values()), len(seen)
        mean, sd = baseline({int(k): v for k, v in bs.items()}, ts)
        for rule, (neg_only, *_r) in RULES.items():
            if neg_only != (kind == "neg"):
                continue
            sev = severity(rule, recent, authors, mean, sd)
            prev = state.get("sev:" + rule)
            if sev is not None and sev != prev:
                state.set("sev:" + rule, sev)
                out.append(incident(rule, b, prev, sev, m, recent, authors, mean, sd))
    return out or None


sdf = app.dataframe(src)
sdf = sdf.apply(process, stateful=True).filter(lambda v: v is not None)
sdf = sdf.apply(lambda v: v, expand=True)
sdf.to_topic(dst)

if __name__ == "__main__":
    app.run()
