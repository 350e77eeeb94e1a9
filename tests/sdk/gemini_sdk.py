"""The official google-genai SDK against a running KeyForge: only base_url and api_key change."""
import os

from google import genai
from google.genai import errors, types

BASE = os.environ["KF_BASE"]
KEY = os.environ["KF_KEY"]
SCOPED = os.environ["KF_SCOPED_KEY"]

client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=f"{BASE}/gemini"))
r = client.models.generate_content(model="gemini-2.0-flash", contents="hello there gemini")
assert r.text == "Hello from the fake upstream, one word per token until it stops.", r.text
assert r.usage_metadata.prompt_token_count == 3 and r.usage_metadata.candidates_token_count == 12, r.usage_metadata

text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
    model="gemini-2.0-flash", contents="hi", config=types.GenerateContentConfig(max_output_tokens=3)))
assert text == "Hello from the", text

scoped = genai.Client(api_key=SCOPED, http_options=types.HttpOptions(base_url=f"{BASE}/gemini"))
try:
    scoped.models.generate_content(model="gemini-2.0-flash", contents="hi")
    raise AssertionError("expected a 403")
except errors.ClientError as error:
    assert error.code == 403 and error.status == "PERMISSION_DENIED", error
    assert "may not use model `gemini-2.0-flash`" in error.message, error.message
    assert SCOPED not in str(error)
print("gemini sdk: all checks passed")
