"""An AWS SAM template for a packaged topology: the function, its trigger, least-privilege permissions.

Written next to the zip by ``squall package --template template.yaml``; deploy with
``sam deploy --guided``. Every ``${VAR}`` the topology uses becomes a template parameter (with
the topology's ``:-default`` as its default) passed to the function's environment, so the same
YAML runs locally and in Lambda — except the variables Lambda sets itself (``AWS_REGION``, …):
no parameter, no environment entry, and ``${AWS::Region}`` where a resource names the region.

The function gets its own IAM role granting exactly what the code calls: its log group, the
trigger's reads on the consumed stream, queue or bucket prefix, and what each component declares in
``aws_permissions(config)`` (the kinesis sink's ``PutRecords`` on its stream…). Resource names
that come from a ``${VAR}`` are written as that parameter (``stream/${EventsStream}``), so a
deployment with another name is granted that name. The only ``*`` resource is Lambda's network
interface management in a VPC (``ec2:Describe*`` has no resource-level permissions), present
only when subnets are given.

Size (~610 lines): the function, its role, parameters, VPC and the producer's API are one
template built in one pass; the consumer's triggers live in ``squall.deploy.triggers``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from squall import iam
from squall.deploy import snapstart
from squall.errors import SquallError, TopologyError
from squall.iam import AwsPermission
from squall.topology.model import Topology
from squall.yaml_out import dump_yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MARKER = re.compile(r"SQUALLVAR_([A-Za-z_][A-Za-z0-9_]*?)_END")
#: Lambda's network interfaces in a VPC; EC2 has no resource-level permission for these.
VPC_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
#: The retention periods CloudWatch Logs accepts.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653)
#: Headers a browser SDK sends on a POST (the preflight must allow them).
CORS_HEADERS = ["content-type", "content-encoding", "x-api-key"]
AUTHORIZER_HANDLER = "squall.deploy.authorizer.handler"
SECRET_WORDS = ("PASS", "PWD", "SECRET", "TOKEN", "CREDENTIAL", "AUTH", "URL", "DSN", "KEY")
#: ``key: value`` in block or flow YAML: a variable in the value of a key named like a secret
#: (``password:``, ``Authorization:``, ``api_key:``) is one, whatever the variable's name.
_KEY_VALUE = re.compile(
    r"""([\w.-]+)["']?\s*:[ \t]*("[^"\n]*"|'[^'\n]*'|(?:\$\{[^}\n]*\}|[^,{}\[\]\n#])*)"""
)
#: A URL's user info: ``postgresql://app:${DB_PW}@db/x`` holds a password, whatever its name.
_USERINFO = re.compile(r"://([^\s/@'\"]*)@")


@dataclass(frozen=True)
class TemplateOptions:
    """Choices of the deployment that the topology does not say."""

    python: str = "3.11"
    arch: str = "x86_64"
    layer_uri: str | None = None
    on_failure: str | None = (
        None  # "sqs" | "sns": bounded retries, then the batch's metadata goes there
    )
    cors_origins: tuple[str, ...] = ()
    auth: str = "app-key"  # producer: "app-key" (a Lambda authorizer) or "none"
    throttle_rate: int = 100
    throttle_burst: int = 200
    stream: str | None = None  # consumer: default of StreamName when the spout names none
    batch_window: int | None = None  # consumer: MaximumBatchingWindowInSeconds (Kinesis: 1)
    s3_bucket: str | None = None  # S3 trigger: "create" the bucket here (None: the default),
    # or use an "existing" one
    s3_delivery: str = "direct"  # S3 trigger: "direct", through "sqs" or "eventbridge"
    snapstart: bool = False  # SnapStart on published versions, the trigger on the alias "live"
    provisioned: int | None = None  # provisioned concurrency of the alias "live"
    retrieval: str = "polling"  # Kinesis consumer: "polling" or "fanout" (a stream consumer)


