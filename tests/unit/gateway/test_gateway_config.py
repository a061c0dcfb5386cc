"""The gateway's TOML file: valid files load, wrong ones fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfilm.gateway.config import GatewayConfigError, load_config

VALID = """
[cloud]
url = "https://cloud.example.org/"
credential = "cfh_abc"

[dicom]
ae_title = "GW"
port = 11112
allowed_ae_titles = ["PACS", "CT1"]

[queue]
folder = "spool"
quota_bytes = 10_000_000
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, VALID))
    assert config.cloud.url == "https://cloud.example.org"
    assert config.cloud.credential.get_secret_value() == "cfh_abc"
    assert "cfh_abc" not in repr(config)  # a secret never lands in a log by accident
    assert config.dicom.allowed_ae_titles == ["PACS", "CT1"]
    assert config.queue.folder == tmp_path / "spool"  # relative to the file
    assert config.forward.batch_size == 20
    assert config.reports.mllp_port is None


@pytest.mark.parametrize(("change", "expected"), [
    (("cfh_abc", "secret"), "cloud.credential: must be the hospital's credential"),
    (('url = "https://cloud.example.org/"', 'url = "cloud"'), "cloud.url: must start with"),
    (('allowed_ae_titles = ["PACS", "CT1"]', "allowed_ae_titles = []"),
     "dicom.allowed_ae_titles"),
    (('ae_title = "GW"', 'ae_title = "THIS-IS-MUCH-TOO-LONG"'), "dicom.ae_title:"),
    (("port = 11112", "port = 70000"), "dicom.port:"),
    (("quota_bytes = 10_000_000", "quota_bytes = 10_000_000\nbatch = 3"),
     "queue.batch: Extra inputs"),
    (('[queue]\nfolder = "spool"', "[queue]"), "queue.folder: Field required"),
])
def test_wrong_values_fail_with_one_line(tmp_path: Path, change: tuple[str, str],
                                         expected: str) -> None:
    assert change[0] in VALID
    path = _write(tmp_path, VALID.replace(*change))
    with pytest.raises(GatewayConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(GatewayConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[cloud\nurl="))


def test_compress_section_defaults_off_and_checks_its_syntaxes(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, VALID))
    assert not config.compress.enabled  # policy off by default: forwarded as received
    config = load_config(_write(tmp_path, VALID + """
[compress]
enabled = true
modalities = { us = "none", mr = "1.2.840.10008.1.2.4.201" }
"""))
    assert config.compress.default == "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless
    assert config.compress.modalities == {"US": "none", "MR": "1.2.840.10008.1.2.4.201"}
    with pytest.raises(GatewayConfigError) as err:
        load_config(_write(tmp_path, VALID + """
[compress]
enabled = true
default = "1.2.840.10008.1.2.4.50"
"""))
    assert "compress.default" in str(err.value) and "lossless" in str(err.value)
