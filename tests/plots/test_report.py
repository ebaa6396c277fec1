"""report.html: self-contained, and a real browser (headless Chromium) shows every picture."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
from fakes import PLOT_PARAMS, make_inputs, write_curve

from imageclust.plots.report import embedded_picture, scores_table, stage_table, write_report
from imageclust.plots.stage import make_all_plots

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]


def test_scores_table_puts_the_usual_columns_first():
    table = scores_table({"finetune": {"all": {"zeta": 1, "nmi": 0.5, "acc": 0.75, "n": 10}}})
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header == ["clusters / split", "n", "acc", "nmi", "zeta"]
    assert "<td>finetune / all</td><td>10</td><td>0.7500</td><td>0.5000</td><td>1</td>" in table
    headline = scores_table({"finetune": {"all": {"zeta": 1, "nmi": 0.5, "acc": 0.75, "n": 10}}}, headline=True)
    assert re.findall(r"<th>(.*?)</th>", headline) == ["clusters / split", "ACC", "NMI", "images"]


def test_pictures_of_photos_are_embedded_as_jpeg_and_charts_as_png(tmp_path):
    from PIL import Image

    photo = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    chart = np.full((200, 300, 3), 255, dtype=np.uint8)
    chart[50:60, :] = 0
    Image.fromarray(chart).save(tmp_path / "chart.png")
    mime, data = embedded_picture(tmp_path / "photo.png")
    assert mime == "image/jpeg" and len(data) < (tmp_path / "photo.png").stat().st_size / 2
    assert embedded_picture(tmp_path / "chart.png") == ("image/png", (tmp_path / "chart.png").read_bytes())


def test_stage_table_flattens_nested_metrics_and_escapes():
    table = stage_table("download", {"counts": {"train": 3}, "name": "<b>"})
    assert "<td>counts.train</td><td>3</td>" in table and "&lt;b&gt;" in table


def test_report_embeds_pictures_and_fetches_nothing(tmp_path):
    png = tmp_path / "a.png"
    matplotlib.image.imsave(png, np.random.default_rng(0).random((20, 30)))
    write_report(
        tmp_path / "r.html",
        "title <x>",
        {"evaluate": {"s": {"all": {"acc": 1.0}}}},
        [("A picture", png, "caption")],
        [("cluster 0", png)],
    )
    page = (tmp_path / "r.html").read_text()
    assert len(re.findall(r'src="data:image/(png|jpeg);base64,', page)) == 2
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "title &lt;x&gt;" in page


def test_report_flags_a_sink_cluster(tmp_path):
    sink = {"cluster_sizes": {"largest_to_mean": 2.6, "smallest_to_mean": 0.3, "empty": 0}}
    even = {"cluster_sizes": {"largest_to_mean": 1.2, "smallest_to_mean": 0.8, "empty": 0}}
    write_report(tmp_path / "r.html", "t", {"finetune": sink, "cluster": even}, [], [])
    warnings = re.findall(r'<p class="warning">(.*?)</p>', (tmp_path / "r.html").read_text())
    assert warnings == ["finetune: the largest cluster is 2.6x the mean size"]


def test_report_flags_a_k_chosen_by_a_thin_margin(tmp_path):
    thin = {"k": 7, "k_auto": True, "k_runner_up": 8, "k_margin": 0.015}
    clear = {"k": 7, "k_auto": True, "k_runner_up": 8, "k_margin": 0.3}
    for name, metrics, expected in (("thin", thin, 1), ("clear", clear, 0)):
        write_report(tmp_path / f"{name}.html", "t", {"cluster": metrics}, [], [])
        warnings = re.findall(r'<p class="warning">(.*?)</p>', (tmp_path / f"{name}.html").read_text())
        assert len(warnings) == expected, name
    assert "K=7 was chosen over K=8 by a margin of 1.5%" in (tmp_path / "thin.html").read_text()


def test_report_says_what_the_finetune_stage_chose_by_itself(tmp_path):
    guarded = {
        "method": "deepcluster",
        "guard_kept_cluster_stage": True,
        "guard_best_score": 0.95,
        "guard_start_score": 0.97,
    }
    chosen = {"method": "auto", "chosen": "turtle", "candidate_scores": {"none": 0.84, "turtle": 0.86}}
    refereed = {
        **chosen,
        "chosen_by": "neighbour score in the referee space(s) a_160, b_224 (extract.referees), averaged",
        "judged_in": ["a_160", "b_224"],
        "referee_spaces": 2,
    }
    floored = {"method": "scan", "floor_kept_cluster_stage": True, "floor_score": 0.82, "floor_start_score": 0.84}
    for name, metrics, expected in (
        ("guarded", guarded, "deepcluster: no clustering it made beat the cluster stage's in the starting features "
         "(judged 0.95 against 0.97); the cluster stage's assignment is kept"),
        ("chosen", chosen, "auto kept turtle (label-free scores: none 0.84, turtle 0.86)"),
        ("refereed", refereed, "auto kept turtle (label-free scores: none 0.84, turtle 0.86; judged in the referee "
         "space(s) a_160, b_224 (extract.referees), averaged)"),
        ("floored", floored,
         "scan's clustering was judged worse than the cluster stage's (0.82 against 0.84); the cluster stage's "
         "assignment is kept (finetune.floor)"),
    ):  # fmt: skip
        write_report(tmp_path / f"{name}.html", "t", {"finetune": metrics}, [], [])
        notes = re.findall(r'<p class="note">(.*?)</p>', (tmp_path / f"{name}.html").read_text())
        assert [html.unescape(n) for n in notes] == [f"finetune: {expected}"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    inputs = make_inputs(tmp_path)
    write_curve(tmp_path / "loss.tsv", "loss", [1.0, 0.5])
    (tmp_path / "evaluate.json").write_text(json.dumps({"finetune": {"all": {"n": 60, "acc": 1.0}}}))
    make_all_plots(
        inputs["features"],
        inputs["sources"],
        inputs["prepared"],
        {"loss": tmp_path / "loss.tsv"},
        tmp_path / "plots",
        PLOT_PARAMS,
        seed=0,
        metrics={"evaluate": tmp_path / "evaluate.json"},
    )
    report = tmp_path / "plots" / "report.html"
    pictures = report.read_text().count("<img ")
    assert pictures >= 8

    url = report.resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *HEADLESS, "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert f'data-images-loaded="{pictures}"' in body.group(0) and 'data-images-broken="0"' in body.group(0)

    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *HEADLESS, f"--screenshot={shot}", "--window-size=1000,1400", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.std() > 0.05  # not a blank page
    assert (pixels.mean(-1) < 0.5).mean() > 0.01  # text and pictures drew dark pixels


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_chromium_check_sees_a_broken_picture(tmp_path):
    png = tmp_path / "a.png"
    matplotlib.image.imsave(png, np.random.default_rng(0).random((20, 30)))
    write_report(tmp_path / "r.html", "t", {}, [("good", png, ""), ("bad", png, "")], [])
    page = (tmp_path / "r.html").read_text()
    cut = page.rindex("base64,") + len("base64,")
    (tmp_path / "r.html").write_text(page[:cut] + "AAAA" + page[cut + 40 :])  # corrupt the second picture
    dom = subprocess.run(
        [CHROMIUM, *HEADLESS, "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "r.html").resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images-loaded="1"' in body and 'data-images-broken="1"' in body
