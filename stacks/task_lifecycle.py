"""The DMS task's lifecycle as a custom resource (functions/task_lifecycle says why).

The Provider framework calls ``on_event`` with CloudFormation's request, then
``is_complete`` every ``query_interval`` until the task is where the config wants it:
stopping a task that applies cached changes can take minutes, so the wait runs in the
framework's state machine, up to ``total_timeout``, not in one Lambda invocation.
"""

from __future__ import annotations

from aws_cdk import CfnResource, CustomResource, Duration, Stack
from aws_cdk import aws_dms as dms
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.building_blocks import BusFunction
from stacks.nag import acknowledge

FOLDER = "task_lifecycle"
#: How often the task is looked at, and how long a deploy may wait for it: less than the
#: hour CloudFormation waits for a custom resource, so the waiter has always ended (and
#: reported) before CloudFormation gives up and rolls back.
QUERY_INTERVAL = Duration.seconds(30)
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
    """Starts, changes (stop -> modify -> resume -> reload) and finally stops one task."""

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
        self.functions = [
            BusFunction(
                self,
                name,
                function_name=f"{function_prefix}-task-{suffix}",
                folder=FOLDER,
                entry=entry,
                layer=layer,
                memory_mb=256,
                timeout_seconds=60,
                environment={},
                unscoped_actions="dms:DescribeReplicationTasks and X-Ray's trace actions",
            )
            for name, suffix, entry in (
                ("OnEvent", "lifecycle", "on_event"),
                ("IsComplete", "lifecycle-wait", "is_complete"),
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
            properties={
                "TaskArn": task_arn,
                "TableMappings": table_mappings,
                "TaskSettings": task_settings,
                "Start": str(start).lower(),
            },
        )
        #: What the last deploy left the task as (and tables to reload by hand with start: false).
        self.summary = self.resource.get_att_string("Summary")


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
