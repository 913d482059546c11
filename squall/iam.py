"""What AWS a component calls: actions on resources, declared by the component, granted by the deploy templates.

A component class that calls AWS declares it with a classmethod
``aws_permissions(config) -> list[AwsPermission]``; ``squall package`` turns the topology's
declarations into the function's IAM policy, so the role grants exactly what the code calls.
Resources are ARNs in ``Fn::Sub`` syntax: ``${AWS::Partition}``, ``${AWS::Region}`` and
``${AWS::AccountId}`` are filled in by CloudFormation, so a template deploys to any account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_KINESIS_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:kinesis:")
_SQS_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:sqs:")
#: A queue's AWS URL: ``https://sqs.<region>.amazonaws.com/<account>/<name>`` (``.com.cn`` in
#: China), the legacy ``<region>.queue.amazonaws.com`` and ``queue.amazonaws.com`` (us-east-1's),
#: and an interface VPC endpoint's ``vpce-<id>.sqs.<region>.vpce.amazonaws.com``.
_SQS_URL = re.compile(
    r"^https?://(?:sqs\.(?P<region>[a-z0-9-]+)|(?P<legacy>[a-z0-9-]+)\.queue|(?P<east>queue)"
    r"|vpce-[a-z0-9-]+\.sqs\.(?P<vpce>[a-z0-9-]+)\.vpce)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<account>[^/]+)/(?P<name>[^/]+)/?$"
)


def sqs_url_parts(queue: str) -> tuple[str, str, str] | None:
    """``(region, account, name)`` of a queue's AWS URL, else None (a name, an ARN, a local
    stand-in's URL, which names no region)."""
    m = _SQS_URL.match(queue)
    if m is None:
        return None
    region = m["region"] or m["legacy"] or m["vpce"] or "us-east-1"  # queue.amazonaws.com
    return region, m["account"], m["name"]


@dataclass(frozen=True)
class AwsPermission:
    """``actions`` allowed on ``resource`` (an ARN, ``Fn::Sub`` placeholders allowed); ``why`` names the call."""

    actions: tuple[str, ...]
    resource: str
    why: str = ""


def kinesis_stream_arn(stream: str, region: str | None = None) -> str:
    """The ARN of a stream named in a topology (a name or an ARN)."""
    if _KINESIS_ARN.match(stream):
        return stream
    return f"arn:${{AWS::Partition}}:kinesis:{region or '${AWS::Region}'}:${{AWS::AccountId}}:stream/{stream}"


def dynamodb_table_arn(table: str, region: str | None = None) -> str:
    return f"arn:${{AWS::Partition}}:dynamodb:{region or '${AWS::Region}'}:${{AWS::AccountId}}:table/{table}"


def sqs_queue_arn(queue: str, region: str | None = None) -> str:
    """The ARN of a queue named in a topology: a name, an ARN, or a URL (an AWS URL gives its
    region and account; another endpoint's URL, a local stand-in's, only its name)."""
    if _SQS_ARN.match(queue):
        return queue
    url = sqs_url_parts(queue)
    if url:
        return f"arn:${{AWS::Partition}}:sqs:{url[0]}:{url[1]}:{url[2]}"
    name = queue.rstrip("/").rsplit("/", 1)[-1]
    return f"arn:${{AWS::Partition}}:sqs:{region or '${AWS::Region}'}:${{AWS::AccountId}}:{name}"


def s3_bucket_arn(bucket: str) -> str:
    return f"arn:${{AWS::Partition}}:s3:::{bucket}"


def s3_objects_arn(bucket: str, prefix: str = "") -> str:
    """The objects of a bucket whose keys start with ``prefix``."""
    return f"{s3_bucket_arn(bucket)}/{prefix}*"


def firehose_stream_arn(name: str, region: str | None = None) -> str:
    return f"arn:${{AWS::Partition}}:firehose:{region or '${AWS::Region}'}:${{AWS::AccountId}}:deliverystream/{name}"


