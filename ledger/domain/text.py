"""Text fields: what each kind of text accepts, and the checks commands run on input.

Every event field a caller chooses passes one of these rules, so stores, logs, terminals
and the dashboard only ever see text that all of them can hold and show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.errors import BadInput

__all__ = [
    "ACTOR_RULE",
    "BOT_ID_RULE",
    "CONFIG_KEY_RULE",
    "CONFIG_VALUE_RULE",
    "COOLIFY_UUID_RULE",
    "CORRELATION_ID_RULE",
    "MAX_CONFIG_ENTRIES",
    "PLATFORM_RULE",
    "POOL_NAME_RULE",
    "REASON_CODE_RULE",
    "REASON_RULE",
    "SLOT_NAME_RULE",
    "SLOT_PREFIX_RULE",
    "TextRule",
    "check_actor",
    "check_bot_id",
    "check_config",
    "check_origin",
    "check_platform",
    "check_reason",
    "check_text",
    "fit_text",
]


_CONTROLS = r"\x00-\x1f\x7f-\x9f"
"""C0 controls, DEL and C1 controls: PostgreSQL refuses NUL, and the rest reach terminals,
logs and the dashboard as escape sequences."""
_CONTROLS_BUT_TAB_NEWLINE = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(f"[{_CONTROLS_BUT_TAB_NEWLINE}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""JSON can escape a lone surrogate (``"\\ud800"``); UTF-8, and so no store, can hold one."""


