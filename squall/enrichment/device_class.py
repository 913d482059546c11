"""Device class and bot detection for the device bolt.

A parsed user agent (ua-parser's browser, OS and device) gets its class from, first match wins:
bot evidence, console, other-device (watch, headset, car, …) and TV tokens, the shape of a
crawler's string, laptop names, then tablet, mobile and desktop evidence; the rules are listed
in docs/enrichment.md. A "mobile" guess, or a string nothing named, is then checked against the
model names of Matomo's device database (:mod:`squall.enrichment.device_models`): a tablet or TV
model whose browser writes "Mobile" is told from a phone only that way. Bot evidence combines three sources:

- ua-parser's own "Spider" device family and the automated clients it names as browsers;
- the maintained crawler pattern list of ``crawler-user-agents`` (monperrus/crawler-user-agents,
  MIT, ~1,500 patterns);
- a short list of words only automated clients put in a user agent.

Lists leading to the same decision are matched in one pass by one ua-parser-rs regex set (Python's
``re`` when it is not installed); the crawler list's plain-text patterns are found by the
device-model index's Aho-Corasick pass instead (:meth:`ModelIndex.scan_all`), which costs less
memory than compiling them. Compiling the rules costs 20-60 ms; it happens in
:meth:`DeviceClassifier.load`, at the first classification (the device bolt shares one
classifier per process), never at import. Client hints, when an event carries them, are applied by
the bolt through :func:`class_from_hints`.

Size (~520 lines): the rules are data (pattern lists with the reason for each) read in one place
with the one function that applies them in order; splitting the lists from it would scatter
the rule order that docs/enrichment.md describes.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import string
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from squall.enrichment.device_models import ModelIndex

DESKTOP, MOBILE, TABLET, TV, CONSOLE, BOT, OTHER, UNKNOWN = (
    "desktop",
    "mobile",
    "tablet",
    "tv",
    "console",
    "bot",
    "other",
    "unknown",
)
CLASSES = (DESKTOP, MOBILE, TABLET, TV, CONSOLE, BOT, OTHER, UNKNOWN)

# Automated clients that ua-parser names as a browser family rather than as a "Spider" device.
AUTOMATED_FAMILIES = frozenset(
    {
        "curl",
        "Wget",
        "Python Requests",
        "Python-urllib",
        "Go-http-client",
        "HeadlessChrome",
        "PhantomJS",
        "Apache-HttpClient",
        "libwww-perl",
        "Scrapy",
        "Java",
        "aiohttp",
        "Python aiohttp",
        "axios",
        "node-fetch",
        "Node Fetch",
        "HTTPie",
        "PostmanRuntime",
        "Lighthouse",
        "Chrome-Lighthouse",
    }
)
# Patterns of the crawler list left out, each matching real clients: okhttp is the HTTP library
# real Android apps send as their user agent; "Sogou" also matches the Sogou mobile browser
# (Sogou's crawlers say "spider", caught by the bot words); "008/" matches a build token of the
# Baidu app; "Fluid" is also Fluid.app, a macOS site-specific browser ("… Fluid/0.9.6
# Safari/528.16"; the crawler it is listed for says "+http://", a bot word). Counting an app's or
# a browser's users as bots is the worse error for analytics.
EXCLUDED_PATTERNS = frozenset({"okhttp", "Sogou", "008\\/", "Fluid"})
# Words that only automated clients put in a user agent. "bot" must end a word or a name
# ("Googlebot", "Bytespider-bot/", "AdsBot-Google") so that "Abbott" or "Cubot" phones do not match.
_BOT_WORDS = (
    r"bot\b|bot[/_;:\-]|crawl|spider|slurp|scrape|scanner|headless|lighthouse|"
    r"monitor|uptime|healthcheck|health-?checker|validator|fetcher|checker|preview|"
    r"archiver|indexer|^curl/|^wget/|^python|^java/|^go-http|^okhttp.*bot|"
    r"http-?client|^node-fetch|^axios/|^aiohttp|benchmark|^apachebench|\bagent/\d|"
    r"\+https?://|compatible; ?[^;)]*https?://|"
    # Measurement, research and security tooling says what it does; a contact address, a bare
    # URL, an unfilled template or an injection probe is never a person's browser; Google names
    # its fetchers "Google-…" (Google-Read-Aloud, Google-Site-Verification).
    r"diagnostic|observatory|measurement|health ?check|synthetic|\bresearch\b|\bstudy\b|"
    r"survey|\brecon\b|\bscans?\b|analy[sz]er|link resolver|\bDCV\b|"
    r"mailto:|contact:|@[a-z0-9-]+\.[a-z]{2,}|^https?://|\{\{|\$\{jndi:|<\?|dummy connection|"
    r"^google-|compatible; ?google-"
)
# Television, set-top box and streaming-stick tokens (HbbTV, LG webOS, Sony Bravia, Fire TV
# "AFT…" models, Chromecast "CrKey", Philips/NetRange "NETTV", Hisense VIDAA, Vestel "OMI").
_TV = (
    r"\bTV\b|_TV_|SMART-?TV|Smart ?TV|GoogleTV|Google TV|AndroidTV|Android TV|AppleTV|Apple TV|"
    r"HbbTV|CE-HTML|NETTV|NetCast|Web0S|webOS\.TV|\btvOS\b|BRAVIA|\bAFT[A-Z]|CrKey|Roku|Viera|VIDAA|"
    r"\bOMI/|DTV|\bSTB\b|Set-?Top|Freebox|ViziOS|BrightSign|Opera TV|TV Bro|SmartHub|Tizen[^;)]*TV|"
    r"\bMiTV|MIBOX|\bBox\b|TVBox|TV-Box|\bDVB\b|Maple|SonyDTV|Espial|TiviMate|Kodi|"
    # Streaming sticks and set-top boxes: Chromecast, IPTV, "…BOX" model names, STB model codes.
    r"Chromecast|IPTV|Smart ?Box|(?-i:[A-Z]BOX\b)|STB\d|\bTV[-_]|\b(?:Media|TV) Stick\b|"
    # Android set-top boxes sold under a few generic names, and "Smart Stick" dongles.
    r"\b(?:MXQ|MXIII|X96|H96|T95|A95X|TX[3-9])\b|Smart ?Stick|\bShell\b|"
    # TV makers name Android TV models by screen size in inches: "43U600KD", "55UE-BYVB",
    # "GTV-50PU744N", "LED32…", "SL-LED55S01", "ELED-48SMART".
    r"; (?:[A-Za-z]+[-_ ]){0,2}(?:[2-9]\d(?:[A-Z]{1,4}\d{2,4}|[A-Z]{2,4}-)[A-Z0-9_-]*|"
    r"[A-Z-]*LED-?\d{2}[A-Z0-9-]*|[A-Z]*-?\d{2}SMART)(?: Build|\))"
)
_BARE_COMPATIBLE = re.compile(
    r"Mozilla/\d\.\d+ ?\(compatible; ?(?!U;)[A-Za-z][\w .-]*/\d(?!.*(?:AppleWebKit|Gecko|Presto))"
)
_CONSOLE = (
    r"PlayStation|\bPS[345]\b|\bXbox|Nintendo|\bOUYA\b|\bWii\b|\bPSP\b|Retroid|"
    r"; Switch(?: OLED| Lite)?\)|; SHIELD Build/|GAMEPAD"
)
# Devices that are neither phones, tablets, computers, TVs nor consoles: watches (watchOS, Galaxy
# Watch "SM-R…", Wear OS), VR headsets (Quest, Pico), speakers (Sonos), cars (Tesla, Android
# Automotive), appliances (Samsung Family Hub), projectors, cameras and developer boards.
_OTHER_DEVICE = (
    r"watchOS|Apple Watch|\bWatch\d|SmartWatch|Wear ?OS|; (?:SAMSUNG )?SM-R\d|Oculus|"
    r"\bQuest(?: \d\w?)?[;)]|\bPico (?:G\d|Neo)|Sonos/|Tesla/|\bAUTO Build|Automotive|"
    r"Family Hub|Projector|Raspberry Pi|ODROID|Tinker Board|COOLPIX|\bEK-G[CN]\d"
)
# Laptops and desktop computers that run Android (Chromebooks, Android-x86 on PCs): product
# lines of the big PC makers, and Darwin on x86_64 (a Mac app through CFNetwork).
_COMPUTER = (
    r"Chromebook|Chromebox|Pixelbook|Inspiron|Latitude|Vostro|EliteBook|ProBook|TravelMate|"
    r"\bAspire|LIFEBOOK|Satellite|ThinkPad|IdeaPad|MacBook|\bNUC\d|Notebook|Netbook|"
    r"\bAIO\b|All-in-One|Darwin/[\d.]+ \(x86_64\)|Power%20Macintosh"
)
TABLET_FAMILIES = frozenset({"iPad", "Kindle", "Generic Tablet", "Kindle Fire", "Surface"})
# The last token of a whole browser string (its engine or browser); see classify().
_WHOLE_BROWSER = re.compile(r"Safari/|Presto/|Firefox/|UCBrowser/")
_ANDROID_3 = re.compile(r"Android 3\.\d")
# Windows 8 or later (NT 6.2, 6.3, 10) with the "Touch" token of a touch screen.
_WINDOWS_TOUCH = re.compile(r"Windows NT (?:6\.[23]|1\d)\b.*[;( ]Touch\b")
# "Mobile" or Opera's "Mobi" as a word: an app's "MobileAppClient/…" token is not the phone mark.
_MOBILE_WORD = re.compile(r"\bMobile\b|\bMobi\b")
# Models of well-known tablets: Samsung Galaxy Tab (SM-T/SM-X/SM-P, GT-P), Nexus 7/9/10,
# Lenovo Tab, Huawei MediaPad/MatePad, Amazon Fire (KF…), Xiaomi/Redmi Pad.
_TABLET_MODEL = re.compile(
    r"^(?:SM-[TXP]\d|GT-P\d|Nexus (?:7|9|10)\b|Lenovo TB|TB-?[A-Z]?\d|MediaPad|MatePad|KF[A-Z]{2,})"
)
# Samsung's phone series (Galaxy A, C, E, F, G, J, M, N, S, Z; tablets are T, X, P and watches
# R): a Fold opened, or a browser asking for the desktop site, drops "Mobile" from the string.
_PHONE_MODEL = re.compile(r"^SM-[ACEFGJMNSZ]\d")
# Tablet words in the string itself: Firefox's "Android; Tablet", Yandex's "/apad", model names
# with Tab/Pad/MID (mobile internet device), Windows "Tablet PC" is deliberately not here: it is
# an optional Windows component present on many desktops.
_TABLET_WORDS = (
    r"Tablet(?:[^ ]| [^P]|$)|/apad\b|\biPad|[ ;_(-](?:[Tt]ab|TAB|[Pp]ad|PAD|MID)(?:[ _\-]?\d|[ _\-;)]|$)|"
    r"\bTB-?X\d|"
    r"\bKindle|\bSilk/|PlayBook|\bTouchPad"
)
#: Browser families ua-parser names apart from their mobile versions (Chrome / Chrome Mobile,
#: Firefox / Firefox Mobile, Safari / Mobile Safari, IE / IE Mobile, Edge / Edge Mobile, Opera /
#: Opera Mobile and Opera Mini): the desktop one, on a string that names no platform, is a desktop.
DESKTOP_BROWSERS = frozenset({"Chrome", "Firefox", "Safari", "IE", "Edge", "Opera"})
MOBILE_FAMILIES = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"})
MOBILE_OS = frozenset(
    {
        "iOS",
        "Android",
        "Windows Phone",
        "Windows Mobile",
        "Windows CE",
        "BlackBerry OS",
        "BlackBerry Tablet OS",
        "Symbian OS",
        "Symbian^3",
        "Symbian^3 Anna",
        "Symbian^3 Belle",
        "Nokia Series 40",
        "Nokia Series 30 Plus",
        "Brew MP",
        "BREW",
        "KaiOS",
        "Firefox OS",
        "Tizen",
        "Sailfish",
        "webOS",
        "HarmonyOS",
        "Bada",
        "MeeGo",
        "Maemo",
    }
)
DESKTOP_OS = frozenset(
    {
        "Windows",
        "Mac OS X",
        "macOS",
        "Linux",
        "Ubuntu",
        "Kubuntu",
        "Debian",
        "Fedora",
        "Red Hat",
        "SUSE",
        "openSUSE",
        "CentOS",
        "Linux Mint",
        "Mageia",
        "Arch Linux",
        "Gentoo",
        "Mandriva",
        "Slackware",
        "Chrome OS",
        "Chromium OS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Solaris",
    }
)
# A Mac or PC named by the string even when ua-parser finds no OS (apps such as Microsoft Office
# write "Macintosh", "Mac OS", "Windows NT" or "Desktop" in their own formats).
_DESKTOP_WORDS = (
    r"Macintosh|Mac ?OS ?X|MacBook|iMac|Mac(?:mini|Pro)\d|Windows NT|Win64|WOW64|X11|\bDesktop\b|"
    r"CrOS|"
    # Desktop systems ua-parser does not name: older Windows and Mac, Amiga, BeOS/Haiku, OS/2,
    # Unix workstations.
    r"Windows (?:95|98|ME|2000|XP)|(?i:\bwin(?:95|98|nt|7|8|10|11)\b)|Mac_P(?:owerPC|PC)|macOS|"
    r"AmigaOS|\bBeOS\b|\bHaiku\b|\bOS/2\b|OpenVMS|\bIRIX\b|SunOS|\bOSF1\b|MorphOS|RISC OS"
)
# Phones named by their software: WAP and UP.Browser (feature phones), Facebook's Android and
# iOS apps (FB4A, FBIOS), UC Browser's "dv(iPh…)" model field.
_MOBILE_WORDS = (
    r"Mobile|Mobi\b|Phone|MIDP|CLDC|Symbian|Series ?(?:40|60)|Opera Mini|"
    r"\bWAP\b|UP\.Browser|\bFB4A\b|\bFBIOS\b|\(iPh\d"
)
# Client hints: Sec-CH-UA-Form-Factors (Chrome 126+) names the form factor outright.
_FORM_FACTORS = {
    "desktop": DESKTOP,
    "mobile": MOBILE,
    "tablet": TABLET,
    "xr": OTHER,
    "eink": TABLET,
    "watch": OTHER,
    "automotive": OTHER,
}


#: What a model name may change: a "mobile" guess (from the platform, "Mobile" or an app's
#: string) becomes the tablet or TV the model is; a "tablet" guessed from a missing "Mobile" the
#: phone or TV; "other" (nothing named the device) a phone, tablet or TV.
_REFINES = {
    MOBILE: frozenset({TABLET, TV}),
    TABLET: frozenset({MOBILE, TV}),
    OTHER: frozenset({MOBILE, TABLET, TV}),
}


class DeviceClassifier:
    """Classifies a parsed user agent; rules and pattern lists compile in :meth:`load`."""

    def __init__(self, models: ModelIndex | None = None, engine: str = "auto") -> None:
        #: ``auto``: the pattern sets run in ua-parser-rs when installed, else in google-re2,
        #: else in Python's ``re``; ``re2``: in google-re2 (the device bolt's ``engine``).
        self.engine = engine
        self._loaded = False
        self._lock = threading.Lock()
        self.crawler_patterns = 0
        self.models = models if models is not None else ModelIndex()

    def load(self) -> None:
        """Compile the crawler list and the class rules (once; 20-60 ms with ua-parser-rs)."""
        with self._lock:
            if not self._loaded:
                self._load()

    def _load(self) -> None:
        patterns = [p for p in crawler_patterns() if p not in EXCLUDED_PATTERNS]
        self.crawler_patterns = len(patterns)
        # The crawler patterns that are plain text (1,464 of 1,500) are found by the model
        # index's pass, which classify() makes anyway: in the regex set they took ~5.5 MB and
        # ~20 ms to compile (docs/performance.md, 6 December, sixth session).
        literals = {p: text for p in patterns if (text := literal_text(p)) is not None}
        self.models.load(literals.values())
        held = self.models.literals  # all of them, unless the index was built before
        patterns = [p for p in patterns if literals.get(p) not in held]
        # Lists that lead to the same decision run as one set: one pass over the string each.
        matcher = functools.partial(_matcher, engine=self.engine)
        self._bot = matcher([(BOT, patterns, False), (BOT, [_BOT_WORDS], True)])
        # In rule order: the first that matches names the class (see classify()).
        self._device = matcher(
            [
                (CONSOLE, [_CONSOLE], True),
                (OTHER, [_OTHER_DEVICE], True),
                (TV, [_TV], True),
                (DESKTOP, [_COMPUTER], True),
            ]
        )
        self._tablet = matcher([(TABLET, [_TABLET_WORDS], False)])
        self._desktop = matcher([(DESKTOP, [_DESKTOP_WORDS], False)])
        self._mobile = matcher([(MOBILE, [_MOBILE_WORDS], False)])
        self._loaded = True

    def is_bot_string(self, ua: str) -> bool:
        """Whether the string matches a pattern of the crawler list or a bot word."""
        if not self._loaded:
            self.load()
        return self._bot(ua) is not None or self.models.scan_all(ua)[2] >= 0

    def classify(
        self,
        ua: str,
        browser: str,
        os: str,
        device: str,
        brand: str | None,
        model: str | None,
    ) -> str:
        """The device class of a parsed user agent (see docs/enrichment.md for the rules)."""
        if not self._loaded:
            self.load()
        if device == "Spider" or browser in AUTOMATED_FAMILIES:
            return BOT
        # Matomo's bot names, device models and the crawler list's plain-text patterns
        bot_at, known, crawler_at = self.models.scan_all(ua)
        # In the platform part of an Android or iOS string a bot word or crawler pattern is a
        # model or build name ("CUBOT", "VR BOT 552", a build id the list holds): bots that
        # imitate a phone are caught above as ua-parser's "Spider", or say "compatible".
        if os in ("Android", "iOS") and "compatible" not in ua:
            # Outside the platform part, where the model is, a bot word still counts: a
            # crawler that appends its name to a phone browser's string ("… Chrome-Lighthouse").
            platform_end = ua.find(")")
            rest = ua[platform_end + 1 :] if platform_end >= 0 else ""
            if rest and (
                self._bot(rest) is not None or bot_at > platform_end or crawler_at > platform_end
            ):
                return BOT
        elif bot_at >= 0 or crawler_at >= 0 or self._bot(ua) is not None:
            return BOT
        named = self._device(ua)  # console, other device, TV or computer, in this order
        if named is not None and named != DESKTOP:
            return named
        if (browser == "Other" and os == "Other" and _BARE_COMPATIBLE.match(ua)) or (
            "KHTML, like Gecko; " in ua
        ):
            # "Mozilla/5.0 (compatible; Name/1.0 …)" naming neither a browser, an engine nor a
            # platform ua-parser knows is the shape of a crawler's user agent; browsers never
            # add a token inside "(KHTML, like Gecko)", crawlers that imitate them do.
            return BOT
        if named == DESKTOP:
            return DESKTOP
        if (
            device in TABLET_FAMILIES
            or device.startswith("Kindle")
            or (model and _TABLET_MODEL.match(model))
            or self._tablet(ua) is not None
        ):
            return TABLET
        if device in MOBILE_FAMILIES and not (device.startswith("Generic") and "Android" in ua):
            return self._by_model(known, MOBILE) if device.startswith("Generic") else MOBILE
        if model and _PHONE_MODEL.match(model):
            return MOBILE
        if os == "Android" or "Android" in ua:
            # Google's convention: Android phones say "Mobile", Android tablets do not. Apps
            # (Dalvik, okhttp) never say it: without a tablet sign they are counted as mobile.
            # The missing word is evidence only in a whole browser string: one cut short before
            # its engine token ("… Chrome/77.0.3865.120" of an app's web view) says nothing.
            # (ua-parser's "Generic_Android_Tablet" brand is this same guess.)
            if (
                "Mobile Safari/" in ua  # most phones: skip the regexes below
                or ("Mobi" in ua and _MOBILE_WORD.search(ua) is not None)
                or not ua.startswith(("Mozilla/", "Opera/"))
                or _WHOLE_BROWSER.search(ua) is None
            ):
                if known is None and _ANDROID_3.search(ua) is not None:
                    # Android 3 (Honeycomb) ran on tablets only (Matomo's rule likewise).
                    return TABLET
                return self._by_model(known, MOBILE)
            return self._by_model(known, TABLET)
        if os in MOBILE_OS or self._mobile(ua) is not None:
            return self._by_model(known, MOBILE)
        if os == "Windows" and "Touch" in ua and _WINDOWS_TOUCH.search(ua) is not None:
            # Internet Explorer 10's "Touch" token: a touch screen on Windows 8 or later. Most
            # such machines are tablets (Matomo Device Detector's rule, after Microsoft's docs).
            return TABLET
        if (os in DESKTOP_OS and device in ("Other", "Mac")) or self._desktop(ua) is not None:
            return DESKTOP
        found = self._by_model(known, OTHER)
        if found == OTHER and browser in DESKTOP_BROWSERS:
            return DESKTOP
        return found

    @staticmethod
    def _by_model(model: str | None, found: str) -> str:
        """``found`` (a guess), unless the string names a model Matomo's device database knows
        as another class that guess may become (:data:`_REFINES`)."""
        return model if model in _REFINES[found] else found


Groups = list[tuple[str, list[str], bool]]


#: What a backslash may escape in a pattern that is still plain text ("Googlebot\\/"): ASCII
#: punctuation and the space, which an escape makes literal in Rust's and Python's syntax alike.
_ESCAPED_TEXT = frozenset(string.punctuation + " ")
_REGEX_SYNTAX = frozenset(".^$*+?{}[]|()\\")


def literal_text(pattern: str) -> str | None:
    """The text a regular expression matches when it is plain text (escaped punctuation
    allowed), or None when it uses any other syntax."""
    if not _REGEX_SYNTAX.intersection(pattern):
        return pattern
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in _ESCAPED_TEXT:
            out.append(pattern[i + 1])
            i += 2
        elif char in _REGEX_SYNTAX:
            return None
        else:
            out.append(char)
            i += 1
    return "".join(out)


def crawler_patterns() -> list[str]:
    """The patterns of the ``crawler-user-agents`` list, read from its JSON file.

    Not through ``import crawleruseragents``: its module keeps the whole list (each entry's URL,
    description, dates and example strings) for the process's life, ~1.4 MB of objects of which
    the classifier needs only the patterns (~1 MB of RSS, measured on the Lambda example:
    docs/performance.md, 6 December, sixth session). Only a release without that file is read
    through the module.
    """
    import orjson

    spec = importlib.util.find_spec("crawleruseragents")  # finds the package, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'crawleruseragents'", name="crawleruseragents")
    path = Path(next(iter(spec.submodule_search_locations))) / "crawler-user-agents.json"
    if path.is_file():
        data = orjson.loads(path.read_bytes())
    else:  # a release that keeps it elsewhere (the dependency is >=1.67): its public list
        import crawleruseragents

        data = crawleruseragents.CRAWLER_USER_AGENTS_DATA
    return [entry["pattern"] for entry in data]


def _matcher(groups: Groups, engine: str = "auto") -> Callable[[str], str | None]:
    """The label of the first group (in order) with a pattern that matches, or None.

    ``groups`` is ``[(label, patterns, ignore_case), ...]``. Runs as one ua-parser-rs regex set
    when it is installed (``engine`` ``auto``): Python's backtracking ``re`` tries every
    alternative at every position (~50-150 µs for these lists on a long user agent); the Rust
    regex set does it in ~1 µs, and returns the first pattern in list order that matches, as
    ua-parser's regex lists need. With ``engine`` ``re2``, or without ua-parser-rs, one
    google-re2 filter (:func:`re2_matcher`); without either, Python's ``re``.
    """
    if engine == "re2":
        return re2_matcher(groups)
    try:
        import ua_parser_rs
    except ImportError:  # pragma: no cover - ua-parser[regex] installs it
        try:
            return re2_matcher(groups)
        except ImportError:
            return re_matcher(groups)
    extractor = ua_parser_rs.DeviceExtractor(
        [
            (pattern, "i" if ignore_case else None, label, None, None)
            for label, patterns, ignore_case in groups
            for pattern in patterns
        ]
    )

    def match(ua: str) -> str | None:
        found = extractor.extract(ua)
        return None if found is None else found.family

    return match


def re2_matcher(groups: Groups) -> Callable[[str], str | None]:
    """The same test with google-re2: every pattern in one filter (RE2's ``FilteredRE2``: the
    literal parts of the patterns found in one pass, then only the patterns whose parts are there
    tried), the lowest index that matches is the first in list order. Holds less memory than the
    Rust set (docs/enrichment.md, "The regex engine"); raises ImportError without google-re2."""
    import re2

    labels: list[str] = []
    patterns = re2.Filter()
    for label, group, ignore_case in groups:
        for pattern in group:
            patterns.Add(f"(?i){pattern}" if ignore_case else pattern)
            labels.append(label)
    patterns.Compile()
    matches = patterns.Match

    def match(ua: str) -> str | None:
        found = matches(ua)
        return labels[min(found)] if found else None

    return match


def re_matcher(groups: Groups) -> Callable[[str], str | None]:
    """The same test with Python's ``re`` (the fallback; slower, same answers)."""
    compiled = [
        (label, re.compile("|".join(f"(?:{p})" for p in patterns), re.I if ignore_case else 0))
        for label, patterns, ignore_case in groups
    ]

    def match(ua: str) -> str | None:
        for label, pattern in compiled:
            if pattern.search(ua) is not None:
                return label
        return None

    return match


