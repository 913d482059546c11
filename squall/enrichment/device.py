"""The device bolt: browser, operating system, device and device class from a user-agent string.

Parsing uses ``ua-parser`` 1.x with the regexes of ``ua-parser-builtins``, through the fastest
resolver installed (``ua-parser-rs``, then ``google-re2``, then pure Python); the device class and
bot flag come from :mod:`squall.enrichment.device_class` (ua-parser's device, the
``crawler-user-agents`` list, TV/console/tablet conventions) and, when the event carries them,
client hints. Real traffic repeats a few user agents very often, so each distinct string of a
batch is parsed at most once, and parsed strings are kept in a bounded LRU cache.

Compiled rules are the process's, not the bolt's: the resolver (~110-175 ms of ua-parser-rs
compiling ua-parser's regexes) and the class rules (~35-60 ms, and ~50 ms to load the device-model
index of :mod:`squall.enrichment.device_models`) are built by the first user agent
any device bolt of the process parses, and every later bolt uses them (:func:`shared_resolver`,
:func:`shared_classifier`). ``open()`` only checks that the libraries are installed (without
importing them: the first user agent does).

Size (~430 lines): one bolt — its options, the process's shared resolvers and classifiers by
regex engine, the batch's parse-once-per-distinct-string loop and the renewal of a worn resolver.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from squall.bolts.base import Bolt, Output
from squall.cache import LRUCache
from squall.component import ComponentConfig, ComponentContext
from squall.enrichment.device_class import (
    BOT,
    CLASSES,
    HINTED_CLASSES,
    UNKNOWN,
    DeviceClassifier,
    class_from_hints,
)
from squall.errors import Problem, TopologyError
from squall.event import Event, not_an_object
from squall.paths import MISSING, DottedPath, getter, payload_keys, setter

if TYPE_CHECKING:
    from squall.topology.resources import Resources

log = logging.getLogger("squall.enrichment.device")

__all__ = [
    "CLASSES",
    "FIELDS",
    "DeviceBolt",
    "build_resolver",
    "classify",
    "shared_classifier",
    "renew_shared_resolver",
    "shared_resolver",
]

#: What the bolt needs, checked by open() without importing it.
_LIBRARIES = (
    ("ua_parser", "ua-parser is"),
    ("ua_parser_builtins", "ua-parser's rules are"),
    ("crawleruseragents", "the crawler list (crawler-user-agents) is"),
    ("ahocorasick", "pyahocorasick (device models) is"),
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


def _single_key(path: str) -> str | None:
    """The payload key of a one-level path (read or set inline by ``process``), else None."""
    keys = payload_keys(path)
    return keys[0] if keys is not None and len(keys) == 1 else None


def _version(part: Any) -> str | None:
    if part is None or part.major is None:
        return None
    return ".".join(
        v for v in (part.major, part.minor, part.patch, part.patch_minor) if v is not None
    )


_default_classifier = DeviceClassifier()
_shared_lock = threading.Lock()
#: The process's resolvers and classifiers, by engine (``auto``'s classifier is
#: ``_default_classifier``): built once, shared by every device bolt of that engine.
_shared_resolvers: dict[str, Any] = {}
_classifiers: dict[str, DeviceClassifier] = {}

#: The device bolt's ``engine`` values.
ENGINES = ("auto", "re2")


def shared_classifier(engine: str = "auto") -> DeviceClassifier:
    """The process's classifier of ``engine``; its rules compile on the first classification
    (once). Both engines' classifiers share one device-model index."""
    if engine == "auto":
        return _default_classifier
    with _shared_lock:
        if engine not in _classifiers:
            _classifiers[engine] = DeviceClassifier(_default_classifier.models, engine=engine)
        return _classifiers[engine]


def shared_resolver(engine: str = "auto") -> Any:
    """The process's ua-parser resolver of ``engine``, built by the first call (once, under a
    lock)."""
    resolver = _shared_resolvers.get(engine)
    if resolver is None:
        with _shared_lock:
            resolver = _shared_resolvers.get(engine)
            if resolver is None:
                resolver = _shared_resolvers[engine] = build_resolver(engine)
    return resolver


def renew_shared_resolver(worn: int, engine: str = "auto") -> tuple[Any, bool]:
    """A new process resolver of ``engine`` in place of the one whose ``id()`` is ``worn``,
    unless another bolt has renewed it already.

    The regex engines' matching caches of a resolver grow with the distinct strings it has
    parsed (ua-parser-rs: ~26 MB built, ~+38 MB after 50,000 distinct user agents) and never
    shrink; a new resolver starts small again. The caller holds no reference to the worn one
    (hence its ``id``), so when no other bolt does, its memory goes before the new one is built;
    other bolts let theirs go at their next batch. Returns the resolver and whether it was built
    by this call."""
    with _shared_lock:
        if id(_shared_resolvers.get(engine)) == worn:
            del _shared_resolvers[engine]
        built = engine not in _shared_resolvers
        if built:
            _shared_resolvers[engine] = build_resolver(engine)
        return _shared_resolvers[engine], built


