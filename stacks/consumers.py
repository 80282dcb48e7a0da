"""The consumers stack: one Lambda per configured consumer, reading the bus's stream."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from config.functions import ConsumerError, consumer_environment, consumer_name, dead_letter_name
from config.model import BusConfig, ConsumerConfig
from stacks.building_blocks import (
    Alarms,
    BusFunction,
    DeadLetterQueue,
    acknowledge_kms_grant,
    acknowledge_stream_invoked,
)
from stacks.packaging import dependencies_layer

__all__ = ["Consumer", "ConsumerError", "ConsumersStack"]


class Consumer(Construct):
    """A consumer function with its dead-letter queue and its event source mapping:
    ReportBatchItemFailures, bisect on error, bounded retries and record age, failed
    batches to the queue."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        bus_name: str,
        consumer: ConsumerConfig,
        stream: kinesis.IStream,
        key: kms.IKey,
        layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, id_)
        name = consumer_name(bus_name, consumer)
        self.dead_letters = DeadLetterQueue(self, "DeadLetters", queue_name=dead_letter_name(name), key=key)
        environment = consumer_environment(bus_name, consumer, dlq_url=self.dead_letters.queue.queue_url)
        bus_function = BusFunction(
            self,
            "Function",
            function_name=name,
            folder=consumer.code.removeprefix("functions/"),
            layer=layer,
            memory_mb=consumer.memory_mb,
            timeout_seconds=consumer.timeout_seconds,
            environment=environment,
        )
        self.function = bus_function.function
        self.dead_letters.queue.grant_send_messages(self.function)
        acknowledge_kms_grant(bus_function.role)
        acknowledge_stream_invoked(self.function)
        self.function.add_event_source(
            event_sources.KinesisEventSource(
                stream,
                starting_position=lambda_.StartingPosition[consumer.starting_position],
                batch_size=consumer.batch_size,
                max_batching_window=Duration.seconds(consumer.batching_window_seconds),
                parallelization_factor=consumer.parallelization_factor,
                retry_attempts=consumer.max_retries,
                max_record_age=Duration.seconds(consumer.max_record_age_seconds),
                bisect_batch_on_error=True,
                report_batch_item_failures=True,
                on_failure=event_sources.SqsDlq(self.dead_letters.queue),
            )
        )


class ConsumersStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        bus: BusConfig,
        stream: kinesis.IStream,
        key: kms.IKey,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        layer = dependencies_layer(self, "Dependencies")
        self.alarms = Alarms(self, "Alarms", topic_arn=bus.alarms.topic_arn)
        self.consumers: dict[str, Consumer] = {}
        for config in bus.consumers:
            consumer = Consumer(
                self,
                f"Consumer-{config.name}",
                bus_name=bus.name,
                consumer=config,
                stream=stream,
                key=key,
                layer=layer,
            )
            self.consumers[config.name] = consumer
            self.alarms.stream_function(
                config.name,
                consumer.function,
                errors=bus.alarms.function_errors,
                iterator_age_ms=bus.alarms.iterator_age_ms,
            )
            self.alarms.queue_depth(
                f"{config.name}DeadLetterDepth", consumer.dead_letters.queue, messages=bus.alarms.dlq_messages
            )