def _references(text: str) -> list[tuple[str, str | None]]:
    """(name, default) of each variable the loader replaces: not one in a comment (a resource
    commented out made a parameter without default, which a deploy must be given), nor a
    literal `$${X}`. A fragment of a line that is no YAML of its own is read as text."""
    from squall.topology.yamlsource import variables_in

    try:
        return variables_in(text)
    except yaml.YAMLError:
        return [(m[1], m[2]) for m in _VAR.finditer(text.replace("$$", ""))]


def variables(text: str) -> list[str]:
    """Environment variables a topology file refers to, in order of appearance."""
    return list(dict.fromkeys(name for name, _ in _references(text)))


def variable_defaults(text: str) -> dict[str, str | None]:
    """Each variable's ``:-default`` (the first one written), or None when it has none."""
    out: dict[str, str | None] = {}
    for name, default in _references(text):
        if out.get(name) is None:
            out[name] = default
    return out


def secret_variables(text: str) -> set[str]:
    """Variables whose values are secrets: named like one (``DB_PASSWORD``, ``API_TOKEN``), under a
    key named like one, or inside a URL's user info. Their parameters are ``NoEcho``."""
    out = {v for v in variables(text) if any(word in v.upper() for word in SECRET_WORDS)}
    for m in _KEY_VALUE.finditer(text):
        if any(word in m.group(1).upper() for word in SECRET_WORDS):
            out.update(variables(m.group(2)))
    for m in _USERINFO.finditer(text):
        out.update(variables(m.group(1)))
    return out & set(variables(text))  # not one found on a comment's line


#: Variables Lambda sets in every function and refuses in a template's ``Environment`` (its
#: documentation's reserved keys): a function is created with none of them.
LAMBDA_RESERVED = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
#: Of those, the ones a template names by a pseudo parameter: the function's region is the
#: stack's.
PSEUDO_PARAMETERS = {"AWS_REGION": "AWS::Region", "AWS_DEFAULT_REGION": "AWS::Region"}


def param_name(var: str) -> str:
    return "".join(part.capitalize() for part in var.lower().split("_"))


def sub_name(var: str, pseudo: bool = True) -> str:
    """What ``${var}`` is in a template's ``Fn::Sub``: its parameter, or (``pseudo``: a Lambda
    function's template) the pseudo parameter Lambda's own value of it equals."""
    return PSEUDO_PARAMETERS[var] if pseudo and var in PSEUDO_PARAMETERS else param_name(var)


def _marker(var: str) -> str:
    # Letters, digits and underscores only: valid wherever a stream or table name is.
    return f"SQUALLVAR_{var}_END"


def parameterised(
    topology: Topology,
    text: str,
    env: dict[str, str] | None = None,
    keep: frozenset[str] = frozenset(),
) -> Topology:
    """The topology loaded with each ``${VAR}`` replaced by a marker where its field accepts one.

    ``resource_sub`` turns the markers back into ``${Param}`` references; a variable whose field
    refuses the marker (a number, an ARN) keeps its value at package time.
    """
    from squall.topology.loader import load_text
    from squall.topology.references import placeholder

    env = dict(os.environ if env is None else env)
    best = topology
    for var in variables(text):
        if var in keep:  # no parameter can stand for it: its value at package time
            continue
        trial = {**env, var: _marker(var)}
        try:
            best = load_text(
                text,
                file=topology.file,
                base_dir=topology.base_dir,
                env=trial,
                secrets=placeholder,  # the values are the function's to read, not the packager's
            )
        except TopologyError:
            continue
        env = trial
    return best


def resource_sub(resource: str, pseudo: bool = True) -> dict[str, str]:
    """An ``Fn::Sub`` of a declared resource, markers turned into ``${Param}`` (``sub_name``)."""
    return {"Fn::Sub": _MARKER.sub(lambda m: "${" + sub_name(m.group(1), pseudo) + "}", resource)}


def value_sub(value: str) -> str | dict[str, str]:
    """A value as written, or its ``Fn::Sub`` when a variable's marker is in it."""
    return resource_sub(value) if _MARKER.search(value) else value


def reference_permissions(text: str) -> list[AwsPermission]:
    """The reads of the topology's ``${ssm:…}`` and ``${secretsmanager:…}`` references (no
    template parameter stands for one: the function reads the value itself at init)."""
    from squall.topology.yamlsource import references_in

    try:
        return iam.reference_permissions(references_in(text))
    except yaml.YAMLError:
        return []


