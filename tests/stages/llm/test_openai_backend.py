"""The OpenAI-compatible backend against local HTTP servers on 127.0.0.1: one that answers with the
tiny transformers model (a real round trip), and misbehaving ones for retries and error types."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile
from PIL import Image

from stages.llm import BackendError, BackendTimeout, LLMConfig, Request
from stages.llm.openai_backend import OpenAIBackend
from stages.llm.transformers_backend import TransformersBackend


class Server:
    """A chat completions server whose ``answer(payload, attempt) -> (status, body, delay_s)`` decides."""

    def __init__(self, answer):
        self.answer, self.payloads, self.lock = answer, [], threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.payloads.append((self.path, dict(self.headers), payload))
                    attempt = len(owner.payloads)
                status, body, delay_s = owner.answer(payload, attempt)
                time.sleep(delay_s)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(answer):
        servers.append(Server(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(text="fine", finish_reason="stop"):
    return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2}}


def client(server, modality="text", **overrides):
    settings = dict(backend="openai", endpoint=server.endpoint, model="qwen", timeout_s=2.0, retries=2,
                    retry_backoff_s=0.01)
    return OpenAIBackend(LLMConfig(**{**settings, **overrides}), modality)


def test_round_trip_with_the_tiny_model(serve, tiny_text_dir):
    model = TransformersBackend(LLMConfig(backend="transformers", model_path=str(tiny_text_dir)), "text")

    def answer(payload, attempt):
        messages = payload["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        text = "".join(part["text"] for part in messages[-1]["content"] if part["type"] == "text")
        result = model.generate([Request(text=text, system=system, max_tokens=payload["max_tokens"])])[0]
        return 200, {"choices": [{"message": {"content": result.text}, "finish_reason": result.finish_reason}],
                     "usage": {"prompt_tokens": result.prompt_tokens,
                               "completion_tokens": result.completion_tokens}}, 0

    server = serve(answer)
    requests = [Request(text=f"Merge captions {i}.", system="You merge.", max_tokens=2 + i) for i in range(4)]
    remote = client(server, max_batch=4).generate(requests)
    assert remote == model.generate(requests)  # same text, finish reasons, counts, in order
    assert {path for path, _, _ in server.payloads} == {"/v1/chat/completions"}


def test_payload_carries_frames_audio_and_schema(serve, clip_frames, clip_audio, monkeypatch):
    server = serve(lambda payload, attempt: (200, ok(), 0))
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    monkeypatch.setenv("JAVIS_TEST_KEY", "secret")
    video = client(server, "video", api_key_env="JAVIS_TEST_KEY")
    assert video.generate([Request(text="Describe.", frames=clip_frames, fps=2.0, json_schema=schema)]) == [
        ok_completion()]
    client(server, "video", video_part="images").generate([Request(text="Describe.", frames=clip_frames[:2])])
    client(server, "audio").generate([Request(text="Hear.", system="Be brief.", audio=clip_audio)])

    (_, headers, first), (_, _, images), (_, _, audio) = server.payloads
    assert headers["Authorization"] == "Bearer secret"
    assert first["model"] == "qwen" and first["max_tokens"] == 512 and first["temperature"] == 0.0
    assert first["response_format"]["json_schema"]["schema"] == schema
    assert first["response_format"]["type"] == "json_schema"
    video_part, text_part = first["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Describe."}
    prefix, encoded = video_part["video_url"]["url"].split(",", 1)
    assert prefix == "data:video/jpeg;base64"
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(frame)))) for frame in encoded.split(",")]
    assert len(decoded) == 6 and decoded[0].shape == (48, 64, 3)
    assert np.abs(decoded[3].astype(int) - clip_frames[3]).mean() < 8  # JPEG, not another clip
    assert [part["type"] for part in images["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    assert "response_format" not in images
    assert audio["messages"][0] == {"role": "system", "content": "Be brief."}
    audio_part = audio["messages"][1]["content"][0]
    assert audio_part["type"] == "input_audio" and audio_part["input_audio"]["format"] == "wav"
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(audio_part["input_audio"]["data"])), dtype="float32")
    assert rate == 16_000 and samples.shape == clip_audio.shape and np.abs(samples - clip_audio).max() < 1e-3


def ok_completion():
    from stages.llm import Completion

    return Completion(text="fine", finish_reason="stop", prompt_tokens=11, completion_tokens=2)


def test_timeout_is_retried_then_raised(serve):
    server = serve(lambda payload, attempt: (200, ok(), 1.0))
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        client(server, timeout_s=0.2, retries=1).generate([Request(text="x")])
    assert len(server.payloads) == 2 and time.monotonic() - started < 1.5


def test_server_error_then_success(serve):
    server = serve(lambda payload, attempt: (500, {"error": "busy"}, 0) if attempt < 3 else (200, ok("late"), 0))
    (completion,) = client(server, retries=2).generate([Request(text="x")])
    assert completion.text == "late" and len(server.payloads) == 3


def test_server_errors_exhaust_retries(serve):
    server = serve(lambda payload, attempt: (503, {"error": "down"}, 0))
    with pytest.raises(BackendError, match="HTTP 503") as raised:
        client(server, retries=2).generate([Request(text="x")])
    assert not isinstance(raised.value, BackendTimeout) and len(server.payloads) == 3


def test_client_error_is_not_retried(serve):
    server = serve(lambda payload, attempt: (400, {"error": "max_tokens too large"}, 0))
    with pytest.raises(BackendError, match="HTTP 400.*max_tokens too large"):
        client(server, retries=3).generate([Request(text="x")])
    assert len(server.payloads) == 1


def test_refused_connection_and_bad_answers(serve):
    server = serve(lambda payload, attempt: (200, {"choices": []}, 0))
    with pytest.raises(BackendError, match="unexpected response"):
        client(server).generate([Request(text="x")])
    server = serve(lambda payload, attempt: (200, ok(finish_reason="abort"), 0))
    with pytest.raises(BackendError, match="abort"):
        client(server).generate([Request(text="x")])
    closed = serve(lambda payload, attempt: (200, ok(), 0))
    closed.close()
    with pytest.raises(BackendError, match="refused|Errno"):
        client(closed, retries=1).generate([Request(text="x")])


def test_concurrent_batch_keeps_order(serve):
    in_flight = {"now": 0, "most": 0}
    lock = threading.Lock()

    def answer(payload, attempt):  # later requests answer sooner: replies must still come back in order
        text = payload["messages"][0]["content"][0]["text"]
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        time.sleep(0.05 * (4 - int(text)))
        with lock:
            in_flight["now"] -= 1
        return 200, ok(text, "length"), 0

    server = serve(answer)
    completions = client(server, max_batch=4).generate([Request(text=str(i)) for i in range(4)])
    assert [c.text for c in completions] == ["0", "1", "2", "3"]
    assert all(c.finish_reason == "length" for c in completions)
    assert in_flight["most"] > 1  # sent concurrently
    client(server, max_batch=1).generate([Request(text=str(i)) for i in range(3)])
    assert in_flight["most"] > 1 and len(server.payloads) == 7


def test_construction_errors(monkeypatch):
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIBackend(LLMConfig(backend="openai", model="qwen"), "text")
    with pytest.raises(ValueError, match="served model name"):
        OpenAIBackend(LLMConfig(backend="openai", endpoint="http://127.0.0.1:9/v1"), "text")
    monkeypatch.delenv("JAVIS_UNSET_KEY", raising=False)
    with pytest.raises(ValueError, match="JAVIS_UNSET_KEY"):
        OpenAIBackend(LLMConfig(backend="openai", endpoint="http://x/v1", model="m", api_key_env="JAVIS_UNSET_KEY"), "text")
