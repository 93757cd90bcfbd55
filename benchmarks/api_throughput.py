"""API throughput on loopback, each figure beside an aiohttp hello-world in the same server.

A ZTDP API process (memory store) also serves `GET /hello`, a bare aiohttp handler; `wrk`
drives each endpoint the same way (1 thread, 32 connections, a few seconds) and the script
prints requests/s and the ratio to hello-world. Goal: `POST .../services` >= 0.3 of hello.
The server runs as `ztdp serve` does (ZTDP_EVENT_LOOP, start-up heap frozen).
Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DURATION = "3s"
ROUNDS = 3
GRAPH_NODES = 10_000

CREATE_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"metadata":{"name":"svc-ROUND-%d","owner":"team-x"},"spec":{"application":"bench","port":8080}}',
    counter)
  return wrk.format("POST", "/v1/applications/bench/services",
                    {["Content-Type"] = "application/json"}, body)
end
"""


def serve(port: int) -> None:
    from aiohttp import web

    from ztdp.api import create_app
    from ztdp.cli.process import loop_factory, settle_heap
    from ztdp.settings import Settings

    settings = Settings()
    app = create_app(settings)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    async def settle(_: web.Application) -> None:
        settle_heap()

    app.router.add_get("/hello", hello)
    app.on_startup.append(settle)
    # As `ztdp serve` runs: on its event loop, with the start-up heap frozen.
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        loop=loop_factory(settings.event_loop)(),
    )


def post(url: str, body: object) -> int:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:
        return resp.status


def wrk(url: str, script: str | None = None) -> tuple[float, int]:
    cmd = ["wrk", "-t1", "-c32", f"-d{DURATION}", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            cmd[1:1] = ["-s", lua.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, int(errors.group(1)) if errors else 0


class Server:
    """The API in its own process, so that wrk and the server each have a core."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{self.base}/hello")
                break
            except OSError:
                time.sleep(0.1)
        post(f"{self.base}/v1/applications", {"metadata": {"name": "bench", "owner": "team-x"}})

    def seed(self, nodes: int) -> int:
        """Add services over one keep-alive connection until the graph has `nodes` nodes."""
        total = sum(json.load(urllib.request.urlopen(f"{self.base}/v1/status"))["nodes"].values())
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        for n in range(nodes - total):
            body = {
                "metadata": {"name": f"seed-{n}", "owner": "team-x"},
                "spec": {"application": "bench"},
            }
            conn.request(
                "POST",
                "/v1/applications/bench/services",
                json.dumps(body),
                {"Content-Type": "application/json"},
            )
            assert conn.getresponse().read() and True
        conn.close()
        return max(total, nodes)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    server = Server()
    try:
        # Interleaved rounds, medians: the machine's noise hits both sides alike.
        hellos, creates, failed = [], [], 0
        for n in range(ROUNDS):
            hellos.append(wrk(f"{server.base}/hello")[0])
            rps, errors = wrk(server.base, CREATE_LUA.replace("ROUND", str(n)))
            creates.append(rps)
            failed += errors
        hello, create = statistics.median(hellos), statistics.median(creates)
        print(f"hello-world               {hello:9.0f} req/s (median of {ROUNDS})")
        rounds = ", ".join(f"{c / h:.2f}" for c, h in zip(creates, hellos, strict=True))
        print(
            f"POST .../services         {create:9.0f} req/s  ratio {create / hello:.2f}  "
            f"(goal >= 0.3; rounds: {rounds}; non-2xx: {failed})"
        )
    finally:
        server.stop()
    server = Server()
    try:
        total = server.seed(GRAPH_NODES)
        hello, _ = wrk(f"{server.base}/hello")
        graph, failed = wrk(f"{server.base}/v1/graph")
        print(f"hello-world               {hello:9.0f} req/s")
        print(
            f"GET /v1/graph, {total} nodes {graph:7.1f} req/s  ratio {graph / hello:.4f}  "
            f"(non-2xx: {failed})"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main()
