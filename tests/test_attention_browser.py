"""attention.html in a real headless Chromium: it draws the heatmap, follows the layer/head choice and the
hovered token, and loads nothing from the network. Skipped where no Chromium is installed.

Chromium is driven over the DevTools protocol on a pipe (it reads commands on fd 3 and writes replies on
fd 4, each a JSON message ended by a NUL byte), so the test needs nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minigpt.cli import run
from minigpt.cli.attention import main

CHROMIUM = next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_S = 30.0
PROMPT = "The quick brown fox\njumps over."  # 31 tokens: within block_size 32


def _high_fd(fd: int) -> int:
    """`fd` moved to a number ≥ 10, so that the child's dup2 onto 3 and 4 cannot overwrite it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """A headless Chromium with one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        commands_r, self._commands_w = map(_high_fd, os.pipe())
        self._replies_r, replies_w = map(_high_fd, os.pipe())

        def use_pipe_fds() -> None:  # in the child, before exec: dup2'd fds are inheritable
            os.dup2(commands_r, 3)
            os.dup2(replies_w, 4)

        self._proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=use_pipe_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands_r)
        os.close(replies_w)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and return its result; events are kept in `events`."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if getattr(self, "_session", None):
            message["sessionId"] = self._session
        os.write(self._commands_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies_r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._replies_r, 1 << 16) if ready else b""
            if not chunk:
                raise TimeoutError("chromium stopped answering")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied {expression}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass  # it may hang up before answering
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._commands_w)
        os.close(self._replies_r)


def checksum(heatmap: list[list[float]]) -> float:
    """Σ w[i][j]·(i+1)·(j+1): the fingerprint the page publishes as data-checksum for the map it draws."""
    index = np.arange(1, len(heatmap) + 1, dtype=np.float64)
    return float(index @ np.array(heatmap, dtype=np.float64) @ index)


@pytest.fixture
def browser(tmp_path: Path):
    chromium = Browser(tmp_path / "profile")
    yield chromium
    chromium.close()


# What the page shows: its data-* attributes and a fingerprint of the canvas pixels.
STATE = """(() => {
  const canvas = document.getElementById("heatmap");
  const url = canvas.toDataURL();
  let hash = 0;
  for (let i = 0; i < url.length; i++) hash = (hash * 31 + url.charCodeAt(i)) | 0;
  return {...document.body.dataset, canvasHash: hash};
})()"""

CHOOSE = """(() => {{
  const select = document.getElementById("{which}");
  select.value = "{value}";
  select.dispatchEvent(new Event("change"));
}})()"""


def write_page(checkpoint: Path, out: Path, *extra: str) -> dict:
    """Run the attention command into `out`; return the data embedded in its page."""
    assert run(main, ["--ckpt", str(checkpoint), "--prompt", PROMPT, "--out", str(out), *extra]) == 0
    html = (out / "attention.html").read_text(encoding="utf-8")
    return json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1).replace("<\\/", "</"))


def open_page(browser: Browser, page: Path) -> None:
    browser.call("Network.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=1100, height=1000, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === 'true'")


def save_screenshot(browser: Browser, name: str, default_dir: Path) -> None:
    """A PNG of the page, kept in $MINIGPT_SCREENSHOT_DIR when set (how docs/*.png are made)."""
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    shot_dir = Path(os.environ.get("MINIGPT_SCREENSHOT_DIR", default_dir))
    shot_dir.mkdir(parents=True, exist_ok=True)
    (shot_dir / name).write_bytes(base64.b64decode(shot))


