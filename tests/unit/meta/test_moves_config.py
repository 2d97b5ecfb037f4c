"""Server placement tags from the config file (`server_tags`) and the `--tags` flag."""

from __future__ import annotations

from click.testing import CliRunner

from cli.server import _options
from natsd.config import options_from_mapping, parse_tags


def test_server_tags_config_key_takes_a_list_or_a_string() -> None:
    assert options_from_mapping({"server_tags": ["az:1", " ssd "]})[0] == {"server_tags": ("az:1", "ssd")}
    assert parse_tags("az:2, ,x") == ("az:2", "x")


def test_tags_flag_overrides_the_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "s.conf"
    conf.write_text('server_tags = ["az:1"]\n')
    from cli.server import server

    seen = {}

    def capture(**flags):  # type: ignore[no-untyped-def]
        seen["opts"] = _options(flags)[0]

    cmd = server.__class__(name="s", params=server.params, callback=capture)
    assert CliRunner().invoke(cmd, ["-c", str(conf)]).exit_code == 0
    assert seen["opts"].server_tags == ("az:1",)
    assert CliRunner().invoke(cmd, ["-c", str(conf), "--tags", "az:3,gpu"]).exit_code == 0
    assert seen["opts"].server_tags == ("az:3", "gpu")
