"""`credentials_file=` is checked before the first AWS call, and the error names the file
and what is wrong with it (never its content)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bacula_ec2.aws import AwsError
from bacula_ec2.aws.settings import credentials_file_problem
from bacula_ec2.jobs.context import connect
from bacula_ec2.params import parse_parameters

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYE2ESECRET"
KEYS = "[default]\naws_access_key_id=A\naws_secret_access_key=S\n"


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No AWS config file of the user running the tests gets in the way."""
    config = tmp_path / "no-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return config


def test_a_good_file_passes(tmp_path: Path, no_config: Path) -> None:
    f = _write(tmp_path / "c", f"[default]\naws_access_key_id = AKIDX\naws_secret_access_key = {SECRET}\n")
    assert credentials_file_problem(str(f), None, keys_given=False) is None
    g = _write(tmp_path / "g", f"[prod]\naws_access_key_id=A\naws_secret_access_key={SECRET}\n", 0o640)
    assert credentials_file_problem(str(g), "prod", keys_given=False) is None


@pytest.mark.parametrize(
    ("content", "mode", "profile", "expected"),
    [
        (None, 0o600, None, "no such file"),
        (KEYS, 0o644, None, "mode 0644"),
        (KEYS, 0o606, None, "chmod 600"),
        (
            KEYS,
            0o600,
            "prod",
            "no profile [prod] (it has: default)",
        ),
        ("", 0o600, None, "no profile [default] (it has no profiles)"),
        (
            "[default]\naws_access_key_id=A\n",
            0o600,
            None,
            "has no aws_access_key_id and aws_secret_access_key",
        ),
        (f"aws_secret_access_key={SECRET}\n[default]\n", 0o600, None, "not an INI file"),
    ],
)
def test_each_problem_is_named(  # type: ignore[no-untyped-def]
    tmp_path: Path, no_config: Path, content, mode, profile, expected
) -> None:
    path = tmp_path / "creds"
    if content is not None:
        _write(path, content, mode)
    problem = credentials_file_problem(str(path), profile, keys_given=False)
    assert problem is not None and expected in problem, problem
    assert problem.startswith(f"credentials_file={path}: ")
    assert SECRET not in problem


def test_a_directory_and_an_unreadable_file(tmp_path: Path, no_config: Path) -> None:
    problem = credentials_file_problem(str(tmp_path), None, keys_given=False)
    assert problem and "not a regular file" in problem
    f = _write(tmp_path / "c", KEYS, 0o000)
    if os.geteuid() == 0:
        pytest.skip("root reads any file")  # pragma: no cover
    problem = credentials_file_problem(str(f), None, keys_given=False)
    assert problem and "cannot be read by this user" in problem


def test_a_profile_of_the_config_file_or_explicit_keys_are_fine(tmp_path: Path, no_config: Path) -> None:
    f = _write(tmp_path / "c", KEYS)
    _write(no_config, "[profile ops]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n")
    assert credentials_file_problem(str(f), "ops", keys_given=False) is None
    empty = _write(tmp_path / "e", "[default]\n")
    assert credentials_file_problem(str(empty), None, keys_given=True) is None
    roles = _write(
        tmp_path / "r", "[default]\nrole_arn=arn:aws:iam::1:role/x\ncredential_source=Ec2InstanceMetadata\n"
    )
    assert credentials_file_problem(str(roles), None, keys_given=False) is None


def test_connect_fails_before_any_aws_call_naming_the_file(tmp_path: Path, no_config: Path) -> None:
    missing = tmp_path / "nonexistent"
    params = parse_parameters([("region", "us-east-1"), ("credentials_file", str(missing))])
    with pytest.raises(AwsError) as err:
        connect(params)
    assert err.value.code == "CredentialsFile"
    assert f"credentials_file={missing}: no such file" in str(err.value)


def test_bec2_exits_2_naming_the_file(
    tmp_path: Path, no_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bacula_ec2.cli import main

    missing = tmp_path / "nonexistent"
    rc = main(
        ["--operation=estimate", "--region=us-east-1", f"--credentials_file={missing}", "--instances=x"]
    )
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"credentials_file={missing}: no such file" in err