def check_no_placeholder(artifact: str, topology: Topology, text: str, what: str) -> None:
    """Refuse ``artifact`` (a template, a fleet file, a dashboard, as text) holding the stand-in of
    a secret reference: the packager reads none, so a name it writes (a stream the role is granted
    or the trigger reads, a queue, the function's name) would be the stand-in, and the deployed
    function denied or reading nothing. ``TopologyError`` at each such reference."""
    from squall.errors import Problem, TopologyError
    from squall.topology.references import PLACEHOLDER, placeholder
    from squall.topology.yamlsource import reference_marks

    if PLACEHOLDER not in artifact:
        return
    try:
        marks = reference_marks(text)
    except yaml.YAMLError:
        marks = {}
    # A stand-in is letters and digits: that of `${ssm:/a/stream}` starts that of
    # `${ssm:/a/streamname}`, so one written whole (no letter or digit after it) is looked for
    # first — else a header's reference was said to be written into the template too.
    written = [
        ref for ref in marks if re.search(re.escape(placeholder(ref)) + "(?![A-Za-z0-9])", artifact)
    ] or [ref for ref in marks if placeholder(ref) in artifact]
    problems = [
        Problem(
            topology.file,
            *marks[ref],
            "",
            f"{ref}: this value would be written into {what}, made without reading "
            "secret references (a stand-in takes their place; only the function or a shard "
            "process reads them, at its start): write the name itself, or a ${VAR}",
        )
        for ref in written
    ]
    raise TopologyError(
        problems or Problem(topology.file, 0, 0, "", f"a secret reference's stand-in is in {what}")
    )


def component_permissions(topology: Topology) -> list[AwsPermission]:
    """What the topology's bolts and sinks declare (the spout is not used in Lambda or under the KCL)."""
    from squall.topology import registry

    out: list[AwsPermission] = []
    for kind, configs in (("bolt", topology.bolts), ("sink", topology.sinks)):
        for cfg in configs:
            out.extend(registry.resolve(kind, cfg.type).aws_permissions(cfg))
    return out


def _statements(perms: list[AwsPermission], pseudo: bool = True) -> list[dict[str, Any]]:
    """One statement per resource, actions merged and sorted (stable output)."""
    by_resource: dict[str, set[str]] = {}
    for p in perms:
        by_resource.setdefault(p.resource, set()).update(p.actions)
    return [
        {"Effect": "Allow", "Action": sorted(actions), "Resource": resource_sub(resource, pseudo)}
        for resource, actions in by_resource.items()
    ]


def needs_network(topology: Topology, text: str) -> bool:
    """SQL or Redis resources other than a local SQLite file, or set from a variable: they may live in a VPC."""
    if any(r.scheme != "sqlite" for r in topology.resources.values()):
        return True
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and "${" in str(raw.get("resources") or "")