def ssm_parameter_arn(name: str) -> str:
    """The ARN of an SSM parameter named in a reference (a name, ``/a/b`` or ``b``, with or without
    a ``:version`` or ``:label`` selector; or an ARN). IAM names the parameter, not the version."""
    if name.startswith("arn:"):
        head, sep, rest = name.partition(":parameter/")
        return f"{head}{sep}{rest.split(':', 1)[0]}" if sep else name
    path = name.split(":", 1)[0].lstrip("/")
    # AWS's public parameters (/aws/service/…: AMI ids, regions) are in no account: no account
    # in their ARN.
    account = "" if path.startswith("aws/service/") else "${AWS::AccountId}"
    return f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:{account}:parameter/{path}"


#: The parameters through which Parameter Store reads a Secrets Manager secret.
SECRETS_MANAGER_REFERENCE = "/aws/reference/secretsmanager/"


#: The end of a complete secret ARN: a dash and six random characters (AWS advises against a
#: secret name that ends so, since a partial ARN of it reads as complete).
_SECRET_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


def secret_arn(name: str) -> str:
    """The ARN of a Secrets Manager secret named in a reference. A name gets ``-??????``: Secrets
    Manager ends every secret's ARN in a dash and six random characters, and AWS's documentation
    grants a secret by name with that wildcard (``*`` would also grant ``name-other``)."""
    if name.startswith("arn:"):  # a partial ARN (no suffix), which GetSecretValue takes: add it
        return name if _SECRET_SUFFIX.search(name.partition(":secret:")[2]) else f"{name}-??????"
    return (
        f"arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:"
        f"secret:{name}-??????"
    )


def reference_permissions(refs: list[Any]) -> list[AwsPermission]:
    """What reading a topology's secret references (``SecretRef``) takes: ``ssm:GetParameter``
    on each parameter, ``secretsmanager:GetSecretValue`` on each secret. No ``kms:Decrypt``: the
    AWS managed keys (``aws/ssm``, ``aws/secretsmanager``) need none in the caller's policy; a
    customer managed key's is the deployer's to grant (docs/deploy.md)."""
    out: dict[str, AwsPermission] = {}
    for ref in refs:
        if ref.service == "ssm":
            perm = AwsPermission(("ssm:GetParameter",), ssm_parameter_arn(ref.name), str(ref))
            if ref.name.startswith(SECRETS_MANAGER_REFERENCE):  # the secret read through SSM:
                secret = ref.name.removeprefix(SECRETS_MANAGER_REFERENCE).split(":", 1)[0]
                through = AwsPermission(
                    ("secretsmanager:GetSecretValue",), secret_arn(secret), str(ref)
                )  # AWS asks both rights of the caller
                out.setdefault(through.resource, through)
        else:
            perm = AwsPermission(("secretsmanager:GetSecretValue",), secret_arn(ref.name), str(ref))
        out.setdefault(perm.resource, perm)
    return list(out.values())


def sqs_send(queue: str, region: str | None, why: str) -> AwsPermission:
    """Sending to a queue (SendMessageBatch is authorized as sqs:SendMessage); a queue given by
    name is looked up with GetQueueUrl first."""
    by_url = queue.startswith(("http://", "https://"))
    actions = ("sqs:SendMessage",) if by_url else ("sqs:GetQueueUrl", "sqs:SendMessage")
    return AwsPermission(actions, sqs_queue_arn(queue, region), why)


def service_role(
    service: str,
    statements: list[dict[str, Any]],
    *,
    policy_name: str = "squall",
    extra_policies: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``AWS::IAM::Role`` resource that ``service`` (``lambda.amazonaws.com``,
    ``ec2.amazonaws.com``) may assume, with one inline policy of ``statements``."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": service},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": policy_name,
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                },
                *(extra_policies or []),
            ],
        },
    }
