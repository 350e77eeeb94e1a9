"""The official openai SDK against a running KeyForge: only base_url and api_key change."""
import asyncio
import os

import httpx2  # the HTTP client this openai release is built on
import openai

BASE = os.environ["KF_BASE"]
KEY = os.environ["KF_KEY"]
SCOPED = os.environ["KF_SCOPED_KEY"]
BAD = os.environ["KF_BAD_KEY"]
PROVIDER_LIKE = os.environ["KF_PROVIDER_LIKE_KEY"]
LIMITED = os.environ["KF_LIMITED_KEY"]  # --rpm 1
BROKE = os.environ["KF_BROKE_KEY"]  # a budget smaller than any request

client = openai.OpenAI(base_url=f"{BASE}/openai/v1", api_key=KEY, max_retries=0)
messages = [{"role": "user", "content": "say hello please"}]

# Non-streaming chat completion, usage intact.
r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
assert r.choices[0].message.content == "Hello from the fake upstream, one word per token until it stops.", r
assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 12), r.usage

# Streaming, with the usage chunk the client asked for.
chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=4, stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Hello from the fake", text
assert chunks[-1].usage.completion_tokens == 4, chunks[-1]

# Raw response exposes KeyForge's headers.
raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
assert raw.headers["x-keyforge-request-id"].startswith("req_")
assert int(raw.headers["x-keyforge-overhead-us"]) >= 0

# Legacy completions, embeddings, models, responses (plain and streamed).
c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="one two", max_tokens=2)
assert c.choices[0].text == "Hello from" and c.usage.prompt_tokens == 2, c
e = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
assert len(e.data) == 2 and e.usage.prompt_tokens == 3, e
assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "text-embedding-3-small"]
resp = client.responses.create(model="gpt-4o-mini", input="one two three")
assert resp.output_text.startswith("Hello from") and resp.usage.input_tokens == 3, resp
with client.responses.stream(model="gpt-4o-mini", input="x", max_output_tokens=3) as stream:
    deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
    final = stream.get_final_response()
assert "".join(deltas) == "Hello from the", deltas
assert final.usage.output_tokens == 3


async def async_stream():
    async_client = openai.AsyncOpenAI(base_url=f"{BASE}/openai/v1", api_key=KEY, max_retries=0)
    stream = await async_client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=2, stream=True)
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])


assert asyncio.run(async_stream()) == "Hello from"

# Errors surface as the SDK's own exception types with KeyForge's message.
def expect(exc_type, status, code, fragment, call):
    try:
        call()
    except exc_type as error:
        assert error.status_code == status, (error.status_code, error)
        assert error.code == code, (error.code, error)
        assert fragment in error.message, error.message
        for secret in (KEY, SCOPED, BAD, PROVIDER_LIKE):
            assert secret not in error.message
        return
    raise AssertionError(f"expected {exc_type.__name__}")


scoped = openai.OpenAI(base_url=f"{BASE}/openai/v1", api_key=SCOPED, max_retries=0)
bad = openai.OpenAI(base_url=f"{BASE}/openai/v1", api_key=BAD, max_retries=0)
provider_like = openai.OpenAI(base_url=f"{BASE}/openai/v1", api_key=PROVIDER_LIKE, max_retries=0)
expect(openai.PermissionDeniedError, 403, "model_not_allowed", "may not use model `o3`", lambda: scoped.chat.completions.create(model="o3", messages=messages))
expect(openai.PermissionDeniedError, 403, "model_not_allowed", "may not use model `o3`", lambda: scoped.chat.completions.create(model="o3", messages=messages, stream=True))
expect(openai.AuthenticationError, 401, "invalid_api_key", "checksum", lambda: bad.models.list())
expect(openai.AuthenticationError, 401, "provider_key_not_allowed", "provider keys stay inside KeyForge", lambda: provider_like.models.list())
expect(openai.InternalServerError, 500, "server_error", "server had an error", lambda: client.chat.completions.create(model="fake-error-500", messages=messages))

# Spend control as the SDK sees it. A spent budget asks the SDK not to
# retry (x-should-retry: false): with its default retries, it sends once.
sent = []
broke = openai.OpenAI(
    base_url=f"{BASE}/openai/v1",
    api_key=BROKE,
    http_client=httpx2.Client(event_hooks={"request": [sent.append]}),
)
expect(openai.RateLimitError, 429, "budget_exhausted", "budget exhausted", lambda: broke.chat.completions.create(model="gpt-4o-mini", messages=messages))
assert len(sent) == 1, f"the SDK retried a spent budget {len(sent)} times"
# A rate limit says when to come back, in the headers the SDK reads.
limited = openai.OpenAI(base_url=f"{BASE}/openai/v1", api_key=LIMITED, max_retries=0)
first = limited.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
assert first.headers["x-ratelimit-limit-requests"] == "1", first.headers
assert first.headers["x-ratelimit-remaining-requests"] == "0", first.headers
try:
    limited.chat.completions.create(model="gpt-4o-mini", messages=messages)
    raise AssertionError("expected RateLimitError")
except openai.RateLimitError as error:
    assert error.code == "rate_limit_exceeded", error
    assert 1 <= int(error.response.headers["retry-after"]) <= 60, error.response.headers
    assert "requests per minute" in error.message, error.message
print("openai sdk: all checks passed")
