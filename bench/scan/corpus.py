#!/usr/bin/env python3
"""Builds the scanner benchmark's corpus, reproducibly.

  corpus.py VENDOR_DIR OUT_DIR

OUT_DIR/tree: the vendored crate sources of this workspace (real code, the
false-positive test), plus generated log files, with fake keys planted at
fixed (seeded) places: in .env lines, JSON and YAML values, string literals,
and bare tokens in log lines; then passwords, passwords in URLs, hex API
keys, base64-encoded keys (Kubernetes Secret.data) and private key blocks.
OUT_DIR/planted.json lists every planted key (it is outside the tree, so no
tool sees it). OUT_DIR/tree/decoys/ holds only decoys (references to where a
secret lives, and placeholders): every finding there is a false positive;
OUT_DIR/decoys.json says how many there are.

The keys are random and format-valid but fake: generated here, at run time,
never committed.
"""

import json
import os
import random
import shutil
import string
import sys
import zlib

SEED = 20261123
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
HEX = "0123456789abcdef"
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def main() -> None:
    vendor, out = sys.argv[1], sys.argv[2]
    rnd = random.Random(SEED)

    def r(n, alphabet=ALNUM):
        return "".join(rnd.choice(alphabet) for _ in range(n))

    def kf(env):
        body = f"kf_{env}_" + r(28)
        n, digits = zlib.crc32(body.encode()), ""
        while n:
            n, d = divmod(n, 62)
            digits = B62[d] + digits
        return body + digits.rjust(6, "0")

    makers = [
        ("openai-project", lambda: f"sk-proj-{r(74, URLSAFE)}T3BlbkFJ{r(74, URLSAFE)}"),
        ("openai-legacy", lambda: f"sk-{r(20)}T3BlbkFJ{r(20)}"),
        ("openai-svcacct", lambda: f"sk-svcacct-{r(60, URLSAFE)}T3BlbkFJ{r(60, URLSAFE)}"),
        ("anthropic", lambda: f"sk-ant-api03-{r(93, URLSAFE)}AA"),
        ("anthropic-admin", lambda: f"sk-ant-admin01-{r(93, URLSAFE)}AA"),
        ("google", lambda: f"AIza{r(35, URLSAFE)}"),
        ("huggingface", lambda: f"hf_{r(34, string.ascii_letters)}"),
        ("groq", lambda: f"gsk_{r(52)}"),
        ("xai", lambda: f"xai-{r(80)}"),
        ("replicate", lambda: f"r8_{r(37)}"),
        ("perplexity", lambda: f"pplx-{r(48)}"),
        ("openrouter", lambda: f"sk-or-v1-{r(64, HEX)}"),
        ("fireworks", lambda: f"fw_{r(24)}"),
        ("github", lambda: f"ghp_{r(36)}"),
        ("gitlab", lambda: f"glpat-{r(20, URLSAFE)}"),
        ("stripe", lambda: f"sk_live_{r(24)}"),
        ("aws-id", lambda: f"AKIA{r(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}"),
        ("keyforge", lambda: kf(rnd.choice(["dev", "prod", "ci"]))),
    ]
    # How a key sits in a file: the secret is {k}.
    placements = [
        "OPENAI_API_KEY={k}\n",
        '    "api_key": "{k}",\n',
        "  token: {k}\n",
        'const client = new Client({{ apiKey: "{k}" }});\n',
        'let key = "{k}";\n',
        "2026-11-23T10:15:02Z INFO request authorized with {k} in 12ms\n",
        "{k}\n",
    ]

    tree = os.path.join(out, "tree")
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.copytree(vendor, tree, symlinks=True, ignore=shutil.ignore_patterns(".cargo-checksum.json"))
    files = []
    for root, _, names in os.walk(tree):
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.islink(path) or not name.endswith((".rs", ".md", ".toml", ".json", ".yml", ".yaml", ".txt", ".py", ".sh")):
                continue
            files.append(path)
    files.sort()

    planted = []
    for i in range(300):
        kind, make = makers[i % len(makers)]
        key = make()
        path = rnd.choice(files)
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
        at = rnd.randrange(len(lines) + 1)
        line = rnd.choice(placements).format(k=key)
        lines.insert(at, line)
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.writelines(lines)
        planted.append({"kind": kind, "key": key, "file": os.path.relpath(path, tree)})

    # Generated service logs with bare tokens among ordinary lines.
    logs = os.path.join(tree, "logs")
    os.makedirs(logs, exist_ok=True)
    for n in range(4):
        with open(os.path.join(logs, f"gateway-{n}.log"), "w") as f:
            for line in range(50_000):
                f.write(
                    f"2026-11-23T10:{line // 3600 % 60:02d}:{line % 60:02d}Z INFO req_{r(12)} "
                    f"POST /v1/chat/completions 200 model=gpt-4o-mini tokens={rnd.randrange(10, 4000)} "
                    f"latency_ms={rnd.randrange(80, 9000)} user=u_{r(8)}\n"
                )
                if line % 2000 == 1000:
                    kind, make = makers[(line // 2000 + n) % len(makers)]
                    key = make()
                    f.write(f"2026-11-23T10:00:00Z WARN upstream rejected credential {key}\n")
                    planted.append({"kind": kind, "key": key, "file": f"logs/gateway-{n}.log"})

    # Secrets that are not provider tokens, planted in source files: a
    # password in configuration, a password in a URL, a hex API key, a
    # Kubernetes Secret's base64 value (an OpenAI key), a private key block.
    import base64

    def pem():
        body = "".join(rnd.choice(ALNUM + "+/") for _ in range(64 * 12))
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        # The markers are assembled so this file holds no key-like line.
        kind = "PRIVATE" + " KEY"
        return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"

    special = [
        ("password", lambda: r(14, ALNUM + "!#%&*+-"), "DB_PASSWORD={k}\n"),
        ("url-password", lambda: r(16), "DATABASE_URL=postgres://app" ":{k}@db.internal:5432/app\n"),
        ("hex-api-key", lambda: r(32, HEX), "DD_API_KEY={k}\n"),
        ("k8s-base64-openai", lambda: f"sk-proj-{r(74, URLSAFE)}T3BlbkFJ{r(74, URLSAFE)}", "data:\n  OPENAI_API_KEY: {b64}\n"),
        ("private-key", pem, "{k}\n"),
    ]
    for i in range(50):
        kind, make, placement = special[i % len(special)]
        key = make()
        path = rnd.choice(files)
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
        at = rnd.randrange(len(lines) + 1)
        b64 = base64.b64encode(key.encode()).decode()
        lines.insert(at, placement.format(k=key, b64=b64))
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.writelines(lines)
        planted.append({"kind": kind, "key": key, "file": os.path.relpath(path, tree)})

    # Decoys: references to where a secret lives, and placeholders, in
    # files of their own (tree/decoys/): any finding there is a false
    # positive.
    decoys = [
        "OPENAI_API_KEY=${{OPENAI_API_KEY_{n}}}",
        'api_key = os.environ["OPENAI_API_KEY_{n}"]',
        "  apiKey: process.env.ANTHROPIC_API_KEY_{n},",
        'token = os.getenv("GITHUB_TOKEN_{n}")',
        'secret = ENV.fetch("STRIPE_SECRET_{n}")',
        "password: ${{DB_PASSWORD_{n}}}",
        "DATABASE_URL=postgres://app:${{DB_PASSWORD_{n}}}@db:5432/app",
        "secret_key = settings.SECRET_KEY_{n}",
        "token: $(vault read -field=token secret/ci_{n})",
        "OPENAI_API_KEY=sk-proj-your-key-here-{n}",
        'ANTHROPIC_API_KEY="<your-anthropic-key-{n}>"',
        'api_key: "sk-..."  # {n}',
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        'password = "changeme"  # {n}',
        "STRIPE_KEY=sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
        "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "api_token = get_token_from_keychain()",
        "client_secret: {{{{ .Values.oauth.clientSecret }}}}",
    ]
    os.makedirs(os.path.join(tree, "decoys"), exist_ok=True)
    n_decoys = 0
    for n, ext in enumerate(["env", "yaml", "py", "js"]):
        with open(os.path.join(tree, "decoys", f"settings-{n}.{ext}"), "w") as f:
            for i, decoy in enumerate(decoys):
                f.write(decoy.format(n=f"{n}{i:02d}") + "\n")
                n_decoys += 1
    with open(os.path.join(out, "decoys.json"), "w") as f:
        json.dump({"dir": "decoys", "count": n_decoys}, f)

    with open(os.path.join(out, "planted.json"), "w") as f:
        json.dump(planted, f, indent=1)
    size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(tree) for name in names if not os.path.islink(os.path.join(root, name)))
    print(f"corpus: {size / 1e6:.0f} MB, {len(planted)} planted keys")


if __name__ == "__main__":
    main()
