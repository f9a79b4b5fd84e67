"""Masking of user data in logs (--log-inputs): e-mail addresses, phone numbers and long digit runs."""
from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# 7+ digits with single separators between them (+44 20 7946 0958, (555) 123-4567, 555.123.4567).
PHONE = re.compile(r"\+?\(?\d(?:[\s().-]{0,2}\d){6,}")
DIGITS = re.compile(r"\d{5,}")  # what is left: postcodes, order and account numbers


def mask(text: str) -> str:
    """The text with e-mails → <email>, phone-like numbers → <phone>, runs of 5+ digits → <digits>."""
    text = EMAIL.sub("<email>", text)
    text = PHONE.sub(lambda m: "<phone>" if re.search(r"[\s().+-]", m.group()) else "<digits>", text)
    return DIGITS.sub("<digits>", text)
