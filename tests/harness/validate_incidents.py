#!/usr/bin/env python3
"""Validates incident events (one JSON document per line) against docs/incident.schema.json.

usage: validate_incidents.py SCHEMA FILE
Prints "validated N incident events" and exits 0 when every line is valid; prints each
invalid line's errors and exits 1 otherwise. Uses jsonschema (Debian python3-jsonschema).
"""
import json
import sys

from jsonschema import Draft202012Validator


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    bad = n = 0
    with open(sys.argv[2], encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            doc = json.loads(line)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                bad += 1
                for e in errors[:5]:
                    print(f"line {lineno}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
    print(f"validated {n} incident events, {bad} invalid")
    return 1 if bad or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