@dataclass
class _Builder:
    params: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def _role(
    statements: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return iam.service_role("lambda.amazonaws.com", statements, extra_policies=extra)


def _log_statement(log_group: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": {"Fn::GetAtt": [log_group, "Arn"]},
    }


#: A queue ARN the template builds from a name that is one whole variable's parameter.
_QUEUE_NAME_PARAM = re.compile(r":sqs:.*:\$\{([A-Za-z0-9]+)\}$")
#: An SQS queue's name (1-80 letters, digits, - and _; ``.fifo`` for a FIFO queue).
QUEUE_NAME_PATTERN = "[A-Za-z0-9_-]{1,80}(\\.fifo)?"


def _queue_name_parameters(b: _Builder, statements: list[dict[str, Any]]) -> None:
    """A parameter that is a whole queue's name in a granted (or triggering) queue's ARN takes
    a name only: given a queue's ARN or URL — which the `sqs` spout and sinks take at run time —
    the template built ``arn:…:sqs:REGION:ACCOUNT:arn:aws:sqs:…``: the event source refused at
    deployment, or a sink's grant on no queue (every start AccessDenied)."""
    for st in statements:
        sub = (
            st.get("Resource", {}).get("Fn::Sub") if isinstance(st.get("Resource"), dict) else None
        )
        m = _QUEUE_NAME_PARAM.search(sub) if isinstance(sub, str) else None
        param = b.params.get(m.group(1)) if m else None
        if param is not None and param.get("Type") == "String":
            param["AllowedPattern"] = QUEUE_NAME_PATTERN
            param["ConstraintDescription"] = (
                "a queue's name (the template grants the queue of that name in the stack's "
                "region and account), not its URL or ARN"
            )


def sam_template(
    topology: Topology,
    topology_text: str,
    *,
    handler: str,
    code_uri: str,
    python: str = "3.11",
    arch: str = "x86_64",
    options: TemplateOptions | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The template as a dict: one function, its trigger (consumer: Kinesis, SQS or S3, see
    ``squall.deploy.triggers``) or an HTTP API (producer)."""
    opts = options or TemplateOptions(python=python, arch=arch)
    b = _Builder()
    fn_env: dict[str, Any] = {}
    defaults = variable_defaults(topology_text)
    secrets = secret_variables(topology_text)
    for var in variables(topology_text):
        if var in LAMBDA_RESERVED:
            # Lambda sets it (the function's region, name, …) and refuses a function whose
            # template does: no parameter, no environment entry (cfn-lint E3663).
            continue
        name = param_name(var)
        secret = var in secrets
        param: dict[str, Any] = {
            "Type": "String",
            "Description": f"Value of ${{{var}}} in the topology",
        }
        if defaults[var] is not None:
            param["Default"] = defaults[var]
        if secret:
            param["NoEcho"] = True
        b.params[name] = param
        fn_env[var] = {"Ref": name}
    marked = parameterised(
        topology, topology_text, env, keep=LAMBDA_RESERVED - PSEUDO_PARAMETERS.keys()
    )
    statements = _statements(component_permissions(marked) + reference_permissions(topology_text))
    statements.insert(0, _log_statement("LogGroup"))
    b.params["LogRetentionDays"] = {
        "Type": "Number",
        "Default": 30,
        "Description": "Days the function's logs are kept",
        "AllowedValues": list(LOG_RETENTION_DAYS),
    }
    b.params["MemorySize"] = {
        "Type": "Number",
        "Default": 1024,
        "MinValue": 128,
        "MaxValue": 10240,
        "Description": "Function memory in MB (CPU grows with it)",
    }
    b.resources["LogGroup"] = {
        "Type": "AWS::Logs::LogGroup",
        "Properties": {"RetentionInDays": {"Ref": "LogRetentionDays"}},
    }
    props: dict[str, Any] = {
        "Description": f"squall topology {topology.name} ({handler})",
        "Runtime": f"python{opts.python}",
        "Handler": "squall_lambda.handler",
        "CodeUri": code_uri,
        "Architectures": [opts.arch],
        "MemorySize": {"Ref": "MemorySize"},
        "Timeout": 300 if handler == "consumer" else 29,
        "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
        "LoggingConfig": {"LogGroup": {"Ref": "LogGroup"}},
    }
    if fn_env:
        props["Environment"] = {"Variables": fn_env}
    problem = snapstart.add_to_function(props, b.params, b.outputs, opts)
    if problem is not None:
        raise SquallError(problem)
    if opts.layer_uri:
        b.resources["Dependencies"] = {
            "Type": "AWS::Serverless::LayerVersion",
            "Properties": {
                "Description": f"squall and the dependencies of {topology.name}",
                "ContentUri": opts.layer_uri,
                "CompatibleRuntimes": [f"python{opts.python}"],
                "CompatibleArchitectures": [opts.arch],
            },
        }
        props["Layers"] = [{"Ref": "Dependencies"}]
    if needs_network(topology, topology_text):
        _vpc(b, props, statements)
    if handler == "consumer":
        from squall.deploy.triggers import add_consumer_trigger

        add_consumer_trigger(b, topology, marked, props, statements, opts)
    else:
        consumer_only = (
            ("--on-failure", opts.on_failure),
            ("--batch-window", opts.batch_window is not None),
            ("--s3-bucket", opts.s3_bucket),
            ("--s3-delivery", opts.s3_delivery != "direct"),
            ("--retrieval", opts.retrieval != "polling"),
        )
        for flag, given in consumer_only:
            if given:
                raise SquallError(f"{flag} configures a consumer's trigger, not the producer")
        _producer(b, topology, props, opts, code_uri)
    _leave_time_beyond_the_margin(b, topology, props, handler)
    _queue_name_parameters(b, statements)
    b.resources["FunctionRole"] = _role(statements)
    b.resources["Function"] = {"Type": "AWS::Serverless::Function", "Properties": props}
    b.outputs["FunctionArn"] = {"Value": {"Fn::GetAtt": ["Function", "Arn"]}}
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": f"squall topology {topology.name}: Lambda {handler}",
        "Parameters": b.params,
    }
    if b.rules:  # checked by CloudFormation before anything is created
        template["Rules"] = b.rules
    if b.conditions:
        template["Conditions"] = b.conditions
    template["Resources"] = b.resources
    template["Outputs"] = b.outputs
    if (
        handler == "consumer"
    ):  # alarms and a dashboard following the topology graph (squall.observability)
        from squall.observability.dashboards import cloudwatch_resources

        invocation = _invocation(topology, opts)
        queues = [  # the queue the event source mapping reads: its messages' age is the lag
            e["Properties"]["Queue"] for e in props.get("Events", {}).values() if e["Type"] == "SQS"
        ]
        template["Resources"].update(
            cloudwatch_resources(
                topology,
                invocation=invocation,
                queue=queues[0] if invocation == "queue" and len(queues) == 1 else None,
            )
        )
    check_no_placeholder(json.dumps(template), topology, topology_text, "the template")
    return template


def _invocation(topology: Topology, opts: TemplateOptions) -> str:
    """How the consumer is invoked, for its alarms (``squall.observability.dashboards``)."""
    from squall.component import TriggerSource
    from squall.deploy.triggers import declared_trigger

    trigger = declared_trigger(topology)
    if trigger is None or trigger.source is TriggerSource.KINESIS:
        return "stream"
    if trigger.source is TriggerSource.S3 and opts.s3_delivery != "sqs":
        return "async"
    return "queue"


def _leave_time_beyond_the_margin(
    b: _Builder, topology: Topology, props: dict[str, Any], handler: str
) -> None:
    """The function's timeout must be over ``settings.lambda_deadline_margin``: else the time left
    less the margin is never positive — no retry is made, the ``http`` and ``push`` sinks send
    nothing, and every invocation fails the same way. A fixed timeout (the producer's 29 s, a
    Kinesis consumer's 300 s) is checked; the ``FunctionTimeout`` parameter (SQS, S3 triggers)
    gets a least value over the margin, its default raised to it if below."""
    margin = topology.settings.lambda_deadline_margin
    least = math.floor(margin) + 1  # whole seconds over the margin
    timeout = props["Timeout"]
    if isinstance(timeout, dict):
        param = b.params[timeout["Ref"]]
        if least > param["MaxValue"]:
            raise SquallError(
                f"settings.lambda_deadline_margin ({margin:g} s) leaves no time in a function "
                f"timeout of at most {param['MaxValue']} s: lower the margin"
            )
        param["MinValue"] = max(param["MinValue"], least)
        param["Default"] = max(param["Default"], least)
    elif least > timeout:
        raise SquallError(
            f"settings.lambda_deadline_margin ({margin:g} s) leaves no time in the {handler} "
            f"function's timeout of {timeout} s: no retry would ever be made and the http and "
            "push sinks would send nothing; lower the margin"
        )


def _vpc(b: _Builder, props: dict[str, Any], statements: list[dict[str, Any]]) -> None:
    b.params["SubnetIds"] = {
        "Type": "CommaDelimitedList",
        "Default": "",
        "Description": "Private subnets to reach RDS/ElastiCache (empty: no VPC)",
    }
    b.params["SecurityGroupIds"] = {
        "Type": "CommaDelimitedList",
        "Default": "",
        "Description": "Security groups of the function in the VPC",
    }
    b.conditions["InVpc"] = {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "SubnetIds"}]}, ""]}]
    }
    props["VpcConfig"] = {
        "Fn::If": [
            "InVpc",
            {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    statements.append(
        {
            "Fn::If": [
                "InVpc",
                {"Effect": "Allow", "Action": list(VPC_ACTIONS), "Resource": "*"},
                {"Ref": "AWS::NoValue"},
            ]
        }
    )


def _producer(
    b: _Builder, topology: Topology, props: dict[str, Any], opts: TemplateOptions, code_uri: str
) -> None:
    b.params["ThrottleRate"] = {
        "Type": "Number",
        "Default": opts.throttle_rate,
        "MinValue": 1,
        "Description": "Steady requests per second across the API (then 429)",
    }
    b.params["ThrottleBurst"] = {
        "Type": "Number",
        "Default": opts.throttle_burst,
        "MinValue": 1,
        "Description": "Requests allowed in a burst above the rate",
    }
    api: dict[str, Any] = {
        # A literal list: SAM writes the CORS settings into the API's OpenAPI body at transform time,
        # where a list parameter would arrive as one comma-joined string.
        "CorsConfiguration": {
            "AllowOrigins": list(opts.cors_origins or ("*",)),
            "AllowMethods": ["POST"],
            "AllowHeaders": CORS_HEADERS,
            "ExposeHeaders": ["retry-after"],
            "MaxAge": 600,
        },
        "DefaultRouteSettings": {
            "ThrottlingRateLimit": {"Ref": "ThrottleRate"},
            "ThrottlingBurstLimit": {"Ref": "ThrottleBurst"},
        },
    }
    if opts.auth == "app-key":
        b.params["AppKeys"] = {
            "Type": "String",
            "NoEcho": True,
            "Description": "Comma-separated app keys the SDK sends in x-api-key",
        }
        b.resources["AuthorizerLogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"RetentionInDays": {"Ref": "LogRetentionDays"}},
        }
        b.resources["AuthorizerRole"] = _role([_log_statement("AuthorizerLogGroup")])
        auth_props: dict[str, Any] = {
            "Description": f"squall app-key authorizer for {topology.name}",
            "Runtime": props["Runtime"],
            "Handler": AUTHORIZER_HANDLER,
            "CodeUri": code_uri,
            "Architectures": props["Architectures"],
            "MemorySize": 128,
            "Timeout": 5,
            "Role": {"Fn::GetAtt": ["AuthorizerRole", "Arn"]},
            "LoggingConfig": {"LogGroup": {"Ref": "AuthorizerLogGroup"}},
            "Environment": {"Variables": {"SQUALL_APP_KEYS": {"Ref": "AppKeys"}}},
        }
        if "Layers" in props:
            auth_props["Layers"] = props["Layers"]
        b.resources["Authorizer"] = {"Type": "AWS::Serverless::Function", "Properties": auth_props}
        api["Auth"] = {
            "DefaultAuthorizer": "AppKey",
            "Authorizers": {
                "AppKey": {
                    "FunctionArn": {"Fn::GetAtt": ["Authorizer", "Arn"]},
                    "AuthorizerPayloadFormatVersion": "2.0",
                    "EnableSimpleResponses": True,
                    "EnableFunctionDefaultPermissions": True,
                    "Identity": {"Headers": ["x-api-key"], "ReauthorizeEvery": 300},
                }
            },
        }
    elif opts.auth != "none":
        raise SquallError("--auth must be app-key or none")
    b.resources["HttpApi"] = {"Type": "AWS::Serverless::HttpApi", "Properties": api}
    props["Events"] = {
        "Events": {
            "Type": "HttpApi",
            "Properties": {"ApiId": {"Ref": "HttpApi"}, "Path": "/events", "Method": "POST"},
        }
    }
    b.outputs["EventsUrl"] = {
        "Value": {
            "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/events"
        }
    }


def write_template(path: Path, template: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Generated by squall package; deploy with: sam deploy --guided\n"
        + dump_yaml(template, sort_keys=False, width=100)
    )
