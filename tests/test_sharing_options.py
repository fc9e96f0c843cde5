"""--public-port and --max-share-ttl: parsed into Config, a bad value stops start-up."""

from __future__ import annotations

import pytest

from portproxy.tap import Options


def _config(*argv: str) -> object:
    options = Options()
    options.parseOptions(list(argv))
    return options.config


def test_public_ports_repeat_and_max_share_ttl_reads_a_duration() -> None:
    config = _config(
        "--public-port",
        "5173",
        "--public-port",
        "3000",
        "--public-port",
        "3000",
        "--max-share-ttl",
        "2h",
    )
    assert config.public_ports == (3000, 5173)  # type: ignore[attr-defined]
    assert config.max_share_ttl == 7200  # type: ignore[attr-defined]


def test_by_default_no_port_is_public_and_links_live_at_most_30_days() -> None:
    config = _config()
    assert config.public_ports == ()  # type: ignore[attr-defined]
    assert config.max_share_ttl == 30 * 86400  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--public-port", "0"], "--public-port: '0' is not a port (1-65535)"),
        (["--public-port", "65536"], "--public-port: '65536' is not a port"),
        (["--public-port", "web"], "--public-port: 'web' is not a port"),
        (["--max-share-ttl", "0"], "--max-share-ttl: '0' is not a positive duration"),
        (["--max-share-ttl", "1y"], "--max-share-ttl: '1y' is not a duration"),
    ],
)
def test_a_bad_value_stops_start_up_with_one_line_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        _config(*argv)
    assert exit.value.code == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
