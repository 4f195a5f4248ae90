"""Reading the text files users give us (CSV, fold lists, YAML, JSON) whatever wrote them.

Spreadsheets and other operating systems write UTF-8 with a byte-order mark, UTF-16 (Excel's
"Unicode text"), Windows-1252/Latin-1 and CRLF line ends; each reader of a user file goes through
:func:`read_user_text`, so all of them accept the same encodings and refuse the rest in one line.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from histobreast.errors import DatasetError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose BOM is its prefix
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_user_text(data: bytes, source: str | Path) -> str:
    """``data`` as text: by its byte-order mark, else UTF-8, else Windows-1252 (spreadsheets' default).

    Line ends are left to the caller (``str.splitlines`` and ``csv`` accept CRLF and CR). A file
    holding NUL bytes without a UTF-16/32 mark is binary, and refused naming ``source``.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as err:
                raise DatasetError(f"{source}: not valid {encoding.upper()} text ({err.reason})") from err
    if b"\x00" in data:
        raise DatasetError(f"{source}: not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def read_user_text(path: str | Path) -> str:
    """The text of a user's file (see :func:`decode_user_text`); a missing or unreadable file is a
    :class:`DatasetError` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror})") from err
    return decode_user_text(data, path)


def user_csv(path: str | Path) -> csv.DictReader:
    """A ``csv.DictReader`` over a user's CSV file in any of the accepted encodings."""
    return csv.DictReader(io.StringIO(read_user_text(path), newline=""))
