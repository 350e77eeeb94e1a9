#!/usr/bin/env python3
"""A tool's score on the labelled public corpus Plazmaz/leaky-repo (MIT).

  leaky.py SECRETS_CSV ROOT TOOL OUTPUT_FILE

SECRETS_CSV is the corpus's own label file (.leaky-meta/secrets.csv: per
file, the number of lines that carry a risk and the number that are
informative). A tool scores, for each labelled file, min(its findings in
that file, the file's labelled lines), summed over files: out of 175 for the
corpus as published. ROOT is the directory the tool scanned (its paths are
made relative to it). Prints `score total per-file-json`.
"""

import csv
import json
import os
import sys
from collections import Counter


def labels(path):
    rows = [line for line in open(path) if line.strip() and not line.startswith("#")]
    return {row[0]: int(row[1]) + int(row[2]) for row in csv.reader(rows)}


def finding_paths(tool, output):
    try:
        data = json.load(open(output))
    except (OSError, ValueError):
        return []
    if tool == "keyforge":
        return [f["path"] for f in data.get("findings", [])]
    if tool == "betterleaks":
        found = data.get("findings", []) if isinstance(data, dict) else data
        return [f.get("location", {}).get("path") or f.get("File", "") for f in found]
    if tool == "kingfisher":
        found = data.get("findings", []) if isinstance(data, dict) else data
        return [f.get("finding", {}).get("path", "") for f in found]
    return []


def main():
    secrets_csv, root, tool, output = sys.argv[1:5]
    wanted = labels(secrets_csv)
    counts = Counter()
    for path in finding_paths(tool, output):
        if os.path.isabs(path):
            path = os.path.relpath(path, root)
        counts[path.removeprefix("./")] += 1
    per_file = {name: min(counts[name], total) for name, total in wanted.items()}
    print(sum(per_file.values()), sum(wanted.values()), json.dumps(per_file, sort_keys=True))


if __name__ == "__main__":
    main()
