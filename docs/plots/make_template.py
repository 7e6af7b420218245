"""Write docs/plots/offline.html: the page template `dvc plots show` fills, with Vega, Vega-Lite
and Vega-Embed inlined so the charts render without internet (DVC's own template loads them
from a CDN, and every chart is blank offline).

The bundle comes from vl-convert-python (`javascript_bundle`), pinned in requirements.txt, so
the same version gives the same bytes. Run `python docs/plots/make_template.py` after
changing the pin; tests/test_docs.py checks the committed file loads nothing from the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import vl_convert

VEGA_LITE = "6.4"
"""The Vega-Lite the bundle carries. DVC's specs declare v5; v6 compiles them (the console notes the
version, nothing fails) and matches the bundled Vega 6 (with v5.21 step axes showed 0.5 ticks)."""
TARGET = Path(__file__).with_name("offline.html")

HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>reprotune: dvc plots</title>
<!-- Vega {vega} (BSD-3-Clause), Vega-Lite {vega_lite} (BSD-3-Clause) and Vega-Embed {embed} (BSD-3-Clause),
     Copyright (c) the University of Washington Interactive Data Lab; bundled by vl-convert-python.
     Licenses: https://github.com/vega/vega/blob/main/LICENSE and the same file in vega-lite and vega-embed. -->
<script>
"""
TAIL = """
</script>
<style>
body {{ font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; font-weight: 600; }}
p.note {{ color: #555; max-width: 70em; }}
body > div {{ display: inline-block; vertical-align: top; margin: 0 24px 24px 0; }}
img {{ max-width: 560px; }}
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
<h1>reprotune: training curves and the comparison</h1>
<p class="note">The curated set from dvc.yaml's <code>plots:</code> (training loss, the validation metric,
LoRA &minus; full); the x axis of the curves is dvclive's log index (<code>epoch.tsv</code> maps it to epochs).
Everything else on request, e.g. <code>dvc plots show metrics/wnut16/train-full/plots</code>.</p>
{{plot_divs}}
</body>
</html>
"""


def render() -> str:
    """The template's text: the pinned bundle between a fixed head and tail."""
    bundle = vl_convert.javascript_bundle(None, vl_version=VEGA_LITE)  # type: ignore[arg-type]  # None: the default snippet
    if "</script" in bundle.lower():  # would end the inline script early
        raise SystemExit("error: the Vega bundle contains '</script'; it cannot be inlined")
    head = HEAD.format(
        vega=vl_convert.get_vega_version(), vega_lite=VEGA_LITE, embed=vl_convert.get_vega_embed_version()
    )
    return head + bundle + TAIL.format()


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.name} ({TARGET.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
