"""The open-loop load generator against a small streaming completions server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from sim_traces import make_trace

from lumen.executor.cluster.loadgen import LoadRequest, run_load, workload

STEP_S = 0.01


class _Handler(BaseHTTPRequestHandler):
    """Streams ``max_tokens`` tokens, token k = (sum of the prompt + k) % 97, one per step."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = sum(body["prompt"])
        for k in range(body["max_tokens"]):
            time.sleep(STEP_S)
            chunk = {
                "choices": [{"index": 0, "text": "", "lumen": {"token_ids": [(base + k) % 97]}}]
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_open_loop_records_tokens_and_times(server: str) -> None:
    requests = [LoadRequest(0.0, (1, 2), 5), LoadRequest(0.05, (3,), 3), LoadRequest(0.05, (4,), 1)]
    fired: list[float] = []
    t0 = time.monotonic()
    result = run_load(
        server,
        requests,
        timeout_s=10.0,
        at_time=[(0.02, lambda: fired.append(time.monotonic() - t0))],
    )
    assert result.ok == 3 and result.errors == [None, None, None]
    assert result.token_ids == [[3, 4, 5, 6, 7], [3, 4, 5], [4]]
    ttft = result.ttft_s()
    assert np.all(ttft >= STEP_S) and np.all(ttft < 1.0)
    assert np.all(result.e2e_s() >= ttft)
    tpot = result.tpot_s()
    assert np.isnan(tpot[2]) and tpot[0] >= STEP_S * 0.5
    assert result.first_token_s[1] >= 0.05  # sent at its arrival, not before
    assert len(fired) == 1 and fired[0] >= 0.02


def test_unreachable_endpoint_is_an_error_per_request() -> None:
    result = run_load("http://127.0.0.1:9", [LoadRequest(0.0, (1,), 2)], timeout_s=2.0)
    assert result.ok == 0 and result.errors[0] is not None
    assert np.isnan(result.ttft_s()[0])


def test_workload_caps_lengths_and_is_seeded() -> None:
    trace = make_trace([0.0, 0.5, 2.0], [500, 50, 1000], [10, 400, 40])
    a = workload(trace, vocab_size=100, max_prompt_tokens=20, max_output_tokens=8, time_scale=2.0)
    assert [r.arrival_s for r in a] == [0.0, 1.0, 4.0]
    assert [len(r.prompt_token_ids) for r in a] == [10, 1, 20]
    assert [r.max_tokens for r in a] == [1, 8, 1]
    assert all(1 <= t < 100 for r in a for t in r.prompt_token_ids)
    assert a == workload(
        trace, vocab_size=100, max_prompt_tokens=20, max_output_tokens=8, time_scale=2.0
    )
    assert a != workload(trace, vocab_size=100, max_prompt_tokens=20, max_output_tokens=8, seed=1)
    with pytest.raises(ValueError, match="vocab_size"):
        workload(trace, vocab_size=1)
