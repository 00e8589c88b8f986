"""Sealing project secrets (papayya/secretbox.py): a value opens only with its key, in its
own project and under its own name; the data directory's key is made once, mode 0600."""

from __future__ import annotations

from pathlib import Path

import pytest

from papayya.secretbox import SecretBox, SecretsKeyError, key_file, load_key, new_key, parse_key


def test_a_sealed_value_opens_only_where_it_was_sealed() -> None:
    box = SecretBox(parse_key(new_key()))
    sealed = box.seal("p1", "TOKEN", "hunter2")
    assert b"hunter2" not in sealed
    assert box.seal("p1", "TOKEN", "hunter2") != sealed  # a fresh nonce each time
    assert box.open("p1", "TOKEN", sealed, box.key_id) == "hunter2"
    for project, name in (("p2", "TOKEN"), ("p1", "OTHER")):  # copied to another row
        with pytest.raises(SecretsKeyError, match="does not open"):
            box.open(project, name, sealed, box.key_id)
    other = SecretBox(parse_key(new_key()))
    with pytest.raises(SecretsKeyError, match="another secrets key"):
        other.open("p1", "TOKEN", sealed, box.key_id)
    assert box.key_id not in repr(other) and "hunter2" not in repr(box)


@pytest.mark.parametrize("text", ["", "short", "!" * 44, new_key()[:-4]])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(text: str) -> None:
    with pytest.raises(SecretsKeyError, match="32 bytes"):
        parse_key(text)


def test_the_data_directorys_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_key(None, tmp_path / "data")
    assert load_key(None, tmp_path / "data") == first
    assert key_file(tmp_path / "data").stat().st_mode & 0o777 == 0o600
    configured = new_key()
    assert load_key(configured, tmp_path / "data") == parse_key(configured) != first
