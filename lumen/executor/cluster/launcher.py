"""A local cluster on loopback: the planner service, N worker processes and the gateway.

:class:`LocalCluster` starts every part as its own process (``lumen serve``,
``python -m lumen.executor.worker``, ``python -m lumen.executor.gateway``) on free loopback
ports, waits until each one answers, and can SIGKILL a worker and start it again (in staged
recovery when the policy uses a draft). All workers load the same weights (``random:SEED``
by default: a tiny model that runs on any CPU), so a request gives the same tokens wherever it
runs. Each process logs to its own file under ``log_dir``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lumen.planner.policies import POLICIES

__all__ = ["ClusterSpec", "LocalCluster", "ParentPipe", "ProcessHandle", "supervised"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports nobody listens on right now: all are held until the last is
    picked, so the OS cannot hand the same one out twice (one at a time, it may)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What to launch.

    Attributes:
        weights, draft_weights: worker weights (``random:SEED`` or a checkpoint directory).
        ssd_gbyte_s: emulated storage bandwidth of weight loads (None: as fast as it goes),
            so that reload windows of a CPU cluster look like real ones.
        min_step_s: emulated minimum engine step time.
        hang_timeout_s: the gateway's forward-progress timeout.
        engine: the workers' engine, ``torch`` (built-in, on the CPU) or ``vllm`` (on the GPU;
            ``weights`` is then a Hugging Face folder and there is no draft).
        worker_args: more arguments of every worker's command line.
        worker_metrics: give each worker a Prometheus port (``worker_metrics_urls``).
        start_timeout_s: how long the start may take until every part answers.
    """

    workers: int
    policy: str = "lumen"
    weights: str = "random:0"
    draft_weights: str | None = "random:1"
    checkpoint_budget_bytes: int = 256 << 20
    ssd_gbyte_s: float | None = None
    min_step_s: float = 0.0
    host: str = "127.0.0.1"
    log_dir: Path = field(default_factory=lambda: Path("out/cluster"))
    planner: bool = True
    engine: str = "torch"
    worker_args: tuple[str, ...] = ()
    worker_metrics: bool = False
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.engine not in ("torch", "vllm"):
            raise ValueError(f"engine: expected torch or vllm, got {self.engine!r}")
        if self.workers < 2:
            raise ValueError(f"workers: a cluster needs at least 2, got {self.workers}")
        if self.policy not in POLICIES:
            raise ValueError(
                f"policy: unknown {self.policy!r}; known: {', '.join(sorted(POLICIES))}"
            )

    @property
    def progressive(self) -> bool:
        return POLICIES[self.policy].progressive and self.draft_weights is not None


class ParentPipe:
    """The pipe that ties children to this process: they hold the read end and stop when it
    reads end-of-file, i.e. when this process is gone (:mod:`.supervise`). One per process."""

    _lock = threading.Lock()
    _fds: tuple[int, int] | None = None

    @classmethod
    def read_fd(cls) -> int:
        with cls._lock:
            if cls._fds is None:
                cls._fds = os.pipe()  # both ends non-inheritable; children get the read end
            return cls._fds[0]


def supervised(argv: list[str], fd: int) -> list[str]:
    """``argv`` (``python -m MODULE ...``) run under :mod:`.supervise` with pipe ``fd``."""
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError(f"expected python -m MODULE ..., got {argv[:3]}")
    return [argv[0], "-m", "lumen.executor.cluster.supervise", "--parent-fd", str(fd), *argv[2:]]


