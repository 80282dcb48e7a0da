"""The event source mapping dmsbus puts between a stream and a function: discovery creates
it for the glue on each table's stream, local mode for the consumers on the bus's stream
(in AWS the consumers stack declares the same settings through CDK)."""

from __future__ import annotations

from typing import Any, Protocol


class StreamMappingSettings(Protocol):
    @property
    def batch_size(self) -> int: ...

    @property
    def batching_window_seconds(self) -> int: ...

    @property
    def parallelization_factor(self) -> int: ...

    @property
    def max_retries(self) -> int: ...

    @property
    def max_record_age_seconds(self) -> int: ...


def mapping_request(
    settings: StreamMappingSettings,
    *,
    function_name: str,
    stream_arn: str,
    starting_position: str,
    on_failure: str | None,
    bisect_batch_on_error: bool = True,
    report_batch_item_failures: bool = True,
) -> dict[str, Any]:
    """CreateEventSourceMapping's arguments: the settings, bisect on error, partial batch
    failures reported, failed batches to ``on_failure`` (the failure bucket's ARN) when given."""
    request: dict[str, Any] = {
        "FunctionName": function_name,
        "EventSourceArn": stream_arn,
        "StartingPosition": starting_position,
        "BatchSize": settings.batch_size,
        "MaximumBatchingWindowInSeconds": settings.batching_window_seconds,
        "ParallelizationFactor": settings.parallelization_factor,
        "MaximumRetryAttempts": settings.max_retries,
        "MaximumRecordAgeInSeconds": settings.max_record_age_seconds,
        "BisectBatchOnFunctionError": bisect_batch_on_error,
        "FunctionResponseTypes": ["ReportBatchItemFailures"] if report_batch_item_failures else [],
    }
    if on_failure:
        request["DestinationConfig"] = {"OnFailure": {"Destination": on_failure}}
    return request
