"""The DMS task's lifecycle as a custom resource (functions/task_lifecycle says why).

The Provider framework calls ``on_event`` with CloudFormation's request, then
``is_complete`` every ``query_interval`` until the task is where the config wants it:
stopping a task that applies cached changes can take minutes, so the wait runs in the
framework's state machine, up to ``total_timeout``, not in one Lambda invocation.

The mappings and settings travel as an S3 object (a file asset, which ``cdk deploy``
uploads to the bootstrap bucket under a key made of its content's hash), and the resource's
properties carry only its bucket, key and SHA-256: with every table listed, TableMappings
grow by about 500 bytes a table, which an update request would carry twice through
CloudFormation's asynchronous Lambda invocation (services-cloudformation; API_Invoke: at
most 1 MB) and the Provider framework's state machine (a state's input is at most 262,144
bytes: API_StateEnteredEventDetails), and the template once (at most 1 MB from S3:
cloudformation-limits). The lifecycle functions may read that one object.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import CfnResource, CustomResource, Duration, Stack
from aws_cdk import aws_dms as dms
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import custom_resources as cr
from constructs import Construct, IDependable

from config.functions import TASK_LIFECYCLE_SUFFIXES
from dmsbus import variables
from stacks.building_blocks import BusFunction
from stacks.nag import acknowledge
from task_lifecycle.core import TaskConfigObject, encode_task_config, resource_properties

FOLDER = "task_lifecycle"
#: Where the task configuration objects are written before CDK stages them as assets: one
#: file per content (named by its SHA-256), so concurrent synths write the same bytes.
STAGING = Path(tempfile.gettempdir()) / "dmsbus-task-config"
#: How often the task is looked at, and how long a deploy may wait for it: less than the
#: hour CloudFormation waits for a custom resource, so the waiter has always ended (and
#: reported) before CloudFormation gives up and rolls back.
QUERY_INTERVAL = Duration.seconds(30)
#: A lifecycle step may wait for the source's admin function (120 s at most, twice for
#: the first start's checks): longer than that, so a slow check fails with its own words.
LIFECYCLE_TIMEOUT_SECONDS = 300
TOTAL_TIMEOUT = Duration.minutes(55)
#: What each lifecycle function does to the task, and only to it: on_event reads it and
#: marks it as its request's; is_complete changes it.
READ_AND_MARK = ["dms:ListTagsForResource", "dms:AddTagsToResource"]
TASK_ACTIONS = {
    "on_event": READ_AND_MARK,
    "is_complete": [
        *READ_AND_MARK,
        "dms:StartReplicationTask",
        "dms:StopReplicationTask",
        "dms:ModifyReplicationTask",
        "dms:ReloadTables",
    ],
}


class TaskLifecycle(Construct):
    """Starts, changes (stop -> modify -> resume -> reload) and finally stops one task.

    ``table_mappings`` and ``task_settings``: the JSON documents DMS takes; they go to S3
    as ``config`` (an asset), never into the template."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function_prefix: str,
        task: dms.CfnReplicationTask,
        layer: lambda_.ILayerVersion,
        table_mappings: str,
        task_settings: str,
        start: bool,
    ) -> None:
        super().__init__(scope, id_)
        task_arn = task.ref  # Ref of AWS::DMS::ReplicationTask is its ARN
        body = encode_task_config(json.loads(table_mappings), json.loads(task_settings))
        sha256 = hashlib.sha256(body).hexdigest()
        self.config = s3_assets.Asset(self, "TaskConfig", path=str(_write_config(body, sha256)))
        config_object = TaskConfigObject(self.config.s3_bucket_name, self.config.s3_object_key, sha256)
        self.functions = [
            BusFunction(
                self,
                name,
                function_name=f"{function_prefix}-{suffix}",
                folder=FOLDER,
                entry=entry,
                layer=layer,
                memory_mb=256,
                timeout_seconds=LIFECYCLE_TIMEOUT_SECONDS,
                environment={},
                unscoped_actions="dms:DescribeReplicationTasks and X-Ray's trace actions",
            )
            for name, suffix, entry in zip(
                ("OnEvent", "IsComplete"), TASK_LIFECYCLE_SUFFIXES, ("on_event", "is_complete"), strict=True
            )
        ]
        for function, entry in zip(self.functions, ("on_event", "is_complete"), strict=True):
            function.function.add_to_role_policy(
                iam.PolicyStatement(actions=TASK_ACTIONS[entry], resources=[task_arn])
            )
            # DescribeReplicationTasks takes no resource (it filters by ARN).
            function.function.add_to_role_policy(
                iam.PolicyStatement(actions=["dms:DescribeReplicationTasks"], resources=["*"])
            )
            # This template's object only (not the bucket, not other assets).
            function.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[self.config.bucket.arn_for_objects(self.config.s3_object_key)],
                )
            )
            acknowledge(
                function.function,
                "Serverless-LambdaDLQ",
                "Invoked synchronously by the custom resource provider, which reports failures to CloudFormation.",
            )
        on_event, is_complete = (function.function for function in self.functions)
        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=on_event,
            is_complete_handler=is_complete,
            query_interval=QUERY_INTERVAL,
            total_timeout=TOTAL_TIMEOUT,
        )
        _acknowledge_framework(self.provider, [on_event, is_complete])
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.provider.service_token,
            resource_type="Custom::DmsTaskLifecycle",
            properties=resource_properties(task_arn=task_arn, config=config_object, start=start),
        )
        #: What the last deploy left the task as (and tables to reload by hand with start: false).
        self.summary = self.resource.get_att_string("Summary")

    def use_source_admin(
        self,
        function: lambda_.IFunction,
        *,
        engine: str,
        database: str,
        network: Sequence[IDependable] = (),
    ) -> None:
        """The source's admin function: the lifecycle has it check the source before the
        first start and find and drop DMS's replication slot. The resource waits for the
        function (created before it, deleted after it)."""
        on_event, is_complete = (bus_function.function for bus_function in self.functions)
        for lifecycle_function in (on_event, is_complete):
            lifecycle_function.add_environment(variables.SOURCE_ADMIN_FUNCTION, function.function_name)
            lifecycle_function.add_environment(variables.SOURCE_ENGINE, engine)
            lifecycle_function.add_environment(variables.SOURCE_DATABASE, database)
        # The unqualified function only (grant_invoke would add every version, ``<arn>:*``).
        is_complete.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function.function_arn])
        )
        self.resource.node.add_dependency(function)
        # The function's way to the source and to Secrets Manager stays up while the
        # resource's delete drops DMS's slot (and is there before its first check).
        for dependable in network:
            self.resource.node.add_dependency(dependable)


