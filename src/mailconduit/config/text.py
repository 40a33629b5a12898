"""Rules about text every layer shares: how a character is named in an error, which
encodings read files and which charsets mail can carry, what a database URL looks like."""

from __future__ import annotations

import codecs
import re
import unicodedata

_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "TAB",
    "\n": "LINE FEED",
    "\x0b": "VERTICAL TAB",
    "\x0c": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
}


def char_name(char: str) -> str:
    """``U+000A LINE FEED``: a character as a person can read it in an error message."""
    if "\ud800" <= char <= "\udfff":
        return f"U+{ord(char):04X}, a lone surrogate"
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "control character")
    return f"U+{ord(char):04X} {name}"


#: Python codecs that call themselves text encodings but are not a character set of files
#: or mail: IDNA and Punycode (domain names), Python escapes, and the always-failing one.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "raw-unicode-escape", "unicode-escape", "undefined", "charmap", "mbcs"}
)
#: The IANA (MIME) name of each Python codec usable as the charset of outgoing mail: ASCII
#: compatible and stateless, so MIME structure and RFC 2047 words stay plain ASCII.
_MIME_CHARSETS: dict[str, str] = {
    "ascii": "us-ascii",
    "utf-8": "utf-8",
    "iso8859-1": "iso-8859-1",
    **{f"iso8859-{n}": f"iso-8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)},
    **{f"cp125{n}": f"windows-125{n}" for n in range(9)},
    "cp874": "windows-874",
    "cp932": "windows-31j",
    **{f"cp{n}": f"ibm{n}" for n in (437, 775, 850, 852, 855, 857, 860, 861, 862, 863, 865, 866,
                                      869)},
    "cp858": "ibm00858",
    "koi8-r": "koi8-r",
    "koi8-u": "koi8-u",
    "kz1048": "kz-1048",
    "ptcp154": "ptcp154",
    "tis-620": "tis-620",
    "hp-roman8": "hp-roman8",
    "mac-roman": "macintosh",
    "shift_jis": "shift_jis",
    "euc_jp": "euc-jp",
    "euc_kr": "euc-kr",
    "cp949": "ks_c_5601-1987",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "gb18030": "gb18030",
    "big5": "big5",
    "big5hkscs": "big5-hkscs",
}  # fmt: skip


def _lookup_text_codec(name: str) -> codecs.CodecInfo:
    """The codec of a text encoding; ValueError (in words for the user) for anything else."""
    shown = repr(name if len(name) <= 40 else name[:37] + "...")
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):
        raise ValueError(f"unknown encoding {shown}") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        raise ValueError(
            f"{shown} is not a character encoding of text (it is a Python codec that "
            "transforms data, such as base64, rot13 or zlib); name a character encoding "
            "such as utf-8, cp1252 or latin-1"
        )
    return info


def source_codec(name: str) -> str:
    """The Python codec that reads files written in encoding ``name``; ValueError says why not.

    Any character encoding of text is accepted (UTF-16/32 with or without a byte-order mark,
    EBCDIC code pages...); codecs that transform data (base64, rot13, zlib) are not, nor
    UTF-7, the one text encoding that decodes to lone surrogates (which are not text).
    """
    codec = _lookup_text_codec(name).name
    if codec == "utf-7":
        raise ValueError("utf-7 files are not read; convert the file to utf-8 first")
    return codec


def mime_charset(name: str) -> tuple[str, str]:
    """(MIME name, Python codec) of an outgoing message charset; ValueError says why not.

    Only registered MIME charsets that keep ASCII as it is and need no shift state are
    accepted: headers are encoded word by word, and MIME structure must stay ASCII.
    """
    codec = _lookup_text_codec(name).name
    mime = _MIME_CHARSETS.get(codec)
    if mime is None:
        shown = repr(name if len(name) <= 40 else name[:37] + "...")
        raise ValueError(
            f"{shown} cannot be the charset of a message (it is not an ASCII-compatible MIME "
            "charset without shift states); use utf-8, or e.g. iso-8859-1, windows-1252, "
            "shift_jis"
        )
    return mime, codec


_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
#: URL schemes of files elsewhere (not a database): reading them is not supported.
_FILE_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "s3", "gs", "gcs", "az",
                           "abfs", "file", "hdfs", "webdav", "smb"})  # fmt: skip


def url_scheme(text: str) -> str:
    """The lower-cased scheme of ``text`` when it is written as a URL (``x://...``), else ""."""
    found = _URL_SCHEME_RE.match(text.strip())
    return found.group(1).lower() if found else ""


def is_database_url(text: str) -> bool:
    """True for a SQLAlchemy-style database URL such as ``postgresql://host/db`` or
    ``sqlite:///data.db`` (a URL whose scheme is not one of a file server)."""
    scheme = url_scheme(text)
    return bool(scheme) and scheme not in _FILE_SCHEMES
