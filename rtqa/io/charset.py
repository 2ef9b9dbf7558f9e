"""Whether text bytes decode cleanly under the file's declared SpecificCharacterSet.

pydicom decodes leniently: bytes beyond ASCII with no SpecificCharacterSet are read as
Latin-1, and bytes its codec refuses become replacement characters. Either way a name comes
out that matches nothing, and a structure whose name was written in one character set and
declared in another (GB18030 bytes under ISO_IR 100, say) would look "not contoured". The
reading layer says so instead (:func:`text_problem`), and the evaluation treats such an ROI as
unidentified.
"""

from __future__ import annotations

import itertools
import unicodedata
import warnings
from collections.abc import Sequence

from pydicom import charset as pydicom_charset

_DEFAULT_TERMS = ("", "ISO_IR 6", "ISO 2022 IR 6")
_ESC = 0x1B


def declared_charsets(value: object) -> tuple[str, ...]:
    """The terms of a SpecificCharacterSet value (absent: no terms)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split("\\"))
    return tuple(str(v).strip() for v in value)  # type: ignore[attr-defined]


def text_problem(raw: bytes | None, decoded: str, charsets: Sequence[str]) -> str:
    """Why a text value did not decode cleanly, or "" when it did.

    ``raw`` is the value's bytes as stored (None when they are no longer at hand: then only
    the decoded text is checked for replacement characters), ``decoded`` what pydicom made of
    them, ``charsets`` the terms of SpecificCharacterSet.

    Not clean: bytes the declared character set refuses; bytes beyond ASCII with no character
    set declared (the default repertoire is ASCII); C1 control bytes under a single-byte set;
    and bytes that a single-byte set accepts but that read as UTF-8 or GB18030 text (runs of
    two or more non-ASCII bytes forming Chinese, Japanese or Korean characters, or valid UTF-8
    sequences): the usual sign of a file written in one character set and declared in another.
    """
    if "\ufffd" in decoded:
        return "holds replacement characters (U+FFFD): its bytes could not be decoded"
    if raw is None:
        return ""
    data = raw.rstrip(b" \x00")
    if all(b < 0x80 for b in data):
        return ""
    shown = _show(data)
    hint = _other_reading(data)
    declared = "\\".join(charsets) or "none"
    if not charsets or (len(charsets) == 1 and charsets[0] in _DEFAULT_TERMS):
        return (
            f"bytes {shown} are not ASCII, and SpecificCharacterSet ({declared}) declares no other character set" + hint
        )
    if _ESC in data or len(charsets) > 1:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                text = pydicom_charset.decode_bytes(
                    data, list(pydicom_charset.convert_encodings(list(charsets))), set()
                )
            except (UnicodeError, LookupError, ValueError) as exc:
                return f"bytes {shown} do not decode under SpecificCharacterSet {declared} ({exc})"
        if caught or "\ufffd" in text:
            return f"bytes {shown} do not decode under SpecificCharacterSet {declared}" + hint
        return ""
    try:
        codec = pydicom_charset.convert_encodings(list(charsets))[0]
        data.decode(codec)
    except (UnicodeError, LookupError, ValueError):
        return f"bytes {shown} do not decode under SpecificCharacterSet {declared}" + hint
    if _single_byte(codec):
        if any(0x80 <= b <= 0x9F for b in data):
            return f"bytes {shown} hold C1 control codes, which {declared} does not use as text" + hint
        if hint and _has_run(data):
            return f"bytes {shown} look like text in another character set than the declared {declared}" + hint
    return ""


def _single_byte(codec: str) -> bool:
    return codec.replace("-", "_").lower().startswith(("latin", "iso8859", "iso_8859", "cp125", "tis", "koi8"))


def _has_run(data: bytes) -> bool:
    """Two or more non-ASCII bytes in a row (a single-byte Latin name rarely has them)."""
    return any(a >= 0x80 and b >= 0x80 for a, b in itertools.pairwise(data))


def _other_reading(data: bytes) -> str:
    """What the bytes read as in GB18030 or UTF-8, when one of them takes them as East Asian
    or multi-byte text (": read as GB18030 they give '肝脏'"), else ""."""
    readings: dict[str, str] = {}
    for label, codec in (("GB18030", "gb18030"), ("UTF-8", "utf-8")):
        try:
            readings[label] = data.decode(codec)
        except UnicodeDecodeError:
            continue
    gb, utf8 = readings.get("GB18030"), readings.get("UTF-8")
    if gb is not None and _east_asian_text(gb) and not (utf8 is not None and _east_asian_text(utf8)):
        return f": read as GB18030 they give {gb!r}"
    if utf8 is not None and any(ord(c) >= 0x80 for c in utf8):
        return f": read as UTF-8 they give {utf8!r}"
    return ""


def _east_asian_text(text: str) -> bool:
    """Non-ASCII characters all East Asian, none touching a lower-case Latin letter: a Latin
    word with two accented letters in a row ("Coração", or UTF-8 "Ö" under Latin-1) also
    reads as GB18030, with a Chinese character inside the Latin word, and that reading is not
    taken."""
    wide = [c for c in text if ord(c) >= 0x80]
    padded = f" {text} "
    in_word = any(
        ord(c) >= 0x80 and (_latin_lower(padded[i - 1]) or _latin_lower(padded[i + 1]))
        for i, c in enumerate(padded[1:-1], start=1)
    )
    return bool(wide) and all(_east_asian(c) for c in wide) and not in_word


def _latin_lower(c: str) -> bool:
    return c.isascii() and c.islower()


def _east_asian(c: str) -> bool:
    return unicodedata.name(c, "").startswith(("CJK", "HANGUL", "HIRAGANA", "KATAKANA", "FULLWIDTH", "IDEOGRAPHIC"))


def _show(data: bytes, limit: int = 24) -> str:
    text = data[:limit].hex(" ")
    return f"{text} ..." if len(data) > limit else text