def class_from_hints(hints: Mapping[str, Any]) -> str | None:
    """The class named by client hints, or None when they name none.

    Takes the request headers (``Sec-CH-UA-Form-Factors``, ``Sec-CH-UA-Mobile``,
    ``Sec-CH-UA-Platform``; names matched case-insensitively) or the fields of
    ``navigator.userAgentData.getHighEntropyValues()`` (``formFactors``, ``mobile``, ``platform``).
    Form factors decide outright. Otherwise ``mobile`` true is a phone; false is a desktop on a
    desktop platform and a tablet on Android (Chrome's convention: an Android tablet sends ?0).
    """
    lower = {str(k).lower(): v for k, v in hints.items()}
    factors = lower.get("sec-ch-ua-form-factors", lower.get("formfactors"))
    if isinstance(factors, str):
        factors = factors.replace('"', "").split(",")
    if isinstance(factors, list):
        for token in factors:
            found = _FORM_FACTORS.get(str(token).strip().lower())
            if found is not None:
                return found
    mobile = lower.get("sec-ch-ua-mobile", lower.get("mobile"))
    if isinstance(mobile, str):
        mobile = {"?1": True, "?0": False}.get(mobile.strip())
    if not isinstance(mobile, bool):
        return None
    if mobile:
        return MOBILE
    platform = lower.get("sec-ch-ua-platform", lower.get("platform"))
    platform = platform.strip().strip('"').lower() if isinstance(platform, str) else ""
    if platform in _DESKTOP_PLATFORMS:
        return DESKTOP
    if platform == "android":
        return TABLET
    return None


_DESKTOP_PLATFORMS = frozenset({"windows", "macos", "linux", "chrome os", "chromium os"})
#: Classes client hints may replace: a bot, TV, console or other device named by the string keeps
#: its class (an Android TV sends "mobile: ?0" like a tablet).
HINTED_CLASSES = frozenset({DESKTOP, MOBILE, TABLET, UNKNOWN})
