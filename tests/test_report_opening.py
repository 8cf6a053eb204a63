"""A report opens with its answer: at most three verdict sentences and one figure, the tables folded after it
and written beside the report; the baselines sweep's answer is its forest plot (a real smoke sweep, serial)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from browser import colourful_pixels, render, require_chromium

from finalbn.analysis.headline import MAX_CHARS
from finalbn.analysis.report import OPENING_SENTENCES


@pytest.fixture
def baselines(smoke_results: Path) -> Path:
    """The baselines smoke sweep: every trained method x 2 seeds on embedded MNIST, in-process, no Ray; the
    session's (tests/fixtures_sweep.py), read only."""
    return smoke_results / "baselines-smoke"


class Outline(HTMLParser):
    """The page's top-level blocks in order (tag names), and which tables sit inside a <details>."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self.tables_folded: list[bool] = []
        self.headline: list[str] = []
        self._details = 0
        self._in_headline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "details":
            self._details += 1
        if tag == "table":
            self.tables_folded.append(self._details > 0)
        if tag in ("h2", "figure", "details", "p") and self._details == 0:
            self.blocks.append(tag if tag != "p" else f"p.{dict(attrs).get('class') or 'text'}")
        if tag == "p" and dict(attrs).get("class") == "headline":
            self._in_headline = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self._details -= 1
        if tag == "p":
            self._in_headline = False

    def handle_data(self, data: str) -> None:
        if self._in_headline and data.strip():
            self.headline.append(data.strip())


def test_the_report_opens_with_at_most_three_sentences_and_the_forest_plot(baselines: Path) -> None:
    page = Outline()
    page.feed((baselines / "report" / "report.html").read_text())
    # The answer first: the headline paragraph, then the figure, before any heading or table.
    assert page.blocks[:2] == ["p.headline", "figure"]
    assert 1 <= len(page.headline) <= OPENING_SENTENCES
    assert all(len(sentence) <= MAX_CHARS for sentence in page.headline)
    # Two seeds per method: the caveat leads and no comparison is called resolved.
    assert page.headline[0].startswith("Baselines: 2 seeds per comparison: too few")
    assert not any("unresolved" in sentence or "below it" in sentence for sentence in page.headline)
    markdown = (baselines / "report" / "report.md").read_text()
    first_figure = re.search(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert first_figure is not None and first_figure.group(1) == "figures/methods_forest.png"
    assert first_figure.start() < markdown.index("## ") and first_figure.start() < markdown.index("<details>")


def test_every_table_is_folded_and_also_written_as_csv_and_parquet(baselines: Path) -> None:
    html = (baselines / "report" / "report.html").read_text()
    page = Outline()
    page.feed(html)
    assert page.tables_folded and all(page.tables_folded)
    summaries = re.findall(r"<summary>(.*?) \((\d+) rows?\)</summary>", html)
    assert len(summaries) == len(page.tables_folded)
    tables = baselines / "report" / "tables"
    for index, (_, rows) in enumerate(summaries, start=1):
        [parquet] = tables.glob(f"{index:02d}-*.parquet")
        csv = parquet.with_suffix(".csv")
        assert pl.read_parquet(parquet).height == int(rows) == pl.read_csv(csv).height


def test_the_methods_table_pairs_each_method_with_final_bn_under_both_priors(baselines: Path) -> None:
    differences = pl.read_csv(baselines / "report" / "tables" / "method_differences.csv")
    assert set(differences["metric"]) == {"f1_minority", "f1_minority_natural"}
    assert set(differences["control"]) == {"final_bn"}
    treated = set(differences["treated"])
    # Every trained method and every post-hoc arm scored from the trained runs' saved outputs.
    assert {"plain", "focal", "oversampling", "val_threshold", "posthoc_logit_adjustment"} <= treated
    assert {"final_bn_removed", "final_bn+val_threshold", "final_bn+posthoc_logit_adjustment"} <= treated
    trials = pl.read_parquet(baselines / "trials.parquet")
    # A post-hoc arm's difference is computed from its source trials' prefixed metrics, paired by seed.
    plain = trials.filter(pl.col("axis.method") == "plain").sort("train.seed")
    final_bn = trials.filter(pl.col("axis.method") == "final_bn").sort("train.seed")
    expected = (plain["thr_f1_minority"] - final_bn["f1_minority"]).mean()
    row = differences.filter((pl.col("treated") == "val_threshold") & (pl.col("metric") == "f1_minority"))
    assert row["difference_mean"][0] == pytest.approx(expected)
    assert (row["pairs"] == 2).all()


def test_the_forest_plot_renders_in_headless_chromium(baselines: Path, tmp_path: Path) -> None:
    require_chromium()
    (loaded, total), screenshot = render(baselines / "report" / "report.html", tmp_path)
    assert total >= 1 and loaded == total
    assert colourful_pixels(screenshot) > 2000
