"""Documents for upstreams that cannot read them: their text, extracted here, or a clear 400.

A text document is its text; a PDF is the text of its pages (pypdf). A PDF with no text
layer (a scan) or one that does not parse is refused, naming the document, rather than sent
as nothing. Extraction is bounded in pages and characters, since the body is attacker input.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging

from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import DocumentPart, TextPart

log = logging.getLogger("chatbridge.documents")

MAX_PAGES = 500
MAX_CHARS = 4_000_000
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv", "text/html", "application/json")


def document_as_text(part: DocumentPart, where: str) -> TextPart:
    """The document as a text part, headed by its title and context where the client gave them."""
    if part.source == "text":
        body = part.data
    elif part.media_type == "application/pdf":
        body = pdf_text(_decode(part.data, where), where)
    elif part.media_type.startswith("text/") or part.media_type in TEXT_TYPES:
        body = _decode(part.data, where).decode("utf-8", errors="replace")
    else:
        raise InvalidRequest(
            f"{where}: documents of type '{part.media_type[:100]}' are not supported; send PDF or text.",
            param=where, code="invalid_value",
        )
    head = f'<document title="{part.title}">' if part.title else "<document>"
    context = f"\n{part.context}" if part.context else ""
    return TextPart(f"{head}{context}\n{body}\n</document>\n", cache_control=part.cache_control)


def _decode(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: the document's data is not valid base64.", param=where,
                             code="invalid_value") from None


def pdf_text(data: bytes, where: str) -> str:
    """The text of a PDF's pages, or a 400 that says why there is none."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if len(reader.pages) > MAX_PAGES:
            raise InvalidRequest(f"{where}: the PDF has more than {MAX_PAGES} pages.", param=where,
                                 code="invalid_value")
        pages: list[str] = []
        size = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            size += len(text)
            if size > MAX_CHARS:
                raise InvalidRequest(f"{where}: the PDF's text exceeds {MAX_CHARS} characters.", param=where,
                                     code="invalid_value")
            pages.append(text)
    except InvalidRequest:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError) as exc:
        log.info("could not read a PDF document: %s", type(exc).__name__)
        raise InvalidRequest(f"{where}: the PDF could not be read.", param=where, code="invalid_value") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise InvalidRequest(
            f"{where}: the PDF has no text layer (a scan?) and this model cannot read PDFs; "
            "send the pages as images instead.",
            param=where, code="invalid_value",
        )
    return text
