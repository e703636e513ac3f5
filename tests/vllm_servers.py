"""Real `vllm serve` processes for the remote-engine tests, started the way the docs say."""

from __future__ import annotations

import os


class VllmServer:
    """A real `vllm serve` (our CPU build, the embedded model) on 127.0.0.1, as a user
    starts one (docs/scaling-out.md)."""

    def __init__(self, model_dir: str, log_dir: str) -> None:
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = os.path.join(log_dir, f"vllm-{self.port}.log")
        env = {
            **os.environ,
            # vllm serve keeps torch to one thread unless told; both cores, as in-process.
            "OMP_NUM_THREADS": str(os.cpu_count() or 2),
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        }
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_dir, "--served-model-name", "smollm2",
            "--host", "127.0.0.1", "--port", str(self.port),
            # float32, as the in-process test engine (tests/conftest.py)
            "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
            "--max-num-seqs", "64", "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", "4096",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout_s: float = 600.0) -> VllmServer:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(self.log, encoding="utf-8", errors="replace") as log:
                    tail = log.read()[-3000:]
                raise RuntimeError(f"vllm serve exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(1.0)
        raise RuntimeError(f"vllm serve did not answer /health within {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except Exception:
                self.process.kill()
