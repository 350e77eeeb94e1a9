#!/usr/bin/env python3
"""Recall of one tool on the planted keys, from its raw output.

  recall.py planted.json OUTPUT_FILE

A planted key counts as found when the output holds a 16-character piece
from its middle (tools differ in where they cut a match), or its SHA-1
(detect-secrets reports hashes, not secrets). Prints `found total by-kind`.
"""

import hashlib
import json
import sys
from collections import Counter


def main() -> None:
    planted = json.load(open(sys.argv[1]))
    output = open(sys.argv[2], "rb").read().decode("utf-8", "replace")
    found = Counter()
    total = Counter()
    for entry in planted:
        key = entry["key"]
        total[entry["kind"]] += 1
        middle = key[len(key) // 2 - 8 : len(key) // 2 + 8]
        if middle in output or hashlib.sha1(key.encode()).hexdigest() in output:
            found[entry["kind"]] += 1
    missed = {kind: total[kind] - found[kind] for kind in total if found[kind] < total[kind]}
    print(sum(found.values()), sum(total.values()), json.dumps(missed, sort_keys=True))


if __name__ == "__main__":
    main()
