"""The documentation site and the plots page: the params reference lists every key of the schema,
dvc.yaml's default plots are the curated set for every task, and the plots page template
loads nothing from the network."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(relative: str) -> ModuleType:
    """A script under docs/ (not a package) imported by path."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def sections(page: str) -> dict[str, str]:
    """The reference page cut at its `### Model` headings."""
    parts = re.split(r"^### (\w+)\n", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_params_reference_lists_every_field_of_every_params_model() -> None:
    gen = load("docs/gen_params.py")
    page = gen.render()
    by_model = sections(page)
    checked = 0
    for module_name in gen.MODULES:
        for model in gen.models(module_name):
            assert model.__name__ in by_model, f"{model.__name__} has no section"
            rows = by_model[model.__name__]
            for name, field in model.model_fields.items():
                row = next((line for line in rows.splitlines() if line.startswith(f"| `{name}` |")), None)
                assert row is not None, f"{model.__name__}.{name} is missing from the reference"
                if field.description:
                    assert gen._cell(field.description)[:40] in row
                checked += 1
    assert checked > 200  # the whole schema, not a corner of it


def test_params_reference_names_where_each_section_sits() -> None:
    page = load("docs/gen_params.py").render()
    ner = sections(page)["NerDownloadParams"]
    assert "`tasks.<task>.download`" in ner and "| `tag_column` | `int` | `-1` |" in ner
    assert "`tasks.<task>.train_lora.early_stopping`" in sections(page)["EarlyStoppingParams"]


def test_site_navigation_points_at_pages_that_exist() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = [page for entry in config["nav"] for page in _pages(entry)]
    generated = {load("docs/gen_params.py").PAGE, "index.md"}  # docs/hooks.py adds both
    missing = [page for page in pages if page not in generated and not (ROOT / "docs" / page).is_file()]
    assert not missing and len(pages) >= 15


def _pages(entry: object) -> list[str]:
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in _pages(value)]
    if isinstance(entry, list):
        return [page for item in entry for page in _pages(item)]
    return []


def test_default_plots_are_the_curated_set_for_every_task() -> None:
    """The top-level `plots:` has, for each task in pipeline.tasks, its training loss, its
    validation metric and LoRA - full; no stage declares plots of its own, which DVC would draw
    beside them (the curves and confusion matrices are cached outs)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in spec["stages"].items():
        declared = stage.get("do", stage)
        assert "plots" not in declared, f"stage {name} declares plots: dvc plots show would draw them too"
        if name != "compare":  # the report: committed, and rebuilt in seconds
            plain = [
                out
                for out in declared.get("outs", [])
                if isinstance(out, dict) and not next(iter(out.values())).get("cache", True)
            ]
            assert not plain, f"stage {name}: plain cache: false outs {plain} keep it out of DVC's run cache (DVC 3.67)"
    ids = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in spec["plots"]]
    tasks = yaml.safe_load((ROOT / "params.yaml").read_text())["pipeline"]["tasks"]
    for task in tasks:
        assert f"{task} training loss" in ids
        assert any(i.startswith(f"{task} validation ") for i in ids)
        assert f"reports/comparison/{task}-lora-minus-full.svg" in ids
    for entry in spec["plots"]:
        if isinstance(entry, dict):
            (props,) = entry.values()
            assert props["x_label"] and props["y_label"]
            assert len(props["y"]) == 2 and all(path.startswith("metrics/") for path in props["y"])  # full, LoRA


def test_plots_page_template_loads_nothing_from_the_network() -> None:
    template = (ROOT / "docs" / "plots" / "offline.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in template and "{scripts}" not in template  # DVC's CDN tags go into {scripts}
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", template)
    assert "vegaEmbed" in template and "BSD-3-Clause" in template
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"html_template\s*=\s*\.\./docs/plots/offline\.html", config)


def test_plots_page_template_is_what_the_pinned_bundle_gives() -> None:
    pytest.importorskip("vl_convert")
    make = load("docs/plots/make_template.py")
    assert (ROOT / "docs" / "plots" / "offline.html").read_text(encoding="utf-8") == make.render()


def test_curve_template_fills_dvc_anchors_and_names_the_methods() -> None:
    """docs/plots/methods.json: DVC fills its data, axes and labels; colour is the method (from the
    file's train-full / train-lora folder), so both methods share a chart with a legend."""
    spec = json.loads((ROOT / "docs" / "plots" / "methods.json").read_text())
    text = json.dumps(spec)
    for anchor in ("DATA", "X", "Y", "X_LABEL", "Y_LABEL", "TITLE"):
        assert f"<DVC_METRIC_{anchor}>" in text
    assert spec["encoding"]["color"]["field"] == "method" and "train-lora" in spec["transform"][0]["calculate"]
    used = [
        next(iter(e.values())).get("template")
        for e in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
        if isinstance(e, dict)
    ]
    assert used and set(used) == {"docs/plots/methods.json"}


def test_readme_is_short_and_its_links_point_at_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    links = [target for target in re.findall(r"\]\(([^)#]+)[^)]*\)", readme) if "://" not in target]
    assert links and all((ROOT / target).exists() for target in links), links
    assert "python -m pytest -q" in readme  # the test command .ci/run runs


def test_the_sites_home_page_is_the_readme_with_links_inside_the_site() -> None:
    hooks = load("docs/hooks.py")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home = hooks.home_page()
    assert not (ROOT / "docs" / "index.md").exists()  # one home page, not a copy that drifts
    assert "](docs/" not in home and "](docs/ci.md)" in readme and "](ci.md)" in home
    links = [target for target in re.findall(r"\]\(([^)#]+)[^)]*\)", home) if "://" not in target]
    pages = [target for target in links if target != "index.md"]  # index.md is this page
    assert pages and all((ROOT / "docs" / target).is_file() for target in pages), pages
    restored = re.sub(r"\]\((?!https?://)", "](docs/", home).replace("](docs/index.md)", "](docs/)")
    assert restored == readme  # nothing else changed