def assert_only_local_requests(browser: Browser) -> None:
    sent = [e for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    requested = [e["params"]["request"]["url"] for e in sent]
    assert requested and all(url.startswith(("file:", "data:", "about:")) for url in requested)


def test_page_draws_the_chosen_head_and_the_hovered_token(
    browser: Browser, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "maps"
    data = write_page(tiny_checkpoint, out, "--aggregate", "mean")
    open_page(browser, out / "attention.html")

    first = browser.evaluate(STATE)
    assert (first["layer"], first["head"]) == ("0", "0")
    assert float(first["checksum"]) == pytest.approx(checksum(data["weights"][0][0]), rel=1e-9)
    # A future cell (row 0, last key) is painted with the colour of weight 0: viridis' first colour.
    # (`margin`, `cell` and `T` are the page script's own top-level constants.)
    cell = browser.evaluate(
        """Array.from(document.getElementById("heatmap").getContext("2d")
           .getImageData(margin + (T - 1) * cell + 1, margin + 1, 1, 1).data)"""
    )
    assert cell == [68, 1, 84, 255]

    browser.evaluate(CHOOSE.format(which="layer", value=1))
    browser.evaluate(CHOOSE.format(which="head", value=1))
    chosen = browser.evaluate(STATE)
    assert (chosen["layer"], chosen["head"]) == ("1", "1")
    shown = browser.evaluate('document.getElementById("stats").textContent')
    assert f"induction {data['stats']['induction'][1][1]:.3f}" in shown
    assert float(chosen["checksum"]) == pytest.approx(checksum(data["weights"][1][1]), rel=1e-9)
    assert float(chosen["checksum"]) != pytest.approx(float(first["checksum"]), rel=1e-9)
    assert chosen["canvasHash"] != first["canvasHash"]

    browser.evaluate(CHOOSE.format(which="head", value="mean"))  # the aggregate, third in the menu
    mean = browser.evaluate(STATE)
    assert float(mean["checksum"]) == pytest.approx(checksum(data["weights"][1][2]), rel=1e-9)

    # Hover the 5th token with the real mouse: the page switches its query to that token.
    box = browser.evaluate(
        """(() => { const span = document.querySelectorAll("#tokens span")[4];
                   span.scrollIntoView({block: "center"});
                   const r = span.getBoundingClientRect();
                   return [r.x + r.width / 2, r.y + r.height / 2]; })()"""
    )
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
    hovered = browser.evaluate(STATE)
    assert hovered["query"] == "4"
    assert hovered["canvasHash"] != mean["canvasHash"]  # the highlighted row moved

    save_screenshot(browser, "attention_page.png", tmp_path)
    assert_only_local_requests(browser)


# What the model view shows: one entry per small multiple, in page order.
THUMBNAILS = """Array.from(document.querySelectorAll("#model figure")).map((f) => {
  const canvas = f.querySelector("canvas"), r = canvas.getBoundingClientRect();
  const pixel = (i, j) => Array.from(canvas.getContext("2d").getImageData(j, i, 1, 1).data);
  return {layer: f.dataset.layer, head: f.dataset.head, caption: f.querySelector("figcaption").textContent,
          chosen: f.classList.contains("chosen"), first: pixel(0, 0), future: pixel(0, T - 1),
          centre: [r.x + r.width / 2, r.y + r.height / 2]};
})"""


def test_model_view_draws_every_head_small_and_opens_the_clicked_one(
    browser: Browser, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "maps"
    data = write_page(tiny_checkpoint, out, "--aggregate", "mean", "--ablate")
    open_page(browser, out / "attention.html")

    thumbnails = browser.evaluate(THUMBNAILS)
    assert [(t["layer"], t["head"]) for t in thumbnails] == [(l, h) for l in "01" for h in ("0", "1", "mean")]
    # Query 0 sees only key 0 (weight 1: viridis' last colour); the key after it is in its future (weight 0).
    assert all(t["first"] == [253, 231, 37, 255] and t["future"] == [68, 1, 84, 255] for t in thumbnails)
    change = data["importance"]["loss_change"][1][0]
    assert thumbnails[3]["caption"] == f"head 0 {change:+.3f}"
    assert [t["chosen"] for t in thumbnails] == [True] + [False] * 5

    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=thumbnails[4]["centre"][0], y=thumbnails[4]["centre"][1])
    for kind in ("mousePressed", "mouseReleased"):
        x, y = thumbnails[4]["centre"]
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    opened = browser.evaluate(STATE)
    assert (opened["layer"], opened["head"]) == ("1", "1")
    assert float(opened["checksum"]) == pytest.approx(checksum(data["weights"][1][1]), rel=1e-9)
    assert [t["chosen"] for t in browser.evaluate(THUMBNAILS)] == [False] * 4 + [True, False]
    stats = browser.evaluate('document.getElementById("stats").textContent')
    assert f"loss {data['importance']['loss_change'][1][1]:+.3f} when zeroed" in stats

    browser.evaluate("window.scrollTo(0, 0)")
    save_screenshot(browser, "model_view.png", tmp_path)
    assert_only_local_requests(browser)


# What the lens and patching tables show, cell by cell.
TABLES = """(() => {
  const cells = (id) => Array.from(document.querySelectorAll(`#${id} td`)).map((td) =>
    ({...td.dataset, text: td.textContent, query: td.classList.contains("query"), background: td.style.background}));
  return {lensShown: !document.getElementById("lens-view").hidden, lens: cells("lens"),
          patchingShown: !document.getElementById("patching-view").hidden,
          heads: cells("patching-heads"), residual: cells("patching-residual"),
          note: document.getElementById("patching-note").textContent,
          changed: Array.from(document.querySelectorAll("#patching-residual th.changed")).map((th) => th.cellIndex - 1)};
})()"""
CORRUPT = "The quick brown cat\njumps over."  # as many tokens as PROMPT; positions 16-18 differ


def visible(token: str) -> str:
    return token.replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u2192")


def test_page_shows_the_logit_lens_and_the_patching_beside_the_maps(
    browser: Browser, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "maps"
    data = write_page(
        tiny_checkpoint, out, "--logit_lens", "3", "--corrupt", CORRUPT, "--answer", "!", "--wrong", "."
    )
    open_page(browser, out / "attention.html")
    shown = browser.evaluate(TABLES)

    lens = data["lens"]
    assert shown["lensShown"] and lens["layers"] == ["embed", "block 0", "block 1"]
    assert len(shown["lens"]) == 3 * len(PROMPT)
    assert [c["text"] for c in shown["lens"]] == [visible(top[0]) for row in lens["top"] for top in row]
    # The last query is chosen at first: its column is outlined in every row, and no other cell.
    assert [(c["row"], c["position"]) for c in shown["lens"] if c["query"]] == [(str(n), str(len(PROMPT) - 1)) for n in range(3)]

    patching = data["patching"]
    assert shown["patchingShown"] and "logit('!') - logit('.') at the last position" in shown["note"]
    for cells, table in ((shown["heads"], patching["heads"]), (shown["residual"], patching["residual"])):
        assert [float(c["text"]) for c in cells] == pytest.approx([x for row in table for x in row], abs=0.0051)
    assert shown["changed"] == [16, 17, 18]
    assert shown["residual"][-1]["text"] == "1.00"  # after the last block, at the last position: everything
    assert shown["residual"][-1]["background"] == "rgb(178, 24, 43)"  # a share of 1: the red end of the scale

    # Hovering a lens cell with the real mouse moves the query there, in the heatmap and in the lens.
    box = browser.evaluate(
        """(() => { const td = document.querySelector('#lens td[data-row="1"][data-position="4"]');
                   td.scrollIntoView({block: "center", inline: "center"});
                   const r = td.getBoundingClientRect();
                   return [r.x + r.width / 2, r.y + r.height / 2]; })()"""
    )
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
    assert browser.evaluate(STATE)["query"] == "4"
    assert {c["position"] for c in browser.evaluate(TABLES)["lens"] if c["query"]} == {"4"}

    browser.evaluate(CHOOSE.format(which="layer", value=1))
    stats = browser.evaluate('document.getElementById("stats").textContent')
    assert f"restores {patching['heads'][1][0]:.3f} when patched" in stats

    save_screenshot(browser, "lens_and_patching.png", tmp_path)
    assert_only_local_requests(browser)


def test_page_without_lens_or_patching_hides_their_sections(browser: Browser, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    data = write_page(tiny_checkpoint, out)
    assert data["lens"] is None and data["patching"] is None
    open_page(browser, out / "attention.html")
    shown = browser.evaluate(TABLES)
    assert not shown["lensShown"] and not shown["patchingShown"] and shown["lens"] == [] and shown["heads"] == []
