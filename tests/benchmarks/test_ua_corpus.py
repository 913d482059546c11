"""benchmarks/ua_corpus.py: the labelled corpora are read as their maintainers wrote them."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))

from benchmarks import ua_corpus  # noqa: E402

BROWSCAP_ISSUE = """<?php

declare(strict_types=1);

return [
    'issue-1-A' => [
        'ua' => 'Mozilla/5.0 (Linux; Android 8.1.0; SM-T380) AppleWebKit/537.36 Chrome/73.0 Safari/537.36',
        'properties' => [
            'Browser_Type' => 'Browser',
            'Device_Type' => 'Tablet',
        ],
        'lite' => false,
        'standard' => true,
        'full' => true,
    ],
    'issue-1-A (lite)' => [
        'ua' => 'Mozilla/5.0 (Linux; Android 8.1.0; SM-T380) AppleWebKit/537.36 Chrome/73.0 Safari/537.36',
        'properties' => [
            'Device_Type' => 'Mobile Phone',
        ],
        'lite' => true,
        'standard' => false,
        'full' => false,
    ],
    'issue-1-B' => [
        'ua' => 'O\\'Reilly\\\\Fetcher/1.0 (+http://example.com/bot)',
        'properties' => [
            'Browser_Type' => 'Bot/Crawler',
            'Device_Type' => 'Desktop',
        ],
        'full' => true,
    ],
    'issue-1-C' => [
        'ua' => 'SomeThing/2.0',
        'properties' => [
            'Browser_Type' => 'unknown',
            'Device_Type' => 'unknown',
        ],
        'full' => true,
    ],
];
"""

WHICHBROWSER_YAML = """-
    headers: 'User-Agent: Mozilla/5.0 (SMART-TV; Linux; Tizen 2.3) AppleWebKit/538.1 SamsungBrowser/1.0 TV Safari/538.1'
    result: { device: { type: television, manufacturer: Samsung } }
-
    headers:
        User-Agent: 'Mozilla/5.0 (Linux; Android 12) Chrome/120.0 Mobile Safari/537.36'
        Sec-CH-UA-Mobile: '?1'
    result: { device: { type: mobile, subtype: smart } }
-
    headers: 'User-Agent: Wget/1.21'
    result: { browser: { name: Wget } }
"""


def _repo(tmp_path: Path, files: dict[str, str]) -> str:
    work = tmp_path / "src"
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text, encoding="utf-8")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixtures")
    return str(work / ".git")


def test_browscap_rows_take_the_full_entry_and_unescape_php_strings(tmp_path):
    git = ua_corpus._git(_repo(tmp_path, {"tests/issues/issue-1.php": BROWSCAP_ISSUE}))
    rows = ua_corpus.build_browscap(git, "HEAD")
    assert [(label, ua) for label, ua, *_ in rows] == [
        (
            "tablet",
            "Mozilla/5.0 (Linux; Android 8.1.0; SM-T380) AppleWebKit/537.36 Chrome/73.0 Safari/537.36",
        ),
        ("bot", "O'Reilly\\Fetcher/1.0 (+http://example.com/bot)"),
        (ua_corpus.NOT_LABELLED, "SomeThing/2.0"),
    ]
    assert rows[0][3] == "issue-1.php:issue-1-A"
    assert [row[4] for row in rows] == ["Browser", "Bot/Crawler", "unknown"]


def test_the_labellers_client_type_is_stored_and_read_back(tmp_path):
    out = tmp_path / "browscap.tsv.gz"
    ua_corpus.build(
        "browscap", _repo(tmp_path, {"tests/issues/issue-1.php": BROWSCAP_ISSUE}), "HEAD", out
    )
    assert ua_corpus.client_types(out) == {
        "Mozilla/5.0 (Linux; Android 8.1.0; SM-T380) AppleWebKit/537.36 Chrome/73.0 Safari/537.36": "Browser",
        "O'Reilly\\Fetcher/1.0 (+http://example.com/bot)": "Bot/Crawler",
        "SomeThing/2.0": "unknown",
    }
    assert [label for label, *_ in ua_corpus.load(out)] == ["tablet", "bot", "?"]


def test_the_stored_browscap_and_matomo_corpora_carry_their_client_types():
    browscap = ua_corpus.client_types(ua_corpus.CORPORA["browscap"])
    matomo = ua_corpus.client_types(ua_corpus.CORPORA["matomo"])
    assert {"Browser", "Bot", "Offline Browser"} <= set(browscap.values())
    assert {"browser", "library", "bot"} <= set(matomo.values())
    assert ua_corpus.client_types(ua_corpus.CORPORA["isbot"]) == {}


def test_false_bot_positives_are_counted_by_the_labellers_client_type():
    rows = [
        ("desktop", "Wget/1.21.4", {}),
        ("bot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", {}),
        ("mobile", "python-requests/2.31.0", {}),
        (
            "desktop",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
            {},
        ),
    ]
    types = {"Wget/1.21.4": "Offline Browser", "python-requests/2.31.0": "Application"}
    result = ua_corpus.score(rows, types=types)
    assert result["false_by_type"] == {"Offline Browser": 1, "Application": 1}
    assert result["bot_precision"] == pytest.approx(1 / 3)
    assert result["bot_precision_without_automated"] == pytest.approx(1 / 2)
    assert ua_corpus.score(rows)["false_by_type"] == {}


def test_whichbrowser_rows_keep_other_headers_and_leave_untyped_rows_unlabelled(tmp_path):
    git = ua_corpus._git(_repo(tmp_path, {"tests/data/mixed/a.yaml": WHICHBROWSER_YAML}))
    rows = ua_corpus.build_whichbrowser(git, "HEAD")
    assert [(label, headers) for label, _, headers, _ in rows] == [
        ("tv", {}),
        ("mobile", {"Sec-CH-UA-Mobile": "?1"}),
        ("", {}),
    ]


@pytest.mark.parametrize(
    ("source", "half"),
    [
        ("smartphone.yml:7", "dev"),
        ("smartphone-1.yml:7", "held-out"),
        ("smartphone-12.yml:900", "dev"),
        ("tv-5.yml:0", "held-out"),
        ("bots.yml:24", "dev"),
        ("bots.yml:25", "held-out"),
        ("desktop-1.yml:60", "dev"),
    ],
)
def test_matomo_halves_split_by_file_or_by_block(source, half):
    assert ua_corpus.matomo_half(source) == half


def test_halves_of_the_stored_matomo_corpus_partition_it():
    path = ua_corpus.CORPORA["matomo"]
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        total = sum(1 for line in fh if not line.startswith("#"))
    dev, held_out = ua_corpus.load(path, "dev"), ua_corpus.load(path, "held-out")
    assert len(dev) + len(held_out) == total
    assert 0.4 < len(held_out) / total < 0.6


MOBILEDETECT_PHP = """<?php

return [
    'Acme' => [
        'Mozilla/5.0 (Linux; Android 4.2.2; Acme Tab 7 Build/JDQ39) Safari/534.30'   => ['isMobile' => true, 'isTablet' => true],
        "Mozilla/5.0 (Linux; Android 4.1.1; eZee'Phone Build/JRO03C) Mobile Safari" => ['isMobile' => true, 'isTablet' => false, 'version' => ['Android' => '4.1.1']],
        //'Mozilla/5.0 (Commented out) Mobile'                                        => ['isMobile' => true, 'isTablet' => false],
        'Mozilla/5.0 (Nintendo WiiU) NintendoBrowser/3.1.1.9577.EU'                  => ['isMobile' => false, 'isTablet' => false],
        'Mozilla/5.0 (Linux; Android 4.2.2; Acme Tab 7 Build/JDQ39) Safari/534.30'   => ['isMobile' => true, 'isTablet' => false],
    ],
];
"""


def test_mobiledetect_rows_map_is_tablet_and_is_mobile_and_skip_comments(tmp_path):
    git = ua_corpus._git(_repo(tmp_path, {"tests/providers/vendors/Acme.php": MOBILEDETECT_PHP}))
    rows = ua_corpus.build_mobiledetect(git, "HEAD")
    assert [(label, ua[:40]) for label, ua, _, _ in rows] == [
        ("tablet", "Mozilla/5.0 (Linux; Android 4.2.2; Acme "),
        ("mobile", "Mozilla/5.0 (Linux; Android 4.1.1; eZee'"),
        ("", "Mozilla/5.0 (Nintendo WiiU) NintendoBrow"),
    ]
    assert rows[0][3] == "Acme.php:5"


def test_uaparserjs_rows_count_its_bot_types_as_bots_and_a_bot_label_wins(tmp_path):
    googlebot = (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Mobile Safari (compatible; Googlebot/2.1)"
    )
    files = {
        "test/data/ua/device/google.json": (
            f'[{{"ua": "{googlebot}", "expect": {{"type": "mobile"}}}},'
            ' {"ua": "Mozilla/5.0 (SMART-TV; Tizen 2.3)", "expect": {"type": "smarttv"}}]'
        ),
        "test/data/ua/extension/crawler.json": (
            f'[{{"ua": "{googlebot}", "expect": {{"name": "Googlebot", "type": "crawler"}}}}]'
        ),
        "test/data/ua/extension/library.json": '[{"ua": "curl/8.0", "expect": {"type": "cli"}}]',
        "test/data/ua/browser/browser-all.json": '[{"ua": "Opera/9.80", "expect": {"name": "Opera"}}]',
        "test/data/ua/os/os-all.json": '[{"ua": "Left/1.0 (out)", "expect": {"name": "Linux"}}]',
    }
    rows = ua_corpus.build_uaparserjs(ua_corpus._git(_repo(tmp_path, files)), "HEAD")
    assert sorted((label, ua) for label, ua, _, _ in rows) == [
        ("", "Opera/9.80"),
        ("bot", googlebot),
        ("bot", "curl/8.0"),
        ("tv", "Mozilla/5.0 (SMART-TV; Tizen 2.3)"),
    ]


def test_crawlerdetect_and_isbot_rows(tmp_path):
    files = {
        "tests/data/user_agent/crawlers.txt": "Googlebot/2.1\nSomeCrawler/1.0\n\n",
        "tests/data/user_agent/devices.txt": "'Mozilla/5.0 (Windows NT 10.0)'\nSomeCrawler/1.0\n",
        "fixtures/crawlers.yml": "Google:\n  - Googlebot/2.1\n",
        "fixtures/browsers.yml": (
            "Chrome:\n  - Mozilla/5.0 Chrome/120\n"
            "ZZZ Insignificat bots - These bots have very low appearance rate:\n  - Slurp\n"
        ),
    }
    git = ua_corpus._git(_repo(tmp_path, files))
    assert [(r[0], r[1], r[3]) for r in ua_corpus.build_crawlerdetect(git, "HEAD")] == [
        ("bot", "Googlebot/2.1", "crawlers.txt:1"),
        ("bot", "SomeCrawler/1.0", "crawlers.txt:2"),
        ("", "'Mozilla/5.0 (Windows NT 10.0)'", "devices.txt:1"),
    ]
    assert [(r[0], r[1]) for r in ua_corpus.build_isbot(git, "HEAD")] == [
        ("bot", "Googlebot/2.1"),
        ("", "Mozilla/5.0 Chrome/120"),
        (ua_corpus.NOT_LABELLED, "Slurp"),
    ]
