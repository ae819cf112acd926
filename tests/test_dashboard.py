"""The web dashboard in a real headless Chromium, against a live 3-node network.

Screenshots of each step are kept under the test's temporary folder (``screenshots/``).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from bacalhau.api.server import ApiAddress, serve_api
from bacalhau.models import JobSpec, OutputSpec
from bacalhau.network import Network
from bacalhau.testing.browser import chromium

pytestmark = pytest.mark.anyio

GATE_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello from the dashboard test\\n")
  (data (i32.const 140) "and goodbye\\n")
  (data (i32.const 160) "go")
  (func $say (param $at i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $say (i32.const 100) (i32.const 30))
    (loop $wait
      (br_if $wait (call $path_open (i32.const 3) (i32.const 0) (i32.const 160) (i32.const 2)
                      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64))))
    (call $say (i32.const 140) (i32.const 12))))
"""
TRAP = '(module (memory (export "memory") 1) (func (export "_start") unreachable))'
WAIT = 60.0


@pytest.fixture
async def devstack() -> AsyncIterator[tuple[Network, ApiAddress]]:
    async with Network.in_memory(3, seed=11) as net, anyio.create_task_group() as tg:
        address = await tg.start(functools.partial(serve_api, net.nodes[0], port=0))
        yield net, address
        tg.cancel_scope.cancel()


class Page:
    """The browser, driven from worker threads (selenium blocks)."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.taken: list[Path] = []

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def until(self, what: str, condition: Callable[[Any], Any]) -> Any:
        """Wait (bounded) until ``condition(driver)`` is truthy; fail naming ``what``."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        def wait() -> Any:
            try:
                return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(condition)
            except TimeoutException:
                self.driver.save_screenshot(str(self.shots / "timeout.png"))
                raise AssertionError(f"the dashboard never showed {what}") from None

        return await self.run(wait)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, script, *args)

    async def shot(self, name: str) -> None:
        path = self.shots / f"{len(self.taken):02d}-{name}.png"
        await self.run(self.driver.save_screenshot, str(path))
        self.taken.append(path)

    async def row_state(self, job_id: str) -> str | None:
        found = await self.js(
            "const r = document.querySelector(`tr[data-job-id='${arguments[0]}']`);"
            "return r ? r.dataset.state : null;",
            job_id,
        )
        return None if found is None else str(found)

    async def visible_rows(self) -> list[str]:
        rows = await self.js(
            "return [...document.querySelectorAll('#jobs tr')].map(r => r.dataset.jobId);"
        )
        return [str(r) for r in rows]


async def test_dashboard_shows_jobs_live_logs_and_filters(
    devstack: tuple[Network, ApiAddress], tmp_path: Path
) -> None:
    net, address = devstack
    shots = tmp_path / "screenshots"
    shots.mkdir()
    requester = net.nodes[0]
    with chromium() as driver:
        page = Page(driver, shots)
        await page.run(driver.get, f"{address.url}/")
        await page.until(
            "the event stream connected",
            lambda d: d.execute_script(
                "return document.getElementById('live').dataset.state === 'live'"
            ),
        )
        cards = await page.until(
            "three nodes", lambda d: len(d.find_elements("css selector", ".nodecard")) == 3
        )
        assert cards
        await page.shot("empty")

        # A job submitted now appears without a reload, and is seen running.
        handle = await requester.submit(
            JobSpec.wasm(GATE_WAT, outputs=[OutputSpec("outputs", "/outputs")], timeout=60)
        )
        job_id = handle.job_id
        await page.until(
            "the new job's row",
            lambda d: d.execute_script(
                "return !!document.querySelector(`tr[data-job-id='${arguments[0]}']`)", job_id
            ),
        )

        # Its page: the first log line arrives while the job still waits.
        await page.run(driver.get, f"{address.url}/#/job/{job_id}")
        await page.until(
            "the first log line",
            lambda d: "hello from the dashboard test" in d.find_element("id", "job-logs").text,
        )
        assert "and goodbye" not in await page.js(
            "return document.getElementById('job-logs').textContent"
        )
        assert not handle.result().state.terminal
        await page.shot("job-running")
        executions = handle.result().executions
        assert len(executions) == 1
        node = next(n for n in net.nodes if n.node_id == executions[0].node_id)
        (node.runner.folder(job_id) / "results" / "outputs" / "go").write_bytes(b"")
        await page.until(
            "the last log line", lambda d: "and goodbye" in d.find_element("id", "job-logs").text
        )
        await page.until(
            "the job completed", lambda d: d.find_element("id", "job-state").text == "completed"
        )
        await page.until(
            "the results CID link", lambda d: d.find_elements("css selector", "#job-execs a.cid")
        )
        await page.until(
            "the timeline", lambda d: len(d.find_elements("css selector", "#job-events li")) >= 4
        )
        href = await page.js("return document.querySelector('#job-execs a.cid').href")
        async with httpx.AsyncClient() as http:  # the download link serves the results
            car = await http.get(str(href))
        assert car.status_code == 200
        assert car.headers["content-type"] == "application/vnd.ipld.car"
        await page.shot("job-completed")

        # Back to the list: the job's state changed there too, without a reload.
        await page.js("location.hash = '#/'")
        await page.until(
            "the job completed in the list",
            lambda d: d.execute_script(
                "const r = document.querySelector(`tr[data-job-id='${arguments[0]}']`);"
                "return r && r.dataset.state === 'completed'",
                job_id,
            ),
        )

        # A failing job, then the filters and the search.
        failed = await requester.submit(JobSpec.wasm(TRAP, retries=0, publisher="noop", timeout=20))
        await page.until(
            "the failed job",
            lambda d: d.execute_script(
                "const r = document.querySelector(`tr[data-job-id='${arguments[0]}']`);"
                "return r && r.dataset.state === 'failed'",
                failed.job_id,
            ),
        )
        await page.until(
            "the chart's bars", lambda d: d.find_elements("css selector", "#chart rect")
        )
        await page.shot("list")
        await page.js("document.querySelector(\"#state-filter [data-state='failed']\").click()")
        assert await page.visible_rows() == [failed.job_id]
        await page.js("document.querySelector(\"#state-filter [data-state='completed']\").click()")
        assert await page.visible_rows() == [job_id]
        await page.js("document.querySelector(\"#state-filter [data-state='']\").click()")
        assert sorted(await page.visible_rows()) == sorted([job_id, failed.job_id])
        search = await page.run(driver.find_element, "id", "search")
        await page.run(search.send_keys, failed.job_id[:11])
        assert await page.visible_rows() == [failed.job_id]
        await page.shot("search")

        # A phone-sized screen: nothing wider than the screen.
        await page.run(driver.set_window_size, 390, 844)
        await page.run(search.clear)
        await page.js("document.getElementById('search').dispatchEvent(new Event('input'))")
        await page.until(
            "both jobs again", lambda d: len(d.find_elements("css selector", "#jobs tr")) == 2
        )
        overflow = await page.js("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        await page.shot("phone")
    assert all(p.stat().st_size > 1000 for p in page.taken)
