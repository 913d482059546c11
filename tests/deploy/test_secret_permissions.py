"""What ``squall package`` grants for a topology's secret references: exactly the reads, on the
named parameter and secret, no template parameter for them — the function and the fleet read
the values themselves, at init and at each shard process's start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from squall import iam
from squall.deploy import fleet
from squall.deploy.package import aws_services
from squall.deploy.template import TemplateOptions, sam_template
from squall.topology.loader import load
from squall.topology.references import SecretRef, placeholder
from tests.deploy.sam import cfn_lint, translate

PREFIX = "arn:${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}:"
SSM = PREFIX.replace("{service}", "ssm") + "parameter/"
SM = PREFIX.replace("{service}", "secretsmanager") + "secret:"

TOPOLOGY = """
name: secret-refs
resources:
  warehouse: {url: "postgresql://app:${ssm:/pistats/db_password}@db.internal:5432/x"}
spout: {type: kinesis, stream: clicks}
bolts: [{id: decode, type: json}]
sinks:
  - {id: rows, type: warehouse, resource: warehouse, table: t, columns: {a: a}}
  - id: hook
    type: http
    url: "https://hooks.example.com/${HOOK_PATH:-x}"
    headers: {Authorization: "Bearer ${secretsmanager:pistats/api#token}"}
# a reference in a comment grants nothing: ${ssm:/commented/out}
"""


def topology(tmp_path: Path) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    return path


def grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for st in statements:
        if "Resource" in st:
            res = st["Resource"]
            key = res.get("Fn::Sub") if isinstance(res, dict) else res
            out[str(key)] = set(st["Action"])
    return out


def test_the_function_role_reads_each_referenced_parameter_and_secret_and_no_more(
    tmp_path: Path,
):
    path = topology(tmp_path)
    template = sam_template(
        load(path, secrets=placeholder),
        path.read_text(),
        handler="consumer",
        code_uri="consumer.zip",
        options=TemplateOptions(),
    )
    [doc] = template["Resources"]["FunctionRole"]["Properties"]["Policies"]
    found = grants(doc["PolicyDocument"]["Statement"])
    assert found[SSM + "pistats/db_password"] == {"ssm:GetParameter"}
    assert found[SM + "pistats/api-??????"] == {"secretsmanager:GetSecretValue"}
    assert not [r for r in found if "commented" in r]
    assert not [a for acts in found.values() for a in acts if a.startswith("kms:")]
    # No parameter stands for a reference (the value never passes through the stack); a
    # variable still gets one.
    assert "HookPath" in template["Parameters"]
    assert not [p for p in template["Parameters"] if "Pistats" in p or "Ssm" in p]
    env = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert set(env) == {"HOOK_PATH"} | {k for k in env if k.startswith("SQUALL_")}
    out = tmp_path / "template.yaml"
    out.write_text(yaml.safe_dump(template))
    r = cfn_lint(out)
    assert r.returncode == 0, r.stdout + r.stderr
    translate(template)


def test_the_fleet_role_reads_them_and_its_environment_file_holds_none(tmp_path: Path):
    path = topology(tmp_path)
    out = tmp_path / "kcl"
    fleet.write_fleet(load(path, secrets=placeholder), path, out)
    role = yaml.safe_load((out / "instance-role.yaml").read_text())
    statements = role["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    found = grants(statements)
    assert found[SSM + "pistats/db_password"] == {"ssm:GetParameter"}
    assert found[SM + "pistats/api-??????"] == {"secretsmanager:GetSecretValue"}
    assert set(role["Parameters"]) == {"StreamName", "ApplicationName"}
    environment = (out / "environment").read_text()
    assert "ssm" not in environment and "secretsmanager" not in environment
    assert "# HOOK_PATH=x" in environment
    r = cfn_lint(out / "instance-role.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_package_keeps_the_ssm_and_secrets_manager_models(tmp_path: Path):
    services = aws_services(load(topology(tmp_path), secrets=placeholder))
    assert {"ssm", "secretsmanager"} <= services


@pytest.mark.parametrize(
    "ref, resource",
    [
        (SecretRef("ssm", "/a/b"), SSM + "a/b"),
        (SecretRef("ssm", "plain_name"), SSM + "plain_name"),
        (SecretRef("ssm", "/a/b:3"), SSM + "a/b"),  # a version: IAM names the parameter
        (
            SecretRef("ssm", "arn:aws:ssm:eu-west-1:123456789012:parameter/a/b:live"),
            "arn:aws:ssm:eu-west-1:123456789012:parameter/a/b",
        ),
        (SecretRef("secretsmanager", "db", "password"), SM + "db-??????"),
        (
            SecretRef("secretsmanager", "arn:aws:secretsmanager:eu-west-1:1:secret:db-AbCdEf"),
            "arn:aws:secretsmanager:eu-west-1:1:secret:db-AbCdEf",
        ),
    ],
)
def test_each_reference_is_granted_on_its_own_arn(ref, resource):
    [perm] = iam.reference_permissions([ref])
    assert perm.resource == resource


def test_a_package_load_reads_no_secret():
    """The placeholder is what the packager's load sees: letters and digits only (a URL's
    password, a header), never a call to AWS."""
    value = placeholder(SecretRef("ssm", "/pistats/db_password"))
    assert value.isalnum() and value.startswith("SQUALLSECRET")


def test_a_whole_url_kept_as_a_secret_packages_without_being_read(tmp_path: Path):
    """A database URL, a Redis URL and a webhook URL each stored whole as a secret (as the
    README advises for a password that would need URL-encoding): the package's load, which reads
    none, takes them — the stand-in of a resource URL is not checked (its scheme is in the
    secret), a webhook's is an https URL — and the template grants their reads."""
    path = tmp_path / "topology.yaml"
    path.write_text("""
name: whole-urls
resources:
  warehouse: {url: "${ssm:/pistats/warehouse_url}"}
  state: {url: "${secretsmanager:pistats/redis#url}"}
spout: {type: kinesis, stream: clicks}
bolts:
  - {id: decode, type: json}
  - {id: sub, type: subscription, store: state}
sinks:
  - {id: rows, type: warehouse, resource: warehouse, table: t, columns: {a: a}}
  - {id: hook, type: http, url: "${secretsmanager:pistats/slack#webhook_url}"}
""")
    topo = load(path, secrets=placeholder)
    assert topo.sinks[1].url.startswith("https://squall-placeholder.invalid/SQUALLSECRET")
    template = sam_template(
        topo, path.read_text(), handler="consumer", code_uri="c.zip", options=TemplateOptions()
    )
    [doc] = template["Resources"]["FunctionRole"]["Properties"]["Policies"]
    found = grants(doc["PolicyDocument"]["Statement"])
    assert found[SSM + "pistats/warehouse_url"] == {"ssm:GetParameter"}
    assert found[SM + "pistats/redis-??????"] == {"secretsmanager:GetSecretValue"}
    assert found[SM + "pistats/slack-??????"] == {"secretsmanager:GetSecretValue"}
    assert "SubnetIds" in template["Parameters"]  # the database may be in a VPC
