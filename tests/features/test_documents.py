"""Documents to text for upstreams that cannot read them, and reasoning history dropped for those that do not verify it."""

from __future__ import annotations

import base64

import pytest

from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import ChatRequest, DocumentPart, Message, ReasoningPart, TextPart
from chatbridge.features.content import UpstreamAbilities, fit_content, needs_fitting
from chatbridge.features.documents import document_as_text
from tests.pdf import text_pdf


def test_pdf_and_text_documents() -> None:
    pdf = DocumentPart(base64.b64encode(text_pdf("Hello from the PDF")).decode(), "application/pdf", "base64", "Doc")
    assert document_as_text(pdf, "d").text == '<document title="Doc">\nHello from the PDF\n</document>\n'
    text = DocumentPart(base64.b64encode(b"plain text").decode(), "text/plain", "base64", context="ctx")
    assert document_as_text(text, "d").text == "<document>\nctx\nplain text\n</document>\n"


@pytest.mark.parametrize(("part", "message"), [
    (DocumentPart("%%%", "application/pdf", "base64"), "not valid base64"),
    (DocumentPart(base64.b64encode(b"%PDF-1.4 junk").decode(), "application/pdf", "base64"), "could not be read"),
    (DocumentPart("AAAA", "application/zip", "base64"), "not supported"),
])
def test_bad_documents_are_400s(part: DocumentPart, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        document_as_text(part, "document 1")


def test_fitting_keeps_untouched_messages_and_drops_reasoning() -> None:
    kept = Message("user", "hi")
    request = ChatRequest("m", [kept, Message("assistant", [ReasoningPart("x", "sig"), TextPart("answer")]),
                                Message("user", [DocumentPart("notes", "text/plain"), TextPart("sum up")])])
    plain = UpstreamAbilities()
    assert needs_fitting(request, plain) and not needs_fitting(request, UpstreamAbilities(True, True))
    fitted = fit_content(request, plain)
    assert fitted.messages[0] is kept
    assert fitted.messages[1].content == "answer"
    assert fitted.messages[2].content == "<document>\nnotes\n</document>\nsum up"
    signed = fit_content(request, UpstreamAbilities(reads_documents=True, verifies_signatures=True))
    assert signed.messages[1].content == [ReasoningPart("x", "sig"), TextPart("answer")]
    assert not needs_fitting(ChatRequest("m", [kept]), plain)
