"""Screenshots of what people look at, rendered in headless Chromium with the network blocked:
the comparison report (reports/comparison/comparison.md with its charts), the `dvc plots show`
page and the documentation site's home page. Writes docs/screenshots/{report,plots,docs-home}.png.

Run from the repository root after `dvc repro` (Debian: `apt-get install chromium`):

    python docs/screenshots.py

A page that needs the network shows up blank here, which is the point: `dvc plots show` must
draw its charts from the Vega bundled in docs/plots/offline.html.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import markdown

OFFLINE = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]
"""Chromium flags that make every request outside this machine fail: no DNS, and a proxy nobody
listens on (127.0.0.1 bypasses it, so the site can be served from there)."""

REPORT_STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 1180px; margin: 24px auto;
       color: #222; font-size: 14px; line-height: 1.45; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
img { max-width: 560px; margin: 4px 8px 8px 0; vertical-align: top; }
code { background: #f4f4f4; padding: 0 3px; }
h1 { font-size: 24px; } h2 { font-size: 20px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("error: no chromium on PATH; on Debian: apt-get install chromium")


def shoot(url: str, target: Path, width: int, height: int) -> None:
    """One PNG of the page at `url`, after its scripts had 10 s of virtual time to draw."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--virtual-time-budget=10000",
        f"--window-size={width},{height}",
        f"--screenshot={target}",
        "--enable-logging=stderr",
        "--v=0",
        *OFFLINE,
        url,
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    errors = [
        line
        for line in done.stderr.splitlines()
        if ("CONSOLE" in line and ("Uncaught" in line or "Error" in line)) or "Page load failed" in line
    ]
    if errors:  # a chart that failed to draw is blank in the picture: say why
        raise SystemExit(f"error: {url} logged script errors:\n" + "\n".join(errors))
    if not target.is_file():
        raise SystemExit(f"error: chromium wrote no screenshot of {url}")
    print(f"wrote {target}")


@contextmanager
def serve(folder: Path) -> Iterator[int]:
    """A static HTTP server for `folder` on a free loopback port, for as long as the block runs."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        pass


def report_page(report_dir: Path, scratch: Path) -> Path:
    """comparison.md as one HTML page beside its SVG charts (what a Markdown viewer shows)."""
    body = markdown.markdown((report_dir / "comparison.md").read_text(encoding="utf-8"), extensions=["tables"])
    page = scratch / "report" / "index.html"
    shutil.copytree(report_dir, page.parent)
    page.write_text(f"<!DOCTYPE html><meta charset='utf-8'><style>{REPORT_STYLE}</style>{body}", encoding="utf-8")
    return page


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--report-height", type=int, default=3400)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        page = report_page(Path("reports/comparison"), scratch)
        shoot(page.as_uri(), args.out / "report.png", 1240, args.report_height)
        subprocess.run(["dvc", "plots", "show", "-o", str(scratch / "plots")], check=True)
        shoot((scratch / "plots" / "index.html").as_uri(), args.out / "plots.png", 1400, 1250)
        subprocess.run(["mkdocs", "build", "--no-strict", "--site-dir", str(scratch / "site")], check=True)
        with serve(scratch / "site") as port:  # the site's search needs HTTP, not file://
            shoot(f"http://127.0.0.1:{port}/", args.out / "docs-home.png", 1280, 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
