"""`files.read_entries`: the line files commands take (queries, pairs)."""
from __future__ import annotations

import pytest

from noise2art.errors import InvalidArgument
from noise2art.files import read_entries


def test_entries_are_text_or_json_objects_with_their_line_numbers(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text('# a comment\n\n  plain text  \n{"a": 1}\n')
    assert read_entries(path, "pairs") == [(3, "plain text", None), (4, '{"a": 1}', {"a": 1})]


@pytest.mark.parametrize("text, needle", [('{"a": 1', "line 1: not valid JSON"), ("[1, 2]\n{1}", "line 2"),
                                          ('{"a"}', "not valid JSON")])
def test_bad_lines_name_the_field_and_the_line(tmp_path, text, needle):
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as info:
        read_entries(path, "queries")
    assert info.value.name == "queries" and needle in str(info.value)


def test_an_unreadable_file_names_the_field(tmp_path):
    with pytest.raises(InvalidArgument) as info:
        read_entries(tmp_path / "missing.txt", "pairs")
    assert info.value.name == "pairs" and "cannot read" in str(info.value)
