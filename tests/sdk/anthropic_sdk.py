"""The official anthropic SDK against a running KeyForge: only base_url and the key change."""
import os

import anthropic

BASE = os.environ["KF_BASE"]
KEY = os.environ["KF_KEY"]
SCOPED = os.environ["KF_SCOPED_KEY"]
BAD = os.environ["KF_BAD_KEY"]
BROKE = os.environ["KF_BROKE_KEY"]

messages = [{"role": "user", "content": "hi there"}]
# The SDK's two ways of sending a key: x-api-key (api_key) and Authorization: Bearer (auth_token).
for client in (
    anthropic.Anthropic(base_url=f"{BASE}/anthropic", api_key=KEY, max_retries=0),
    anthropic.Anthropic(base_url=f"{BASE}/anthropic", auth_token=KEY, max_retries=0),
):
    m = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=5, messages=messages)
    assert m.content[0].text == "Hello from the fake upstream,", m
    assert (m.usage.input_tokens, m.usage.output_tokens) == (2, 5), m.usage
    with client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=3, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the", text
    assert final.usage.output_tokens == 3 and final.stop_reason == "end_turn", final
    assert [model.id for model in client.models.list()] == ["claude-3-5-haiku-latest"]


def expect(exc_type, status, fragment, call):
    try:
        call()
    except exc_type as error:
        assert error.status_code == status, (error.status_code, error)
        assert error.body["type"] == "error", error.body
        assert fragment in error.message, error.message
        assert KEY not in error.message and SCOPED not in error.message and BAD not in error.message
        return
    raise AssertionError(f"expected {exc_type.__name__}")


scoped = anthropic.Anthropic(base_url=f"{BASE}/anthropic", api_key=SCOPED, max_retries=0)
bad = anthropic.Anthropic(base_url=f"{BASE}/anthropic", api_key=BAD, max_retries=0)
expect(anthropic.PermissionDeniedError, 403, "may not use model `claude-3-5-haiku-latest`", lambda: scoped.messages.create(model="claude-3-5-haiku-latest", max_tokens=5, messages=messages))
expect(anthropic.AuthenticationError, 401, "checksum", lambda: bad.messages.create(model="claude-3-5-haiku-latest", max_tokens=5, messages=messages))
expect(anthropic.InternalServerError, 500, "server had an error", lambda: anthropic.Anthropic(base_url=f"{BASE}/anthropic", api_key=KEY, max_retries=0).messages.create(model="fake-error-500", max_tokens=5, messages=messages))
broke = anthropic.Anthropic(base_url=f"{BASE}/anthropic", api_key=BROKE)
expect(anthropic.RateLimitError, 429, "budget exhausted", lambda: broke.messages.create(model="claude-3-5-haiku-latest", max_tokens=5, messages=messages))
print("anthropic sdk: all checks passed")