def _write_config(body: bytes, sha256: str) -> Path:
    """The task configuration object as a file for the asset (written whole, then renamed)."""
    STAGING.mkdir(parents=True, exist_ok=True)
    path = STAGING / f"{sha256}.json"
    if path.is_file() and path.read_bytes() == body:
        return path
    handle, temporary = tempfile.mkstemp(dir=STAGING, suffix=".part")
    with os.fdopen(handle, "wb") as file:
        file.write(body)
    os.replace(temporary, path)
    return path


def _acknowledge_framework(provider: cr.Provider, functions: list[lambda_.IFunction]) -> None:
    """The Provider framework's own functions and state machine, as CDK builds them."""
    reasons = {
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
            "The CDK custom resource framework's functions use Lambda's basic execution policy."
        ),
        "AwsSolutions-SF1": "The framework's waiter state machine only calls isComplete again; the functions log each step.",
        "AwsSolutions-SF2": "The framework's waiter state machine only calls isComplete again; X-Ray adds nothing there.",
        "Serverless-LambdaDLQ": "The framework's functions are called by CloudFormation and report failures to it.",
        "Serverless-LambdaDefaultMemorySize": "The framework's functions are CDK's own, sized by CDK.",
        "Serverless-LambdaTracing": "The framework's functions are CDK's own; the lifecycle functions they call are traced.",
        "Serverless-StepFunctionStateMachineXray": "The framework's waiter state machine only calls isComplete again.",
    }
    for rule, reason in reasons.items():
        acknowledge(provider, rule, reason)
    # The framework may invoke any version of the functions it calls (`<arn>:*`).
    stack = Stack.of(provider)
    framework = [provider.node.find_child(name) for name in ("framework-isComplete", "framework-onTimeout")]
    for function in [*functions, *framework]:
        resource = function.node.default_child
        assert isinstance(resource, CfnResource)
        acknowledge(
            provider,
            f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(resource)}.Arn>:*]",
            "The CDK custom resource framework invokes this function in any of its versions.",
        )
