#!/usr/bin/env python3
"""Recall of one tool on the planted keys, from its raw output.

  recall.py planted.json OUTPUT_FILE

A planted key counts as found when the output holds a 16-character piece
from its middle (tools differ in where they cut a match), or its SHA-1
(detect-secrets reports hashes, not secrets). Decoys reported: how many
times a path under tree/decoys/ (a file of references and placeholders
only) appears in the output: one per finding for the JSON reports (per file
for detect-secrets). Prints `found total by-kind decoys-reported`.
"""

import hashlib
import json
import re
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
        # From the middle of its longest line (a private key block is
        # printed with its line ends escaped).
        line = max(key.split("\n"), key=len)
        middle = line[len(line) // 2 - 8 : len(line) // 2 + 8]
        if middle in output or hashlib.sha1(key.encode()).hexdigest() in output:
            found[entry["kind"]] += 1
    missed = {kind: total[kind] - found[kind] for kind in total if found[kind] < total[kind]}
    decoys = len(re.findall(r"decoys/settings-[0-9]+\.[a-z]+", output))
    print(sum(found.values()), sum(total.values()), json.dumps(missed, sort_keys=True, separators=(",", ":")), decoys)


if __name__ == "__main__":
    main()