@dataclass(frozen=True)
class TextRule:
    """What one kind of text field accepts. Everywhere: a string of at most ``max_len``
    characters, without lone surrogates or control characters (free text, ``multiline``,
    may hold tab and newline). Identifiers also have a ``form``; free text must not be
    blank unless ``blank_ok``.

    Text is refused, never repaired: a caller whose value was cut or cleaned would read
    back something it never sent. Messages show the value only when an identifier has
    the wrong form (never a config value, which may be sensitive)."""

    what: str
    max_len: int
    form: re.Pattern[str] | None = None
    form_words: str = ""
    multiline: bool = False
    blank_ok: bool = False

    @property
    def pattern(self) -> str:
        """The rule as one regular expression, for documents (JSON Schema): all of it
        but the length and lone surrogates, which no valid Unicode text holds (naming them
        would refuse every emoji in a UTF-16 engine such as JavaScript's)."""
        if self.form is not None:
            return self.form.pattern
        c = _CONTROLS_BUT_TAB_NEWLINE if self.multiline else _CONTROLS
        return f"^[^{c}]*$" if self.blank_ok else f"^[^{c}]*[^\\s{c}][^{c}]*$"

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` (worded to follow the field's name), or None."""
        if not isinstance(value, str):
            return f"must be a string, not {type(value).__name__}"
        if len(value) > self.max_len:
            return f"is {len(value)} characters long; at most {self.max_len} are allowed"
        if bad := _SURROGATE.search(value):
            return f"must be valid Unicode: lone surrogate {_at(bad)}"
        if bad := (_CONTROL_BUT_TAB_NEWLINE if self.multiline else _CONTROL).search(value):
            aside = " (tab and newline aside)" if self.multiline else ""
            return f"must not contain control characters{aside}: {_at(bad)}"
        if self.form is not None:
            if self.form.fullmatch(value):
                return None
            return f"{value!a} is not a valid {self.what}: {self.form_words}"
        return None if self.blank_ok or value.strip() else "must not be blank"


def _at(found: re.Match[str]) -> str:
    return f"U+{ord(found.group()):04X} at character {found.start() + 1}"


def check_text(value: object, rule: TextRule, *, field: str) -> str:
    """``value`` when ``rule`` accepts it; else :class:`BadInput` naming ``field``, as the
    API and the CLI spell it, so the caller knows which input to correct."""
    problem = rule.problem(value)
    if problem is None and isinstance(value, str):
        return value
    raise BadInput(f"{field} {problem}", field=field)


def fit_text(text: str, max_len: int) -> str:
    """Text the ledger did not choose (an upstream error message) made fit for a free-text
    field before the ledger words a reason with it: controls and lone surrogates become
    U+FFFD and an over-long text is cut, visibly (ending in an ellipsis)."""
    cleaned = _SURROGATE.sub("\ufffd", _CONTROL.sub("\ufffd", text))
    return cleaned if len(cleaned) <= max_len else cleaned[: max_len - 1] + "\u2026"


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_NAME_WORDS = "1-40 lowercase letters, digits and dashes, the first not a dash"
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_TOKEN_WORDS = "1-128 letters, digits and _.:@-, the first a letter or digit"

ACTOR_RULE = TextRule(
    "actor",
    70,
    re.compile(r"^(api|worker|operator|policy:[a-z0-9][a-z0-9_.-]{0,62})$"),
    "'api', 'worker', 'operator' or 'policy:<name>'",
)
BOT_ID_RULE = TextRule("bot id", 128, _TOKEN, _TOKEN_WORDS)
CORRELATION_ID_RULE = TextRule("correlation id", 128, _TOKEN, _TOKEN_WORDS)
PLATFORM_RULE = TextRule("platform", 40, _NAME, _NAME_WORDS)
POOL_NAME_RULE = TextRule("pool name", 40, _NAME, _NAME_WORDS)
SLOT_PREFIX_RULE = TextRule("slot prefix", 40, _NAME, _NAME_WORDS)
SLOT_NAME_RULE = TextRule(
    "slot name",
    128,
    re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$"),
    "1-128 lowercase letters, digits and dashes, the first not a dash",
)
COOLIFY_UUID_RULE = TextRule(
    "Coolify uuid",
    128,
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"),
    "1-128 letters, digits and _.-, the first a letter or digit",
)
CONFIG_KEY_RULE = TextRule(
    "config key",
    128,
    re.compile(r"^(?!(?:_type_|_data_)$)[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    "a variable name like MEETING_URL (1-128 letters, digits and _, not first a digit),"
    " other than _type_ and _data_, which the event store reserves",
)
"""The event store's JSON transcoder decodes an object of exactly the keys ``_type_`` and
``_data_`` as an encoded value, so a config of just those two could be saved but never
loaded again (every reader of the log would fail on it). Both names are refused on their
own, so the rule stays one per key and the API's schema can state it as a key pattern."""
CONFIG_VALUE_RULE = TextRule("config value", 4096, blank_ok=True)
"""One line: a value becomes a container environment variable, where a newline would
start another variable."""
REASON_RULE = TextRule("reason", 1000, multiline=True)
REASON_CODE_RULE = TextRule(
    "reason code",
    64,
    re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$"),
    "1-64 lowercase letters, digits and _, the first not _",
)
MAX_CONFIG_ENTRIES = 100


def check_actor(actor: str) -> str:
    """Actors are a closed vocabulary so audit queries can group by them."""
    return check_text(actor, ACTOR_RULE, field="actor")


def check_bot_id(bot_id: str) -> str:
    return check_text(bot_id, BOT_ID_RULE, field="bot_id")


def check_platform(platform: str) -> str:
    return check_text(platform, PLATFORM_RULE, field="platform")


def check_reason(reason: str) -> str:
    return check_text(reason, REASON_RULE, field="reason")


def check_origin(actor: str, correlation_id: str) -> None:
    """Who caused an event and under which request: both are on every event."""
    check_actor(actor)
    check_text(correlation_id, CORRELATION_ID_RULE, field="correlation_id")


def check_config(config: dict[str, str]) -> dict[str, str]:
    """A bot's configuration becomes container environment variables: keys must be valid
    variable names and values one line of text (Coolify rejects anything else)."""
    if not isinstance(config, dict) or len(config) > MAX_CONFIG_ENTRIES:
        msg = f"config must be an object of at most {MAX_CONFIG_ENTRIES} string values"
        raise BadInput(msg, field="config")
    for key, value in config.items():
        check_text(key, CONFIG_KEY_RULE, field="config")
        check_text(value, CONFIG_VALUE_RULE, field=f"config.{key}")
    return dict(config)
