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

from lumen.executor.cluster.loadgen import LoadRequest, LoadResult, run_load, workload
from lumen.executor.cluster.probe import probe_cluster

STEP_S = 0.01

#: (received, finished) of every request the server streamed, in the order they came.
SEEN: list[tuple[float, float]] = []


class _Handler(BaseHTTPRequestHandler):
    """Streams ``max_tokens`` tokens, token k = (sum of the prompt + k) % 97, one per step."""

    def do_POST(self) -> None:
        received = time.monotonic()
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
        SEEN.append((received, time.monotonic()))

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    SEEN.clear()
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
    assert all(s >= a for s, a in zip(result.sent_s, result.arrival_s, strict=True))
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


def test_ttft_counts_from_the_send() -> None:
    """The load generator's lateness past a request's arrival is not the cluster's TTFT."""
    nan = float("nan")
    late = LoadResult([0.0, 1.0], [0.05, 1.05], [0.1, 1.1], [[1], [2]], [None, None], [0.02, nan])
    # Sent 20 ms late: 30 ms from the send; not recorded: from the arrival.
    assert late.ttft_s() == pytest.approx([0.03, 0.05])
    assert late.start_s() == [0.02, 1.0]
    unrecorded = LoadResult([0.0], [0.05], [0.1], [[1]], [None])
    assert unrecorded.ttft_s() == pytest.approx([0.05])


class _Cluster:
    """What :func:`probe_cluster` needs of a cluster when no restart is probed."""

    def __init__(self, url: str, workers: int) -> None:
        self.gateway_url = url
        self.spec = type("Spec", (), {"workers": workers})()


def test_probe_warms_up_together_and_probes_beside_a_stream(server: str) -> None:
    requests = [LoadRequest(0.0, (1, 2, 3), 6), LoadRequest(0.0, (4, 5), 6)]
    probe = probe_cluster(
        _Cluster(server, 3),  # type: ignore[arg-type]
        requests,
        idle_probes=2,
        busy_probes=3,
        warmup_rounds=1,
        start_kinds=(),
    )
    assert len(probe.warmup_ttft_s) == 3 and len(probe.ttft_s) == 2
    assert len(probe.busy_ttft_s) == 3 and probe.busy_prompt_tokens == (3, 3, 3)
    assert all(STEP_S <= t < 1.0 for t in probe.busy_ttft_s)
    seen = sorted(SEEN)
    assert len(seen) == 3 + 2 + 2 * 3
    warm, idle, pairs = seen[:3], seen[3:5], seen[5:]
    # The warm-up's requests ran at the same time; the idle probes one after another.
    assert max(r for r, _ in warm) < min(f for _, f in warm)
    assert idle[0][1] <= idle[1][0] and warm[-1][1] <= idle[0][0]
    for k in range(3):
        (first_in, first_out), (second_in, _) = pairs[2 * k], pairs[2 * k + 1]
        assert first_in <= second_in < first_out  # sent while the first streamed
    with pytest.raises(ValueError, match="busy probes"):
        probe_cluster(_Cluster(server, 3), requests, busy_probes=-1)  # type: ignore[arg-type]
