"""`bacula_ec2/aws/` is the boundary to AWS, in spirit and not only in imports:

- nothing outside `aws/` imports boto3 or botocore;
- the job code (`jobs/`, `backend.py`, `cli.py`) holds no EC2 request or response key
  (`"VolumeId"`, `"Filters"`, ...): it reads the typed model (`aws/model.py`) and passes the
  product's own arguments; EC2's shapes live in `aws/shapes.py`, which it does not import;
- nothing outside `aws/` reaches into the facade's plumbing (`_call`, `_pages`) or its
  boto3 clients (`.ec2`, `.ebs`);
- `aws/` knows nothing of the parameter model nor of the jobs: it takes `AwsSettings`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = REPO / "bacula_ec2"
AWS = PRODUCT / "aws"
JOB_CODE = [*sorted((PRODUCT / "jobs").glob("*.py")), PRODUCT / "backend.py", PRODUCT / "cli.py"]
AWS_KEYS = (
    "VolumeId",
    "Filters",
    "TagSpecifications",
    "Reservations",
    "SnapshotId",
    "InstanceId",
    "BlockDeviceMappings",
)
_KEY = re.compile(r"""(["'])(""" + "|".join(AWS_KEYS) + r")\1")
PLUMBING = {"_call", "_pages", "_block_pages", "ec2", "ebs"}


def aws_keys(source: str) -> list[str]:
    """`line: text` of every line that holds a quoted AWS key."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(source.splitlines(), 1) if _KEY.search(line)]


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import; `from X import a` yields X and X.a."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def plumbing(source: str) -> list[str]:
    """`line: .name` of every attribute access to the facade's internals."""
    return [
        f"{node.lineno}: .{node.attr}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr in PLUMBING
    ]


def module_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    return imported(path.read_text(), module_of(path), path.name == "__init__.py")


def within(target: str, *modules: str) -> bool:
    return any(target == m or target.startswith(m + ".") for m in modules)


def outside_aws() -> list[Path]:
    files = [p for p in PRODUCT.rglob("*.py") if AWS not in p.parents]
    return sorted(files + list((REPO / "protocol").rglob("*.py")))


def test_the_scan_covers_the_job_code() -> None:
    names = {p.name for p in JOB_CODE}
    assert {"selection.py", "snapshots.py", "browse.py", "restore_aws.py", "backend.py", "cli.py"} <= names
    assert all(p.exists() for p in JOB_CODE)
    assert len(outside_aws()) > 20


def test_job_code_holds_no_aws_request_or_response_key() -> None:
    found = [f"{p.relative_to(REPO)}:{hit}" for p in JOB_CODE for hit in aws_keys(p.read_text())]
    assert not found, "AWS shapes belong in bacula_ec2/aws/:\n" + "\n".join(found)


def test_only_aws_imports_boto3_and_botocore() -> None:
    found = [
        f"{p.relative_to(REPO)}:{line}: {target}"
        for p in outside_aws()
        for line, target in imports_of(p)
        if target.split(".")[0] in ("boto3", "botocore")
    ]
    assert not found, "\n".join(found)


def test_job_code_uses_the_facade_not_its_internals() -> None:
    found = [f"{p.relative_to(REPO)}:{hit}" for p in outside_aws() for hit in plumbing(p.read_text())]
    found += [
        f"{p.relative_to(REPO)}:{line}: {target}"
        for p in JOB_CODE
        for line, target in imports_of(p)
        if within(target, "bacula_ec2.aws.shapes")
    ]
    assert not found, "\n".join(found)


def test_aws_takes_settings_not_parameters() -> None:
    found = [
        f"{p.relative_to(REPO)}:{line}: {target}"
        for p in sorted(AWS.glob("*.py"))
        for line, target in imports_of(p)
        if within(target, "bacula_ec2.params", "bacula_ec2.jobs", "bacula_ec2.backend", "bacula_ec2.cli")
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        'vid = snap["VolumeId"]',
        "aws.describe_volumes(Filters=[])  # ok\nx = {'Filters': []}",
        "print(f\"{m['SnapshotId']}\")",
        'args["TagSpecifications"] = []',
        'for r in page.get("Reservations", []):',
        'inst.get("InstanceId")',
        'inst.get("BlockDeviceMappings", [])',
    ],
)
def test_the_key_scan_catches_each_key(line: str) -> None:
    assert aws_keys(line)


def test_the_key_scan_ignores_the_model() -> None:
    assert aws_keys("vid = snap.volume_id  # the VolumeId of the snapshot\nf(filters=x)") == []


def test_the_import_and_plumbing_scans_catch_violations() -> None:
    assert imported("import boto3\n", "bacula_ec2.jobs.x") == [(1, "boto3")]
    assert (1, "botocore.exceptions") in imported("from botocore.exceptions import ClientError\n", "x.y")
    assert (1, "bacula_ec2.aws.shapes") in imported("from ..aws import shapes\n", "bacula_ec2.jobs.x")
    assert (1, "bacula_ec2.params") in imported("from ..params import Parameters\n", "bacula_ec2.aws.x")
    assert (1, "bacula_ec2.aws.client") in imported("from .client import Aws\n", "bacula_ec2.aws", True)
    assert within("bacula_ec2.jobs.context", "bacula_ec2.jobs")
    assert not within("bacula_ec2.client", "bacula_ec2.cli")
    assert plumbing("aws._call('X', f)\nfor p in aws._pages(): pass\naws.ec2.describe_volumes()\n") == [
        "1: ._call",
        "2: ._pages",
        "3: .ec2",
    ]
