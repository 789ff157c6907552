#!/usr/bin/env python3
"""Writes the hand-made inputs of fuzz_incident (corpus and regression seeds).

The byte layout is the one fuzz_incident.c reads (little-endian): rule (version, windows,
flags, resolve_after, respond), entity, parameters, four mentions, then signals.
Run from anywhere: python3 tests/fuzz/gen_incident_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
INT64_MAX = (1 << 63) - 1


def u8(v): return struct.pack('<B', v)
def u16(v): return struct.pack('<H', v)
def u64(v): return struct.pack('<Q', v & ((1 << 64) - 1))
def s(b): return u8(len(b)) + b


def rule(kinds=(0,), resolve_ms=1800000, respond=None, raw_resolve=None, version=1):
    out = u8(version - 1) + u8(len(kinds)) + b''.join(u8(k) for k in kinds)
    flags = (1 if raw_resolve is not None else 0) | (2 if respond is not None else 0)
    out += u8(flags)
    if raw_resolve is not None:
        out += u64(raw_resolve - 1)          # fz_range(1, INT64_MAX)
    else:
        out += u64(resolve_ms - 1)           # 1 + v % 86400000
    if respond is not None:
        out += s(respond)
    return out


def params(hold=300000, grace=1800000, samples=3):
    return u64(hold) + u64(grace) + u8(samples)


def mention(mid=b'm1', text=b'my acme phone caught fire', url=b'', author=b'u42',
            followers=12800, huge=False, sentiment=None):
    mf = (1 if huge else 0) | (4 if sentiment is not None else 0)
    out = s(mid) + s(text) + s(url) + s(author) + u8(mf)
    out += u64(followers if huge else followers)  # huge: fz_range(0, INT64_MAX); else % 1e8+1
    if sentiment is not None:
        out += u16(int((sentiment + 1.0) * 32767.5))
    return out


def value_small(v): return u8(0) + u8(v)
def value_bits(d): return u8(2) + struct.pack('<d', d)


def signal(sev, mention_idx=0, sweep=False, dt=60000, dt_kind=0, values=None, top=None):
    sf = (1 if sweep else 0) | (dt_kind << 1) | (mention_idx << 3)
    sf |= 0x20 if values is not None else 0
    sf |= 0x40 if top is not None else 0
    out = u8(sf) + u8(sev)
    if dt_kind in (0, 1, 2):
        out += u64(dt)
    for v in values or []:
        out += v
    if top is not None:
        out += u8(len(top)) + b''.join(s(t) + u16(c) for t, c in top)
    return out


def entity(b=b'acme'): return s(b)


def mentions(*ms):
    ms = list(ms) + [mention(mid=b'm%d' % i) for i in range(len(ms), 4)]
    return b''.join(ms[:4])


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def main():
    corpus = os.path.join(HERE, 'corpus', 'fuzz_incident')
    regress = os.path.join(HERE, 'regressions', 'fuzz_incident')
    three = [value_small(12), value_small(3), value_small(1)]
    # A full lifecycle: open, escalate, hold lower, de-escalate, resolve by sweep, reopen.
    write(os.path.join(corpus, 'lifecycle_full'),
          rule(kinds=(0,), respond=b'acknowledge publicly') + entity() + params() +
          mentions(mention(sentiment=-0.9), mention(mid=b'm2', followers=900000),
                   mention(mid=b'm3', url=b'https://x.example/1', sentiment=0.4)) +
          signal(4 - 3, 0, values=[value_small(12), value_small(3), value_small(1)]) +
          signal(3, 1, values=[value_small(40), value_small(3), value_small(1)],
                 top=[(b'fire', 9), (b'recall', 4)]) +
          signal(1, 2, dt=400000, dt_kind=1) + signal(1, 0, dt=400000, dt_kind=1) +
          signal(0, sweep=True, dt=4000000, dt_kind=1) +
          signal(2, 1, dt=60000))
    # Baseline windows and samples churn across many mentions.
    write(os.path.join(corpus, 'baseline_samples'),
          rule(kinds=(0, 4, 2), resolve_ms=600000) + entity(b'acme-phone') + params(samples=4) +
          mentions(mention(sentiment=-1.0), mention(mid=b'm2', sentiment=-0.2, followers=5),
                   mention(mid=b'm3', followers=99999999), mention(mid=b'm4', sentiment=0.0)) +
          b''.join(signal(1 + (i % 4), i % 4, values=three) for i in range(12)) +
          signal(0, sweep=True, dt=0, dt_kind=3) + signal(0, sweep=True, dt=700000, dt_kind=1))
    # Out-of-order times and a long timeline (more than 32 entries).
    write(os.path.join(corpus, 'timeline_overflow'),
          rule(kinds=(), resolve_ms=1000) + entity() + params(hold=0, grace=86400000) +
          mentions() + b''.join(signal(1 + (i % 2) * 3, 0, dt=2000, dt_kind=(0 if i % 3 else 2))
                                for i in range(40)))

    # F1: a rule whose `respond` (or entity from a `key` function, or a top term from an
    # `of` function) is not valid UTF-8: event_new() returns NULL, the event is lost.
    write(os.path.join(regress, 'F1-respond-not-utf8'),
          rule(kinds=(), respond=b'\xff\xfe') + entity() + params() + mentions() + signal(1, 0))
    write(os.path.join(regress, 'F1-entity-not-utf8'),
          rule(kinds=()) + entity(b'ac\xc3') + params() + mentions() + signal(1, 0))
    write(os.path.join(regress, 'F1-top-term-not-utf8'),
          rule(kinds=()) + entity() + params() + mentions() + signal(1, 0, top=[(b'\xe2\x82', 3)]))
    # F2: resolve_after = math.maxinteger: last_signal_ms + resolve_after_ms overflows (UB).
    write(os.path.join(regress, 'F2-resolve-after-maxinteger'),
          rule(kinds=(), raw_resolve=INT64_MAX) + entity() + params() + mentions() +
          signal(1, 0) + signal(2, 0))
    # F3: a window value that is not finite (a SUM overflowing to inf in the store's Lua):
    # the state cannot be serialised (json_real(inf) is NULL) and the window vanishes from
    # the event.
    write(os.path.join(regress, 'F3-window-value-inf'),
          rule(kinds=(1,)) + entity() + params() + mentions() +
          signal(1, 0, values=[value_bits(float('inf')), value_small(0), value_small(0)]))
    # F4: two mentions from authors with followers near INT64_MAX: st->reach overflows (UB).
    write(os.path.join(regress, 'F4-reach-overflow'),
          rule(kinds=()) + entity() + params() +
          mentions(mention(followers=INT64_MAX, huge=True),
                   mention(mid=b'm2', followers=INT64_MAX, huge=True)) +
          signal(1, 0) + signal(1, 1))


if __name__ == '__main__':
    main()
