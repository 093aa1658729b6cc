"""Screenshots of the Dagster UI for the README: start `dagster dev` on the demo's instance and lake, save PNGs.

    make demo && make screenshots      # or: .venv/bin/python scripts/ui_screenshots.py --out docs/ui

Uses DAGSTER_HOME and PIPELINE_DATA_LAKE as `make demo` left them, and headless Chromium (Debian's `chromium`,
driven by Playwright). A page that is missing (an asset the code location does not have yet, a tab that does not
load) is skipped with a message. Also the home of `dagster_dev()` and `browser_page()`, which the UI test uses.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
VIEWPORT = {"width": 1400, "height": 850}
UI_START_S = 240
CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Animations (graph layout, chart transitions) finish after the network is idle.
SETTLE_MS = 1500


def chromium_path() -> str | None:
    """Debian's Chromium (or Ubuntu's name for it), or None where none is installed."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop `dagster dev` and all it started (webserver, daemon, code servers, run workers).

    SIGTERM to `dagster dev` alone lets it shut its services down in order; then SIGKILL to its whole process group
    takes whatever is left (a code server, a run worker), also when it did not stop in time.
    """
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + UI_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"dagster dev did not answer on {url} within {UI_START_S} s:\n{log.read_text()[-4000:]}")


@contextmanager
def dagster_dev(env: Mapping[str, str], log: Path) -> Iterator[str]:
    """`dagster dev -w workspace.yaml` (webserver and daemon) on a free local port; yields its URL once it answers.

    Runs in its own process group, which is stopped on exit, also when the body fails.
    """
    url_port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(url_port)],
            cwd=REPO_ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{url_port}"
        _wait_until_serving(url, process, log)
        yield url
    finally:
        _stop(process)


@contextmanager
def browser_page(chromium: str, timeout_ms: int = 120_000) -> Iterator[Page]:
    """A headless Chromium page of README size."""
    with sync_playwright() as playwright:
        # --no-sandbox: CI and this machine run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def dismiss_greeting(page: Page) -> None:
    """Close the UI's first-visit newsletter dialog if it shows: an instance made before dagster_home/dagster.yaml
    turned it off (`nux: enabled: false`) still has it."""
    skip = page.get_by_role("button", name="Skip")
    if page.get_by_text("Join the Dagster community").is_visible():
        skip.click()


def latest_partition(asset: str) -> str | None:
    """The partition of the asset's latest materialization in the instance at DAGSTER_HOME, or None."""
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(asset))
    return event.asset_materialization.partition if event and event.asset_materialization else None


def _shot_pages(url: str) -> dict[str, Callable[[Page], None]]:
    """File name -> how to open that page and wait until it shows what the screenshot is for."""

    def graph(page: Page) -> None:
        page.goto(f"{url}/asset-groups")
        page.get_by_text("ingest", exact=True).last.wait_for()
        dismiss_greeting(page)
        # Groups start collapsed: expand them (the graph's own shortcut, Alt+E) so that every asset shows.
        page.keyboard.press("Alt+e")
        page.get_by_text("training_dataset", exact=True).last.wait_for()

    def model_partition(page: Page) -> None:
        for asset in ("backtest", "clstm_ppo_policy"):
            if partition := latest_partition(asset):
                page.goto(f"{url}/assets/{asset}?view=partitions&partition={partition}")
                page.get_by_text("Latest materialization").first.wait_for()
                page.get_by_text("Metadata", exact=True).first.wait_for()
                # Plots are markdown metadata (SVG): open the equity curve, where the asset has one.
                plot = page.get_by_role("row").filter(has_text="equity_curve").get_by_text("[Show Markdown]")
                if plot.count():
                    plot.first.click()
                    page.get_by_role("dialog").wait_for()
                return
        raise LookupError("neither backtest nor clstm_ppo_policy has a materialization")

    def checks(page: Page) -> None:
        # The promotion gate: the check that refused the demo's candidate, with its reason.
        page.goto(f"{url}/assets/deployment_artifact?view=checks")
        page.get_by_text("beats_best_baseline").first.click()
        page.get_by_text("Evaluation result").first.wait_for()

    def lineage(page: Page) -> None:
        # Upstream of the promotion: the deployment artifact, the evaluation, the model and its dataset.
        page.goto(f"{url}/assets/production_model?view=lineage&lineageScope=upstream&lineageDepth=4")
        page.get_by_text("training_dataset", exact=True).first.wait_for()

    def automation(page: Page) -> None:
        page.goto(f"{url}/automation")
        page.get_by_text("daily_after_close", exact=True).first.wait_for()

    def timeline(page: Page) -> None:
        page.goto(f"{url}/overview/activity/timeline")
        page.get_by_text("rl_trading_pipeline", exact=True).first.wait_for()
        dismiss_greeting(page)
        page.get_by_role("button", name="1hr").click()

    def runs(page: Page) -> None:
        page.goto(f"{url}/runs")
        page.get_by_text("Success", exact=True).first.wait_for()

    def backfills(page: Page) -> None:
        page.goto(f"{url}/runs?view=backfills")
        page.get_by_role("tab", name="Backfills").or_(page.get_by_text("Backfills", exact=True)).first.wait_for()

    return {
        "asset_graph": graph, "model_partition": model_partition, "asset_checks": checks, "model_lineage": lineage,
        "automation": automation, "runs_timeline": timeline, "runs": runs, "backfills": backfills,
    }


def take_screenshots(url: str, chromium: str, out: Path) -> list[Path]:
    """Save one PNG per page into `out`; a page that does not show is skipped with a message."""
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with browser_page(chromium, timeout_ms=60_000) as page:
        for name, open_page in _shot_pages(url).items():
            try:
                open_page(page)
                # Let charts and the graph layout draw once their data has arrived.
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(SETTLE_MS)
                dismiss_greeting(page)
            except (PlaywrightError, LookupError) as missing:
                print(f"skipped {name}: {str(missing).splitlines()[0]}", flush=True)
                continue
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            saved.append(path)
            print(f"saved {path}", flush=True)
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "ui", help="folder for the PNGs")
    args = parser.parse_args(argv)
    chromium = chromium_path()
    if chromium is None:
        sys.exit("no chromium binary on PATH: apt-get install -y chromium")
    if not os.environ.get("DAGSTER_HOME"):
        sys.exit("DAGSTER_HOME is not set: run through `make screenshots`, or point it at the demo's instance")
    env = {**os.environ, "PIPELINE_DATA_LAKE": os.environ.get("PIPELINE_DATA_LAKE", str(REPO_ROOT / "data_lake"))}
    log = Path(env["DAGSTER_HOME"]) / "ui_screenshots.log"
    with dagster_dev(env, log) as url:
        saved = take_screenshots(url, chromium, args.out)
    print(f"{len(saved)} screenshot(s) in {args.out}")


if __name__ == "__main__":
    main()
