"""The official openai SDK against KeyForge serving HTTPS with a private CA:
only base_url, api_key and the CA to trust change."""
import os
import ssl

import openai

BASE = os.environ["KF_BASE"]
assert BASE.startswith("https://"), BASE
context = ssl.create_default_context(cafile=os.environ["KF_CA_CERT"])
client = openai.OpenAI(
    base_url=f"{BASE}/openai/v1",
    api_key=os.environ["KF_KEY"],
    max_retries=0,
    http_client=openai.DefaultHttpxClient(verify=context),
)
messages = [{"role": "user", "content": "say hello please"}]

r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
assert r.choices[0].message.content.startswith("Hello from the fake upstream"), r

chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=4, stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Hello from the fake", text
assert chunks[-1].usage.completion_tokens == 4, chunks[-1]

# Without the CA the SDK refuses the certificate.
strict = openai.OpenAI(base_url=f"{BASE}/openai/v1", api_key=os.environ["KF_KEY"], max_retries=0)
try:
    strict.chat.completions.create(model="gpt-4o-mini", messages=messages)
except openai.APIConnectionError:
    pass
else:
    raise AssertionError("an unknown CA was accepted")
print("all checks passed")