class ProcessHandle:
    """One child process with its command line and log file. Children of ``python -m`` form
    die with this process (:class:`ParentPipe`); each runs in a session of its own, so a
    Ctrl-C at the launcher's terminal reaches only the launcher, which stops them in order."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        fd = ParentPipe.read_fd()
        self.popen = subprocess.Popen(
            supervised(self.argv, fd),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            pass_fds=(fd,),
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalCluster:
    """The processes of :class:`ClusterSpec`; use as a context manager."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        host = spec.host
        metrics = spec.workers if spec.worker_metrics else 0
        ports = iter(free_ports(2 + spec.workers + metrics, host))
        planner = next(ports)
        self.planner_address = f"{host}:{planner}" if spec.planner else None
        self.worker_addresses = {i: f"{host}:{next(ports)}" for i in range(spec.workers)}
        self.gateway_port = next(ports)
        self.worker_metrics_ports = {i: next(ports) for i in range(metrics)}
        self.processes: dict[str, ProcessHandle] = {}

    # -- addresses --------------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://{self.spec.host}:{self.gateway_port}"

    @property
    def worker_metrics_urls(self) -> dict[int, str]:
        """Worker id -> its ``/metrics`` URL (empty unless ``spec.worker_metrics``)."""
        host = self.spec.host
        return {i: f"http://{host}:{p}/metrics" for i, p in self.worker_metrics_ports.items()}

    def _worker_argv(self, i: int, stage: str) -> list[str]:
        s = self.spec
        peers = ",".join(f"{j}={a}" for j, a in self.worker_addresses.items() if j != i)
        argv = [
            sys.executable,
            "-m",
            "lumen.executor.worker",
            "--worker-id",
            str(i),
            "--address",
            self.worker_addresses[i],
            "--weights",
            s.weights,
            "--checkpoint-budget-bytes",
            str(s.checkpoint_budget_bytes),
            "--peers",
            peers,
            *(("--engine", "vllm") if s.engine == "vllm" else ("--device", "cpu")),
            "--start-stage",
            stage,
            "--min-step-s",
            str(s.min_step_s),
        ]
        if s.draft_weights is not None:
            argv += ["--draft-weights", s.draft_weights]
        if s.ssd_gbyte_s is not None:
            argv += ["--ssd-gbyte-s", str(s.ssd_gbyte_s)]
        if i in self.worker_metrics_ports:
            argv += ["--metrics-port", str(self.worker_metrics_ports[i])]
        return [*argv, *s.worker_args]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> None:
        """Start everything and wait until every part answers (RuntimeError with the log tail
        of the part that did not)."""
        s = self.spec
        logs = s.log_dir
        if self.planner_address is not None:
            self._spawn(
                "planner",
                [
                    sys.executable,
                    "-m",
                    "lumen.cli",
                    "serve",
                    "--address",
                    self.planner_address,
                ],
                logs / "planner.log",
            )
        for i in self.worker_addresses:
            self._spawn(f"worker-{i}", self._worker_argv(i, "serving"), logs / f"worker-{i}.log")
        deadline = time.monotonic() + timeout_s
        if self.planner_address is not None:
            self._wait_planner(deadline)
        for i in self.worker_addresses:
            self.wait_worker(i, deadline, stage="serving")
        workers = ",".join(f"{i}={a}" for i, a in self.worker_addresses.items())
        argv = [
            sys.executable,
            "-m",
            "lumen.executor.gateway",
            "--address",
            f"{s.host}:{self.gateway_port}",
            "--workers",
            workers,
            "--policy",
            s.policy,
        ]
        if self.planner_address is not None:
            argv += ["--planner", self.planner_address]
        self._spawn("gateway", argv, logs / "gateway.log")
        self._wait_http(f"{self.gateway_url}/healthz", "gateway", deadline)

    def _spawn(self, name: str, argv: list[str], log: Path) -> ProcessHandle:
        handle = ProcessHandle(name, argv, log)
        handle.start()
        self.processes[name] = handle
        return handle

    def _check_alive(self, name: str) -> None:
        handle = self.processes[name]
        if not handle.alive:
            raise RuntimeError(f"{name} exited during start-up; its log:\n{handle.log_tail()}")

    def _wait_planner(self, deadline: float) -> None:
        from lumen.planner.service.client import PlannerClient

        assert self.planner_address is not None
        while True:
            self._check_alive("planner")
            try:
                with PlannerClient(self.planner_address, timeout_s=1.0) as client:
                    if client.health(timeout_s=1.0) == "SERVING":
                        return
            except Exception:  # not up yet: any connection error means "try again"
                pass
            self._sleep_until(deadline, "planner")

    def wait_worker(self, i: int, deadline: float, stage: str | None = None) -> None:
        """Wait until worker ``i`` answers (and, with ``stage``, reports that stage)."""
        from lumen.executor.worker.client import ExecutorClient

        name = f"worker-{i}"
        while True:
            self._check_alive(name)
            try:
                client = ExecutorClient(self.worker_addresses[i], i, timeout_s=1.0)
                try:
                    status = client.status(timeout_s=1.0)
                finally:
                    client.close()
                if stage is None or status.stage == stage:
                    return
            except Exception:  # not up yet
                pass
            self._sleep_until(deadline, name)

    def _wait_http(self, url: str, name: str, deadline: float) -> None:
        while True:
            self._check_alive(name)
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (OSError, http.client.HTTPException):  # not up, or not ours (yet)
                pass
            self._sleep_until(deadline, name)

    def _sleep_until(self, deadline: float, name: str) -> None:
        if time.monotonic() > deadline:
            tail = self.processes[name].log_tail() if name in self.processes else ""
            raise RuntimeError(f"{name} did not come up in time; its log:\n{tail}")
        time.sleep(0.1)

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` (a real crash: no clean-up of any kind)."""
        self.processes[f"worker-{i}"].signal(signal.SIGKILL)
        popen = self.processes[f"worker-{i}"].popen
        if popen is not None:
            popen.wait(10.0)

    def hang_worker(self, i: int) -> None:
        """SIGSTOP worker ``i``: it stays alive but answers nothing and makes no progress."""
        self.processes[f"worker-{i}"].signal(signal.SIGSTOP)

    def kill_planner(self) -> None:
        """SIGKILL the planner service (the gateway must plan recovery without it)."""
        handle = self.processes.get("planner")
        if handle is not None:
            handle.signal(signal.SIGKILL)

    def restart_worker(self, i: int) -> None:
        """Start worker ``i`` again on its address, in staged recovery when the policy uses a
        draft (DraftLoading first), otherwise loading the target straight away."""
        stage = "draft-loading" if self.spec.progressive else "serving"
        name = f"worker-{i}"
        self._spawn(name, self._worker_argv(i, stage), self.spec.log_dir / f"{name}.log")

    def start_spare_worker(self, progressive: bool) -> int:
        """Start one more worker process, with the command line of a restart (staged through
        the draft when ``progressive``), that no gateway knows of: what a worker's start costs
        the processes beside it on this machine can then be measured without any failure.
        Returns its id (stop it with :meth:`stop_worker`)."""
        host = self.spec.host
        i = max(self.worker_addresses) + 1
        self.worker_addresses[i] = f"{host}:{free_port(host)}"
        stage = "draft-loading" if progressive and self.spec.draft_weights else "serving"
        name = f"worker-{i}"
        self._spawn(name, self._worker_argv(i, stage), self.spec.log_dir / f"{name}.log")
        return i

    def stop_worker(self, i: int) -> None:
        """Stop worker ``i`` (SIGTERM, then SIGKILL); a spare is forgotten."""
        name = f"worker-{i}"
        if name in self.processes:
            self.processes.pop(name).stop()
        if i >= self.spec.workers:
            self.worker_addresses.pop(i, None)

    def stop(self) -> None:
        """Stop the gateway, the workers, then the planner (SIGTERM, then SIGKILL)."""
        order = ["gateway", *(f"worker-{i}" for i in self.worker_addresses), "planner"]
        for name in order:
            if name in self.processes:
                self.processes[name].stop()

    def __enter__(self) -> LocalCluster:
        try:
            self.start(self.spec.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
