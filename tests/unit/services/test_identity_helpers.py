"""Identity helpers without a database: ID protection, pinyin keys, generated secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloudfilm.app import resolve_secrets
from cloudfilm.config import ConfigError, Settings
from cloudfilm.services.identity.names import exact_name, has_name, same_name, search_keys
from cloudfilm.services.identity.protection import IdProtector, InvalidKeyError, decode_key


def test_protector_round_trip_and_keyed_hash() -> None:
    p = IdProtector(b"k" * 32, b"h" * 32)
    token = p.encrypt("cn-rid", "11010519491231002X")
    assert "11010519491231002X" not in token
    assert p.decrypt("cn-rid", token) == "11010519491231002X"
    assert p.encrypt("cn-rid", "x") != p.encrypt("cn-rid", "x")  # random nonce
    assert p.lookup_hash("cn-rid", "x") == p.lookup_hash("cn-rid", "x")
    assert p.lookup_hash("cn-rid", "x") != IdProtector(b"k" * 32, b"j" * 32).lookup_hash(
        "cn-rid", "x")
    with pytest.raises(ValueError, match="configured key"):
        IdProtector(b"z" * 32, b"h" * 32).decrypt("cn-rid", token)
    with pytest.raises(InvalidKeyError, match="NAME"):
        decode_key("c2hvcnQ=", name="NAME", min_bytes=32)


def test_pinyin_keys_and_name_comparison() -> None:
    assert search_keys("=王^小东").split() == ["王", "小东", "王小东", "WANG", "XIAODONG",
                                               "WANGXIAODONG"]
    assert "WANGXIAODONG" in search_keys("王小东").split()
    assert search_keys("Li^Lei") == "LI LEI LILEI"
    # Issue 11: characters are compared as characters when both names have them (a
    # traditional-form header is a conflict for review); pinyin bridges only a name that
    # has no ideographic group.
    assert same_name("Wang^XiaoDong=王^小东", "王小东") is True
    assert same_name("Wang^XiaoDong=王^小東", "王小东") is False
    assert same_name("Wang^XiaoDong", "王小东") is True
    assert same_name("招扬灵", "赵洋玲") is False  # homophones: same pinyin, other person
    assert same_name("^^", "Li^Lei") is None and not has_name("^^")
    assert same_name("王小东", "Li^Lei") is False
    assert same_name("", "Li^Lei") is None


def test_embedded_secrets_generated_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = resolve_secrets(settings, tmp_path)
    path = tmp_path / "secrets.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = resolve_secrets(settings, tmp_path)
    assert first.national_id_key is not None and second.national_id_key is not None
    assert first.national_id_key.get_secret_value() == second.national_id_key.get_secret_value()


def test_postgresql_needs_configured_secrets(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://u@db/cf")
    with pytest.raises(ConfigError, match="CLOUDFILM_SECURITY__NATIONAL_ID_KEY"):
        resolve_secrets(settings, tmp_path)


def test_registration_needs_the_exact_ideographic_name() -> None:
    assert exact_name("赵洋玲", "赵洋玲") and exact_name("Zhao^Yangling=赵^洋玲", "赵洋玲")
    assert not exact_name("赵洋玲", "招扬灵")  # a homophone
    assert not exact_name("赵洋玲", "Zhao Yangling")  # pinyin is for search only
    assert not exact_name("赵洋玲", "")
    assert exact_name("SMITH^JOHN", "Smith John") and not exact_name("", "")
