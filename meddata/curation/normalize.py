"""Text repair for the `normalize` step: mojibake, Unicode form, HTML, controls, whitespace.

`Normalizer(...).fix(text)` returns the repaired text and the names of the fixes that changed
it (`unicode`, `form`, `html`, `controls`, `whitespace`), so the step can count rows changed
by fix. The order: ftfy first (it repairs mojibake, which must happen before anything reads
the characters), then HTML, then the Unicode normal form, then control characters, then
whitespace.

ftfy settings, chosen for medical Chinese and English text:
- `fix_encoding` on (mojibake such as "Ã©" -> "é", "é«˜è¡€åŽ‹" -> "高血压").
- `uncurl_quotes` and `fix_character_width` off: ftfy's defaults turn Chinese full-width
  punctuation (，：“”) into ASCII, which changes correct Chinese text; NFKC does width
  folding for those who ask for it (`form: NFKC`).
- `unescape_html` off: HTML is handled here, tags and entities together, only when the
  text looks like HTML (a known tag or an entity), so "<5 mg/L" and "a < b" are left alone.
- `normalization` off in ftfy: the form is applied here, so that it is counted on its own.
"""

from __future__ import annotations

import html
import unicodedata

import regex

FORMS = ("NFC", "NFKC", "none")

# tags of real HTML only: "<think>", "<5 mmol/L" or "<b" followed by no ">" are not tags here
_HTML_TAGS = (
    "a|abbr|address|article|aside|b|bdi|bdo|big|blockquote|body|br|caption|center|cite|code|"
    "col|colgroup|dd|del|details|dfn|div|dl|dt|em|figcaption|figure|font|footer|form|h[1-6]|"
    "head|header|hr|html|i|img|input|ins|kbd|label|li|link|main|mark|meta|nav|nobr|ol|p|pre|"
    "q|s|samp|section|small|span|strike|strong|sub|summary|sup|table|tbody|td|tfoot|th|thead|"
    "time|title|tr|tt|u|ul|var|wbr"
)
_TAG = regex.compile(rf"</?(?:{_HTML_TAGS})(?:\s[^<>]*)?/?>", regex.IGNORECASE)
# elements whose content is never text
_DEAD = regex.compile(r"<(script|style|noscript|iframe)\b[^>]*>.*?</\1\s*>|<!--.*?-->",
                      regex.IGNORECASE | regex.DOTALL)
# tags that end a line or a block
_BREAK = regex.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-6]|table|ul|ol|blockquote|pre)\s*>",
                       regex.IGNORECASE)
_CELL = regex.compile(r"</t[dh]\s*>", regex.IGNORECASE)
_ENTITY = regex.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# C0/C1 controls except tab and newline; zero-width characters and the BOM; soft hyphen
_CONTROL = regex.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
_SPACES = regex.compile(r"[^\S\n]+")   # runs of whitespace other than newline (tabs too)
_SPACE_NL = regex.compile(r" *\n *")
_BLANK_LINES = regex.compile(r"\n{3,}")


def looks_like_html(text: str) -> bool:
    return bool(_TAG.search(text) or _ENTITY.search(text) or _DEAD.search(text))


def strip_html(text: str) -> str:
    """Drop script/style blocks and comments, turn block ends into newlines and cell ends
    into a tab, drop the tags, decode entities (`&lt;` -> `<`, `&#8451;` -> `℃`)."""
    text = _DEAD.sub("", text)
    text = _BREAK.sub("\n", text)
    text = _CELL.sub("\t", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def collapse_whitespace(text: str) -> str:
    """Runs of spaces and tabs become one space, spaces around newlines go, at most one
    blank line in a row, and the ends are stripped; line structure (tables, lists) stays."""
    text = _SPACES.sub(" ", text)
    text = _SPACE_NL.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


class Normalizer:
    """Repairs text; built once per worker (ftfy's config is made once)."""

    def __init__(self, fix_encoding: bool = True, form: str = "NFC", html: bool = True,
                 controls: bool = True, whitespace: bool = True):
        if form not in FORMS:
            raise ValueError(f"form: {form!r} is not one of {', '.join(FORMS)}")
        import ftfy

        self.form = None if form == "none" else form
        self.html, self.controls, self.whitespace = html, controls, whitespace
        self._ftfy = ftfy.fix_text if fix_encoding else None
        self._config = ftfy.TextFixerConfig(
            unescape_html=False, uncurl_quotes=False, fix_character_width=False,
            normalization=None, explain=False) if fix_encoding else None

    def fix(self, text: str) -> tuple[str, tuple[str, ...]]:
        """The repaired text and the fixes that changed it, in the order applied."""
        fixes = []
        if self._ftfy is not None and not text.isascii():
            fixed = self._ftfy(text, self._config)
            if fixed != text:
                fixes.append("unicode")
                text = fixed
        elif self._ftfy is not None and ("\r" in text or "\x1b" in text):
            fixed = self._ftfy(text, self._config)   # line breaks, terminal escapes
            if fixed != text:
                fixes.append("unicode")
                text = fixed
        if self.html and ("<" in text or "&" in text) and looks_like_html(text):
            fixed = strip_html(text)
            if fixed != text:
                fixes.append("html")
                text = fixed
        if self.form and not text.isascii():
            fixed = unicodedata.normalize(self.form, text)
            if fixed != text:
                fixes.append("form")
                text = fixed
        if self.controls:
            fixed = _CONTROL.sub("", text)
            if fixed != text:
                fixes.append("controls")
                text = fixed
        if self.whitespace:
            fixed = collapse_whitespace(text)
            if fixed != text:
                fixes.append("whitespace")
                text = fixed
        return text, tuple(fixes)
