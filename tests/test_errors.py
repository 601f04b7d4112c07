"""Quoting a caught exception in entroprune's messages."""

from entroprune.errors import first_line


def test_empty_message_gives_the_type_name():
    assert first_line(EOFError()) == "EOFError"


def test_first_line_only_and_cut_at_a_word():
    assert first_line(ValueError("bad shape\ndetails")) == "ValueError: bad shape"
    assert first_line(RuntimeError("alpha beta gamma delta"), limit=13) == "RuntimeError: alpha beta…"
