"""Peer 1: the consumer a competent data engineer writes with confluent-kafka and redis-py.

Same delivery guarantee as Flashpoint (at-least-once: offsets stored for the auto-commit
only after the batch's incidents are acknowledged), same batching opportunities (consume
1000 at a time, one pipelined Redis round trip for every window update and read of the
batch, one more for incident state when something changed), windows in Redis:
  count      HINCRBY <p>:c:<kind>:<brand> <minute>      read: HMGET of the last 10 minutes
  distinct   PFADD   <p>:d:<kind>:<brand>:<minute>      read: PFCOUNT over the 10 minute keys
  baseline   HINCRBY <p>:b:<kind>:<brand> <10-min step> read: HGETALL once per brand and batch
with EXPIREs per key, kind = all | neg.

  py_consumer.py BOOTSTRAP GROUP TOPIC OUT_TOPIC DLQ_TOPIC REDIS_HOST REDIS_PORT PREFIX [BATCH]

BATCH (default 1000): messages consumed at a time, and so per pipelined round trip; the
benchmark passes Flashpoint's batch.size, so both get the same batching opportunities.
"""
import signal
import sys

import redis
from confluent_kafka import Consumer, Producer

from common import MIN, STEP, RULES, BadMention, baseline, decode, incident, severity

bootstrap, group, topic, out_topic, dlq_topic, rhost, rport, prefix = sys.argv[1:9]
batch = int(sys.argv[9]) if len(sys.argv) > 9 else 1000
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": True,
                     "enable.auto.offset.store": False, "auto.commit.interval.ms": 1000,
                     "partition.assignment.strategy": "cooperative-sticky"})
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 5, "compression.type": "lz4"})
r = redis.Redis(host=rhost, port=int(rport))
state = {}  # (rule, brand) -> severity, mirrored in Redis hash <p>:inc
consumer.subscribe([topic])

while running:
    msgs = consumer.consume(num_messages=batch, timeout=0.2)
    if not msgs:
        continue
    good, expire = [], set()
    pipe = r.pipeline(transaction=False)
    for msg in msgs:
        if msg.error():
            continue
        try:
            m = decode(msg.value())
        except BadMention as e:
            producer.produce(dlq_topic, msg.value(), msg.key(), headers={"x-err-message": str(e)})
            continue
        b, ts = m["_brand"], m["_ts"]
        minute, step = ts // MIN, ts // STEP
        kinds = ("all", "neg") if m["_neg"] else ("all",)
        for kind in kinds:
            ck, bk = f"{prefix}:c:{kind}:{b}", f"{prefix}:b:{kind}:{b}"
            dk = f"{prefix}:d:{kind}:{b}:{minute}"
            pipe.hincrby(ck, minute, 1)
            pipe.pfadd(dk, m["author"]["id"])
            pipe.hincrby(bk, step, 1)
            expire.update(((ck, 660), (dk, 660), (bk, 7 * 86400 + 600)))
            pipe.hmget(ck, [minute - i for i in range(10)])
            pipe.pfcount(*[f"{prefix}:d:{kind}:{b}:{minute - i}" for i in range(10)])
        good.append((m, kinds))
    bases = sorted({(kind, m["_brand"]) for m, kinds in good for kind in kinds})
    for key, ttl in expire:
        pipe.expire(key, ttl)
    for kind, b in bases:
        pipe.hgetall(f"{prefix}:b:{kind}:{b}")
    res = pipe.execute()
    # walk the replies: per kind 3 writes, then HMGET, PFCOUNT
    i, reads = 0, []
    for m, kinds in good:
        for kind in kinds:
            counts, authors = res[i + 3], res[i + 4]
            reads.append((m, kind, sum(int(c) for c in counts if c), authors))
            i += 5
    i += len(expire)
    base = {}
    for kind, b in bases:
        base[(kind, b)] = {int(k): int(v) for k, v in res[i].items()}
        i += 1
    changes = {}
    for m, kind, recent, authors in reads:
        b = m["_brand"]
        mean, sd = baseline(base[(kind, b)], m["_ts"])
        for rule, (neg_only, *_r) in RULES.items():
            if neg_only != (kind == "neg"):
                continue
            sev = severity(rule, recent, authors, mean, sd)
            prev = state.get((rule, b))
            if sev is not None and sev != prev:
                state[(rule, b)] = sev
                changes[f"{rule}|{b}"] = sev
                producer.produce(out_topic, incident(rule, b, prev, sev, m, recent, authors, mean, sd), b)
    if changes:
        r.hset(f"{prefix}:inc", mapping=changes)
    producer.flush()
    for msg in msgs:  # at-least-once: store only after everything is acknowledged
        if not msg.error():
            consumer.store_offsets(msg)

consumer.close()
producer.flush()
