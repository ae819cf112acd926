"""Take the dashboard screenshots of the docs (docs/images/dashboard-*.png).

    .venv/bin/python scripts/dashboard-screenshots.py [OUT_DIR]

Runs a 3-node devstack in this process, submits a few jobs (completed, failed, one
still printing), and photographs the dashboard in headless Chromium: the overview, a
job's page with its live logs, and a phone-sized screen.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bacalhau.api.server import serve_api
from bacalhau.models import JobSpec, OutputSpec
from bacalhau.network import Network
from bacalhau.testing.browser import chromium

TICKER = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "epoch 00: loss 0.000\\n")
  (data (i32.const 160) "go")
  (func $digit (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 21))
    (loop $l
      (call $digit (i32.const 106) (i32.div_u (local.get $i) (i32.const 10)))
      (call $digit (i32.const 107) (local.get $i))
      (call $digit (i32.const 118) (i32.mul (local.get $i) (i32.const 7)))
      (call $digit (i32.const 119) (i32.mul (local.get $i) (i32.const 3)))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 14))))
    (loop $wait
      (br_if $wait (call $path_open (i32.const 3) (i32.const 0) (i32.const 160) (i32.const 2)
                      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64))))))
"""
HELLO = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from wasm\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'


async def main(out: Path) -> None:
    async with Network.in_memory(3, seed=4) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        node = net.nodes[0]
        for i in range(5):
            await node.run_job(JobSpec.wasm(HELLO, labels=(f"batch-{i % 2}",)), timeout=30)
        await node.run_job(JobSpec.noop(stdout="ok\n"), timeout=30)
        await node.run_job(JobSpec.wasm(TRAP, retries=0, publisher="noop"), timeout=30)
        running = await node.submit(
            JobSpec.wasm(TICKER, outputs=[OutputSpec("outputs", "/outputs")], timeout=120)
        )
        with anyio.fail_after(30):
            while not running.result().executions:
                await node.changed(running.job_id).wait()

        def shoot() -> None:
            from selenium.webdriver.support.ui import WebDriverWait

            def ready(driver: Any) -> None:
                """Every job listed and the event stream replayed (7 took-times)."""
                WebDriverWait(driver, 30, poll_frequency=0.1).until(
                    lambda d: d.execute_script(
                        "const took = [...document.querySelectorAll('#jobs tr td:nth-child(5)')];"
                        "return document.getElementById('live').dataset.state === 'live' &&"
                        " took.length === 8 && took.filter(t => t.textContent).length === 7 &&"
                        " document.querySelectorAll('#chart rect').length > 0"
                    )
                )

            with chromium(width=1280, height=800) as driver:
                wait = WebDriverWait(driver, 30, poll_frequency=0.1)
                driver.get(f"{address.url}/")
                ready(driver)
                wait.until(lambda d: len(d.find_elements("css selector", ".nodecard")) == 3)
                driver.save_screenshot(str(out / "dashboard.png"))
                driver.set_window_size(1280, 1250)
                driver.get(f"{address.url}/#/job/{running.job_id}")
                wait.until(lambda d: "epoch 13" in d.find_element("id", "job-logs").text)
                wait.until(lambda d: d.find_elements("css selector", "#job-events li"))
                driver.save_screenshot(str(out / "dashboard-job.png"))
                driver.set_window_size(390, 844)
                driver.get(f"{address.url}/")
                ready(driver)
                driver.execute_script("document.getElementById('jobs-panel').scrollIntoView()")
                driver.save_screenshot(str(out / "dashboard-phone.png"))

        await anyio.to_thread.run_sync(shoot)
        execution = running.result().executions[0]
        runner = next(n for n in net.nodes if n.node_id == execution.node_id).runner
        (runner.folder(running.job_id) / "results" / "outputs" / "go").write_bytes(b"")
        await running.wait(30)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
    folder.mkdir(parents=True, exist_ok=True)
    anyio.run(main, folder)
    print("wrote", *sorted(p.name for p in folder.glob("dashboard*.png")))
