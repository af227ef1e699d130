"""The committed HTML template that makes `dvc plots show/diff` work offline."""

from __future__ import annotations

import re
from pathlib import Path

import vl_convert
from dvc.repo import Repo

from advlab.experiments import offline_plots

REPO = Path(__file__).resolve().parents[1]


def test_dvc_uses_the_committed_template_and_it_matches_vl_convert():
    configured = Repo(str(REPO)).config["plots"]["html_template"]
    path = REPO / ".dvc" / configured  # DVC resolves it against .dvc/
    assert path == REPO / offline_plots.TEMPLATE
    page = path.read_text(encoding="utf8")
    assert page == offline_plots.template(), (
        "stale: run `python -m advlab.experiments.offline_plots`")
    assert vl_convert.javascript_bundle(vl_version=offline_plots.VEGA_LITE) in page


def test_template_has_dvc_plots_placeholder_and_no_cdn_scripts():
    page = (REPO / offline_plots.TEMPLATE).read_text(encoding="utf8")
    assert page.count("{plot_divs}") == 1
    assert "{scripts}" not in page  # where DVC would put its CDN <script src=...> tags
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)


def test_check_flags_a_stale_template(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert offline_plots.main(["--check"]) == 1  # absent
    assert "is stale" in capsys.readouterr().err
    assert offline_plots.main([]) == 0
    assert offline_plots.main(["--check"]) == 0
    (tmp_path / offline_plots.TEMPLATE).write_text("<html>{plot_divs}</html>")
    assert offline_plots.main(["--check"]) == 1
