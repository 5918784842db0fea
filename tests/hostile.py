"""The text a hostile or merely international caller sends, shared by the unit tests of
the text rules and the black-box pipeline test, so both try the same values."""

HOSTILE = {
    "nul": "a\x00",
    "soh": "a\x01b",
    "escape": "\x1b[31mred",
    "del": "a\x7f",
    "c1": "a\x9bb",
    "surrogate": "a\ud800",
    "long": "x" * 10_000,
    "rtl": "مرحبا",
    "emoji": "🤖🚀",
    "tab_newline": "line one\n\tline two",
}
"""Control characters, a lone surrogate and over-long text must be refused; right-to-left
text, emoji, tab and newline are legal in free text."""