def classify(
    ua: str, browser: str, os: str, device: str, brand: str | None, model: str | None
) -> str:
    """The device class of a parsed user agent (rules in squall/enrichment/device_class.py)."""
    return _default_classifier.classify(ua, browser, os, device, brand, model)


def build_resolver(engine: str = "auto"):
    """A ua-parser resolver without ua-parser's own cache (ours is in front): the fastest
    installed (``auto``), or google-re2's (``re2``)."""
    import ua_parser

    if engine == "re2":
        import re2  # noqa: F401  (ua-parser leaves Re2Resolver None without it: say so)

        return ua_parser.Re2Resolver(ua_parser.load_lazy_builtins())
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

    @classmethod
    def packages(cls, config: Any) -> frozenset[str]:
        """ua-parser (its regexes, its Rust matcher or with ``engine: re2`` google-re2), the
        crawler list, the device models' matcher."""
        engine = "re2" if getattr(config, "engine", "auto") == "re2" else "ua_parser_rs"
        return frozenset(
            {"ua_parser", "ua_parser_builtins", engine, "crawleruseragents", "ahocorasick"}
        )

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """The device block at ``target``; nothing else is changed."""
        return (config.target,)

    class Config(ComponentConfig):
        ua_field: DottedPath = Field(
            "user_agent", description="Dotted path of the user-agent string."
        )
        target: DottedPath = Field(
            "device", description="Dotted path where the device block is written."
        )
        max_length: int = Field(
            512,
            ge=16,
            description="User agents longer than this many characters are truncated before parsing.",
        )
        cache_size: int = Field(
            50_000, ge=1, description="Parsed user agents kept in memory (LRU)."
        )
        renew_parser_after: int = Field(
            50_000,
            ge=0,
            description=(
                "User agents this bolt parses (its cache's misses) before the process's ua-parser "
                "resolver is built anew: its regex engines' caches grow with the strings parsed "
                "(~+38 MB after 50,000 distinct ones) and a new resolver starts small (~26 MB; "
                "building it takes ~130 ms). 0: never."
            ),
        )
        engine: Literal["auto", "re2"] = Field(
            "auto",
            description=(
                "The regex engine of ua-parser's rules and the class rules. `auto`: ua-parser-rs "
                "(installed with squall; fastest), else google-re2, else Python's re. `re2`: "
                "google-re2 (`pip install 'squall[re2]'`, `squall package --extras re2`): ~20 MB "
                "less memory (the example's Lambda function: 124.7 instead of 144.3 MB after two "
                "10,000-record invocations), new user agents parsed ~2.2× slower; for 128 MB "
                'functions (docs/enrichment.md, "The regex engine").'
            ),
        )
        hints_field: DottedPath | None = Field(
            None,
            description=(
                "Dotted path of an object of client hints: Sec-CH-UA-Form-Factors, "
                "Sec-CH-UA-Mobile and Sec-CH-UA-Platform headers, or navigator.userAgentData "
                "fields; when the event has them they decide between desktop, mobile and tablet."
            ),
        )

    def __init__(self, config: Config, context: ComponentContext):
        super().__init__(config, context)
        self._get_ua = getter(config.ua_field)
        self._set_target = setter(config.target)
        # One-level paths (the usual "user_agent", "device") are read and set inline in
        # ``process``, without a call per event (``squall.paths``' rules: None otherwise).
        self._ua_key = _single_key(config.ua_field)
        self._target_key = _single_key(config.target)
        self._cache: LRUCache[str, dict[str, Any]] = LRUCache(config.cache_size)
        self._get_hints = getter(config.hints_field) if config.hints_field else None
        self._resolver = None
        self._extractors: tuple[Any, Any, Any] | None = None
        self._parsed_since_renewal = 0  # by this bolt, with the resolver it holds
        self._classifier = shared_classifier(config.engine)
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

    def open(self, resources: Resources | None) -> None:
        # The libraries must be there now, not at the first batch; importing and compiling them
        # waits for the first user agent (once per process, see shared_resolver()), so open()
        # only looks them up (~0.1 ms instead of ~10 ms of imports in a Lambda init).
        from importlib.util import find_spec

        for module, what in _LIBRARIES:
            if find_spec(module) is None:
                raise TopologyError(self._problem(f"{what} not installed: no module '{module}'"))
        if self.config.engine == "re2" and find_spec("re2") is None:
            raise TopologyError(
                self._problem(
                    "engine: re2 needs google-re2, which is not installed: no module 're2' "
                    "(pip install 'squall[re2]'; for Lambda, squall package --extras re2)"
                )
            )

    def _problem(self, message: str) -> Problem:
        return self.context.problem(self.id, "", message)

    def warm_up(self) -> None:
        """Build the process's user-agent parser and rules now, not at the first user agent."""
        if self._resolver is None:
            self._compile()

    def _compile(self) -> None:
        """Use the process's resolver and rules, building them if this is the first use. A
        failure is the component's (``TopologyError``: the batch fails), never a record's."""
        started = time.perf_counter()
        first = self.config.engine not in _shared_resolvers
        try:
            self._use(shared_resolver(self.config.engine))
            self._classifier.load()
        except Exception as exc:
            raise TopologyError(
                self._problem(f"cannot build the user-agent rules: {type(exc).__name__}: {exc}")
            ) from exc
        if first:
            log.info(
                "%s: user agents parsed with %s, %d crawler patterns; rules compiled in %.0f ms",
                self.id,
                type(self._resolver).__module__,
                self._classifier.crawler_patterns,
                (time.perf_counter() - started) * 1000,
            )

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        get_ua, limit, ua_key = self._get_ua, self.config.max_length, self._ua_key
        keys: list[str | None] = []
        for event in batch:
            value = event.value
            if value.__class__ is not dict and not isinstance(value, dict):
                ua = MISSING
            else:
                ua = value.get(ua_key, MISSING) if ua_key is not None else get_ua(event)
            if ua.__class__ is str or isinstance(ua, str):
                ua = ua.strip()
                keys.append(ua[:limit] if ua else None)
            else:  # missing, null or not a string: nothing to parse
                keys.append(None)
        blocks = self.parse_many({k: None for k in keys if k is not None})
        set_target, unknown, get_hints = self._set_target, self.unknown, self._get_hints
        target_key = self._target_key
        passed: list[Event] = []
        emit = passed.append
        for event, key in zip(batch, keys, strict=True):
            value = event.value
            if value.__class__ is not dict and not isinstance(value, dict):
                out.fail(event, not_an_object(value))
                continue
            block = (blocks[key] if key is not None else unknown).copy()
            if get_hints is not None and block["device_class"] in HINTED_CLASSES:
                hints = get_hints(event)
                if isinstance(hints, dict) and hints:
                    named = class_from_hints(hints)
                    if named is not None:
                        block["device_class"] = named
            if target_key is not None:
                value[target_key] = block
            else:
                set_target(event, block)
            emit(event)
        out.emit_all(passed)
        return out

    def parse_many(self, uas: dict[str, None] | list[str]) -> dict[str, dict[str, Any]]:
        """The device block of each user-agent string, from the cache or parsed once."""
        if self._resolver is not None:
            limit = self.config.renew_parser_after
            if limit and self._parsed_since_renewal >= limit:
                self._renew()
            else:
                # one read: another thread may be renewing it
                current = _shared_resolvers.get(self.config.engine)
                if current is not None and current is not self._resolver:
                    self._use(current)  # another bolt renewed it: let the worn one go
        return self._cache.get_or_compute(uas, self.parse)

    def _renew(self) -> None:
        """Take a new process resolver in place of the one this bolt has worn (between batches:
        a batch is parsed by one resolver)."""
        started, parsed = time.perf_counter(), self._parsed_since_renewal
        worn, self._resolver, self._extractors = id(self._resolver), None, None
        try:
            resolver, built = renew_shared_resolver(worn, self.config.engine)
        except Exception as exc:
            raise TopologyError(
                self._problem(f"cannot build the user-agent rules: {type(exc).__name__}: {exc}")
            ) from exc
        self._use(resolver)
        if built:
            log.info(
                "%s: ua-parser's resolver built anew after %d distinct user agents (%.0f ms)",
                self.id,
                parsed,
                (time.perf_counter() - started) * 1000,
            )

    def _use(self, resolver: Any) -> None:
        from ua_parser import Domain

        self._resolver = resolver
        self._parsed_since_renewal = 0
        self._domains = Domain.ALL
        # ua-parser-rs's resolver is three Rust extractors behind a Python wrapper that copies
        # each match into dataclasses; the matches have the same fields, so the bolt reads them
        # directly (~3 µs less per user agent parsed).
        parts = tuple(getattr(resolver, name, None) for name in ("ua", "os", "de"))
        self._extractors = (
            tuple(part.extract for part in parts)
            if all(hasattr(part, "extract") for part in parts)
            else None
        )

    def parse(self, ua: str) -> dict[str, Any]:
        """Parse one (already truncated) user-agent string into a device block."""
        if self._resolver is None:
            self._compile()
        try:
            return self._parse(ua)
        except UnicodeEncodeError:  # a lone surrogate (a Python bolt's json.loads of "\\ud800")
            return self._parse(ua.encode("utf-8", "replace").decode("utf-8"))

    def _parse(self, ua: str) -> dict[str, Any]:
        if self._extractors is not None:
            extract_ua, extract_os, extract_device = self._extractors
            agent, os_, dev = extract_ua(ua), extract_os(ua), extract_device(ua)
        else:
            result = self._resolver(ua, self._domains)
            agent, os_, dev = result.user_agent, result.os, result.device
        self.parsed += 1
        self._parsed_since_renewal += 1
        browser = agent.family if agent else "Other"
        os_family = os_.family if os_ else "Other"
        device = dev.family if dev else "Other"
        brand = dev.brand if dev else None
        model = dev.model if dev else None
        device_class = self._classifier.classify(ua, browser, os_family, device, brand, model)
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
