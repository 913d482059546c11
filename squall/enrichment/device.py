"""The device bolt: browser, operating system, device and device class from a user-agent string.

Parsing uses ``ua-parser`` 1.x with the regexes of ``ua-parser-builtins``, through the fastest
resolver installed (``ua-parser-rs``, then ``google-re2``, then pure Python). Real traffic
repeats a few user agents very often, so each distinct string of a batch is parsed at most once,
and parsed strings are kept in a bounded LRU cache.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

import ua_parser
from pydantic import Field, field_validator
from ua_parser import Domain

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig, ComponentContext
from squall.enrichment.cache import LRUCache
from squall.event import Event
from squall.paths import MISSING, getter, setter, validate_path

if TYPE_CHECKING:
    from squall.topology.resources import Resources

log = logging.getLogger("squall.enrichment.device")

DESKTOP, MOBILE, TABLET, BOT, OTHER, UNKNOWN = (
    "desktop",
    "mobile",
    "tablet",
    "bot",
    "other",
    "unknown",
)

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
        "axios",
        "node-fetch",
        "HTTPie",
        "PostmanRuntime",
        "Lighthouse",
        "Chrome-Lighthouse",
    }
)
# Last resort for unidentified devices only (a phone brand like "Cubot" is identified first).
_BOT_PATTERN = re.compile(
    r"bot\b|crawl|spider|slurp|scrape|headless|monitor|preview|^curl/|^wget/|python-|^java/|http-?client",
    re.IGNORECASE,
)
TABLET_FAMILIES = frozenset({"iPad", "Kindle", "Generic Tablet", "Kindle Fire", "Surface"})
TABLET_BRANDS = frozenset({"Generic_Android_Tablet"})
# Models of well-known tablets: Samsung Galaxy Tab (SM-T/SM-X/SM-P, GT-P), Nexus 7/9/10,
# Lenovo Tab, Huawei MediaPad, Amazon Fire (KF…).
_TABLET_MODEL = re.compile(
    r"^(?:SM-[TXP]\d|GT-P\d|Nexus (?:7|9|10)\b|Lenovo TB|TB-\d|MediaPad|KF[A-Z]{2,})"
)
MOBILE_FAMILIES = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"})
MOBILE_OS = frozenset(
    {
        "iOS",
        "Android",
        "Windows Phone",
        "Windows Mobile",
        "BlackBerry OS",
        "Symbian OS",
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
        "Debian",
        "Fedora",
        "Red Hat",
        "SUSE",
        "openSUSE",
        "CentOS",
        "Linux Mint",
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
# Devices on a desktop OS that are still desktops ("Mac" is how ua-parser names a Macintosh).
DESKTOP_DEVICE_FAMILIES = frozenset({"Other", "Mac"})
# Televisions, set-top boxes and consoles: never tablets even when the UA says Android without "Mobile".
_TV_OR_CONSOLE = re.compile(
    r"\bTV\b|SMART-TV|SmartTV|GoogleTV|AppleTV|Android TV|BRAVIA|\bAFT[A-Z]|CrKey|Roku|HbbTV|"
    r"Web0S|NetCast|PlayStation|Xbox|Nintendo|Quest",
)

FIELDS = (
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "device_brand",
    "device_model",
    "device_class",
    "is_bot",
)


def _version(part: Any) -> str | None:
    if part is None or part.major is None:
        return None
    return ".".join(
        v for v in (part.major, part.minor, part.patch, part.patch_minor) if v is not None
    )


def classify(
    ua: str, browser: str, os: str, device: str, brand: str | None, model: str | None
) -> str:
    """The device class of a parsed user agent: bot, tablet, mobile, desktop or other.

    Rules, first match wins:
    1. bot — device family "Spider", a known automated client (curl, python-requests, headless
       Chrome, …), or, for an unidentified device, a bot-like word in the string;
    2. other — televisions, set-top boxes and consoles;
    3. tablet — iPad, Kindle, a generic tablet, a known tablet model (Galaxy Tab, Nexus 7, Fire,
       …), "Tablet" in the string, or Android whose string lacks "Mobile" (Google's convention);
    4. mobile — iPhone/iPod, a generic smartphone, a mobile OS, or "Mobile"/"Mobi" in the string;
    5. desktop — a desktop OS (Windows, macOS, Linux distributions, Chrome OS, BSD) on no
       identified device (or a Mac);
    6. other — anything else.
    """
    if device == "Spider" or browser in AUTOMATED_FAMILIES:
        return BOT
    if device == "Other" and os == "Other" and _BOT_PATTERN.search(ua):
        return BOT
    if _TV_OR_CONSOLE.search(ua):
        return OTHER
    if (
        device in TABLET_FAMILIES
        or brand in TABLET_BRANDS
        or (model and _TABLET_MODEL.match(model))
    ):
        return TABLET
    if device.startswith("Kindle") or "Tablet" in ua:
        return TABLET
    if device in MOBILE_FAMILIES:
        return MOBILE
    if os == "Android":
        # Android apps (Dalvik) do not say "Mobile" on phones either: count them as mobile.
        if "Mobile" in ua or "Mobi" in ua or browser == "Android" or ua.startswith("Dalvik/"):
            return MOBILE
        return TABLET
    if os in MOBILE_OS or "Mobile" in ua or "Mobi" in ua:
        return MOBILE
    if os in DESKTOP_OS and device in DESKTOP_DEVICE_FAMILIES:
        return DESKTOP
    return OTHER


def build_resolver():
    """The fastest ua-parser resolver installed, without ua-parser's own cache (ours is in front)."""
    if ua_parser.RegexResolver is not None or ua_parser.Re2Resolver is not None:
        matchers = ua_parser.load_lazy_builtins()
    else:
        matchers = ua_parser.load_builtins()
    return ua_parser.BestAvailableResolver(matchers)


class DeviceBolt(Bolt):
    """Adds a device block (browser, OS, device, class, bot flag) parsed from a user-agent string."""

    summary: ClassVar[str] = (
        "Parses user agents (ua-parser) into browser, OS, device, device class and bot flag."
    )

    class Config(ComponentConfig):
        ua_field: str = Field("user_agent", description="Dotted path of the user-agent string.")
        target: str = Field("device", description="Dotted path where the device block is written.")
        max_length: int = Field(
            512,
            ge=16,
            description="User agents longer than this many characters are truncated before parsing.",
        )
        cache_size: int = Field(
            50_000, ge=1, description="Parsed user agents kept in memory (LRU)."
        )

        @field_validator("ua_field", "target")
        @classmethod
        def _paths(cls, value: str) -> str:
            return validate_path(value)

    def __init__(self, config: Config, context: ComponentContext):
        super().__init__(config, context)
        self._get_ua = getter(config.ua_field)
        self._set_target = setter(config.target)
        self._cache: LRUCache[str, dict[str, Any]] = LRUCache(config.cache_size)
        self._resolver = None
        self.parsed = 0  # user agents actually parsed, for tests and benchmarks
        self.unknown: dict[str, Any] = {
            "browser": UNKNOWN,
            "browser_version": None,
            "os": UNKNOWN,
            "os_version": None,
            "device": UNKNOWN,
            "device_brand": None,
            "device_model": None,
            "device_class": UNKNOWN,
            "is_bot": False,
        }

    def setup(self, resources: Resources | None) -> None:
        self._resolver = build_resolver()
        log.info("%s: user agents parsed with %s", self.id, type(self._resolver).__module__)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        get_ua, limit = self._get_ua, self.config.max_length
        keys: list[str | None] = []
        for event in batch:
            ua = get_ua(event) if isinstance(event.value, dict) else MISSING
            if isinstance(ua, str):
                ua = ua.strip()
                keys.append(ua[:limit] if ua else None)
            else:  # missing, null or not a string: nothing to parse
                keys.append(None)
        blocks = self.parse_many({k: None for k in keys if k is not None})
        set_target, unknown = self._set_target, self.unknown
        for event, key in zip(batch, keys, strict=True):
            if not isinstance(event.value, dict):
                out.fail(event, "payload is not a JSON object")
                continue
            set_target(event, dict(blocks[key]) if key is not None else dict(unknown))
            out.emit(event)
        return out

    def parse_many(self, uas: dict[str, None] | list[str]) -> dict[str, dict[str, Any]]:
        """The device block of each user-agent string, from the cache or parsed once."""
        found, missing = self._cache.get_many(uas)
        if missing:
            fresh = {ua: self.parse(ua) for ua in missing}
            self._cache.put_many(fresh)
            found.update(fresh)
        return found

    def parse(self, ua: str) -> dict[str, Any]:
        """Parse one (already truncated) user-agent string into a device block."""
        if self._resolver is None:
            self._resolver = build_resolver()
        result = self._resolver(ua, Domain.ALL)
        self.parsed += 1
        agent, os_, dev = result.user_agent, result.os, result.device
        browser = agent.family if agent else "Other"
        os_family = os_.family if os_ else "Other"
        device = dev.family if dev else "Other"
        brand = dev.brand if dev else None
        model = dev.model if dev else None
        device_class = classify(ua, browser, os_family, device, brand, model)
        return {
            "browser": browser,
            "browser_version": _version(agent),
            "os": os_family,
            "os_version": _version(os_),
            "device": device,
            "device_brand": brand,
            "device_model": model,
            "device_class": device_class,
            "is_bot": device_class == BOT,
        }
